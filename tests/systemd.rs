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

#[test]
fn the_env_example_documents_every_setting() {
    let example = std::fs::read_to_string("systemd/streamsink.env.example").unwrap();
    let main = std::fs::read_to_string("src/main.rs").unwrap();
    let settings: Vec<&str> =
        main.split("env = \"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert!(settings.len() >= 11, "{settings:?}");
    for name in settings {
        assert!(example.contains(&format!("{name}=")), "{name} missing from the env example");
    }
}
