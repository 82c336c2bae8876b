//! The shipped systemd unit is one systemd accepts, and the env example holds every setting.

use std::process::Command;

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    }
    let unit = std::fs::read_to_string("systemd/streamsink.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/streamsink run"));
    // Verify the unit as shipped, but pointing at the binary just built and an env file
    // that exists, since verify checks both.
    let dir = std::env::temp_dir().join(format!("ss-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("streamsink.env");
    std::fs::copy("systemd/streamsink.env.example", &env_file).unwrap();
    let unit = unit
        .replace("/usr/local/bin/streamsink", env!("CARGO_BIN_EXE_streamsink"))
        .replace("/etc/streamsink/streamsink.env", env_file.to_str().unwrap());
    let path = dir.join("streamsink.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("streamsink.service"), "systemd-analyze complains: {stderr}");
}

/// Every environment variable a subcommand reads, as its `--help` lists them
/// (`[env: NAME=…]`): the settings as the binary defines them, not as a document claims.
fn settings_of_every_command() -> Vec<String> {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamsink")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&["--help"]);
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"run") && commands.contains(&"migrate"), "{top}");
    let mut settings: Vec<String> = Vec::new();
    for command in commands {
        for rest in help(&[command, "--help"]).split("[env: ").skip(1) {
            let name = rest.split(['=', ']']).next().unwrap().to_string();
            if !settings.contains(&name) {
                settings.push(name);
            }
        }
    }
    settings
}

#[test]
fn the_env_example_and_the_readme_document_every_setting() {
    let settings = settings_of_every_command();
    assert!(settings.len() >= 15, "{settings:?}");
    let example = std::fs::read_to_string("systemd/streamsink.env.example").unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    for name in &settings {
        assert!(example.contains(&format!("{name}=")), "{name} missing from the env example");
        assert!(readme.contains(&format!("| `{name}` |")), "{name} missing from the README's settings table");
    }
    // And nothing documented that the binary does not read.
    for line in readme.lines().filter(|l| l.starts_with("| `") && l.contains("| `--")) {
        let name = line.trim_start_matches("| `").split('`').next().unwrap();
        assert!(settings.iter().any(|s| s == name), "README documents {name}, which no command reads");
    }
}
