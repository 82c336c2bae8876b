//! The operator scripts keep working: a small chaos run completes and reports its figures.

use std::process::Command;

#[test]
fn a_small_chaos_run_completes_and_reports_nothing_lost() {
    let out = Command::new("bash")
        .arg("scripts/chaos.sh")
        .arg("3000")
        .env("CHAOS_BIN", env!("CARGO_BIN_EXE_streamsink"))
        .output()
        .expect("run scripts/chaos.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chaos.sh failed:\n{stdout}\n{stderr}");
    let summary = stdout.lines().find(|l| l.starts_with("chaos: published=")).expect("a summary line");
    for figure in
        ["published=3000 ", "rows=3000 ", "duplicates=0 ", "lost=0 ", "dead_lettered=0 ", "pending=0 "]
    {
        assert!(summary.contains(figure), "{summary}");
    }
}
