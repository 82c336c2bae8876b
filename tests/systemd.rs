//! The shipped systemd unit is one systemd accepts, sandboxed as `systemd-analyze security`
//! rates it, and the env example holds every setting.

use std::process::Command;

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let version = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing, so the unit cannot be verified: install it \
         (Debian: apt-get install systemd; scripts/services.sh does) ({version:?})"
    );
    let unit = std::fs::read_to_string("systemd/streamsink.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/streamsink run"));
    // Verify the unit as shipped, but pointing at the binary just built and an env file
    // that exists, since verify checks both.
    let dir = std::env::temp_dir().join(format!("ss-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("streamsink.env");
    std::fs::copy("systemd/streamsink.env.example", &env_file).unwrap();
    let unit = unit
        .replace("/usr/bin/streamsink", env!("CARGO_BIN_EXE_streamsink"))
        .replace("/etc/streamsink/streamsink.env", env_file.to_str().unwrap());
    let path = dir.join("streamsink.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("streamsink.service"), "systemd-analyze complains: {stderr}");
}

#[test]
fn the_unit_is_sandboxed_to_an_exposure_of_at_most_1_5() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", "systemd/streamsink.service"])
        .output()
        .expect("systemd-analyze is installed (scripts/services.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"));
    assert!(score <= 1.5, "{line}\n{text}");
}

/// One setting as the binary's `--help` states it.
#[derive(Debug, PartialEq)]
struct Setting {
    env: String,
    flag: String,
    default: Option<String>,
}

/// Every setting a subcommand reads, as its `--help` lists them (`--flag <V>  doc [env: NAME=]
/// [default: X]`, one line each): the settings as the binary defines them, not as a document
/// claims.
fn settings_of_every_command() -> Vec<Setting> {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamsink")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The commands under `path` as its help lists them, and theirs in turn (`dlq list`, ...).
    fn commands(help: &dyn Fn(&[&str]) -> String, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let text = help(&args);
        let subcommands: Vec<String> = text
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_string)
            .collect();
        for c in subcommands {
            let sub: Vec<String> = path.iter().cloned().chain([c]).collect();
            out.push(sub.clone());
            commands(help, sub, out);
        }
    }
    let mut all = Vec::new();
    commands(&help, Vec::new(), &mut all);
    let names: Vec<String> = all.iter().map(|c| c.join(" ")).collect();
    for expected in [
        "run",
        "migrate",
        "check",
        "status",
        "pending",
        "dlq list",
        "dlq show",
        "dlq replay",
        "dlq purge",
        "publish",
        "trim",
    ] {
        assert!(names.iter().any(|n| n == expected), "no command {expected} in {names:?}");
    }
    let between = |line: &str, open: &str| {
        line.split(open).nth(1).and_then(|r| r.split(']').next()).map(str::to_string)
    };
    let mut settings: Vec<Setting> = Vec::new();
    for command in &all {
        let args: Vec<&str> = command.iter().map(String::as_str).chain(["--help"]).collect();
        for line in help(&args).lines().filter(|l| l.contains("[env: ")) {
            let env = between(line, "[env: ").unwrap().trim_end_matches('=').to_string();
            let flag = line.split_whitespace().next().unwrap().to_string();
            let setting = Setting { env, flag, default: between(line, "[default: ") };
            if !settings.contains(&setting) {
                assert!(
                    !settings.iter().any(|s| s.env == setting.env),
                    "{} differs between commands",
                    setting.env
                );
                settings.push(setting);
            }
        }
    }
    settings
}

#[test]
fn the_env_example_and_the_readme_document_every_setting_as_the_binary_defines_it() {
    let settings = settings_of_every_command();
    assert!(settings.len() >= 15, "{settings:?}");
    let example = std::fs::read_to_string("systemd/streamsink.env.example").unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    for s in &settings {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", s.env)))
            .unwrap_or_else(|| panic!("{} missing from the README's settings table", s.env));
        assert!(
            row.contains(&format!("| `{}` |", s.flag)),
            "README row of {} lacks {}: {row}",
            s.env,
            s.flag
        );
        let line = example
            .lines()
            .find(|l| l.trim_start_matches('#').starts_with(&format!("{}=", s.env)))
            .unwrap_or_else(|| panic!("{} missing from the env example", s.env));
        if let Some(default) = &s.default {
            assert!(
                row.contains(&format!("| `{default}` |")),
                "README's default of {} is not {default}: {row}",
                s.env
            );
            if !default.contains('<') {
                assert_eq!(line, format!("#{}={default}", s.env), "the env example's default of {}", s.env);
            }
        }
    }
    // And nothing documented that the binary does not read.
    for line in readme.lines().filter(|l| l.starts_with("| `") && l.contains("| `--")) {
        let name = line.trim_start_matches("| `").split('`').next().unwrap();
        assert!(settings.iter().any(|s| s.env == name), "README documents {name}, which no command reads");
    }
}
