//! The shipped systemd unit, checked by systemd itself: `systemd-analyze verify` accepts it
//! and `systemd-analyze security` rates its exposure 2.0 or lower (docs/operations.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

/// The unit with its binary path pointed at this build, in a scratch directory.
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/tenantwatch.service"
    ))
    .unwrap();
    let path = dir.join("tenantwatch.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/tenantwatch", env!("CARGO_BIN_EXE_tenantwatch")),
    )
    .unwrap();
    path
}

fn systemd_analyze(args: &[&str], unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|err| {
            panic!("systemd-analyze is needed to check the unit (Debian package systemd): {err}")
        })
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());

    let verify = systemd_analyze(&["verify"], &unit);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let security = systemd_analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for tenantwatch.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 2.0, "exposure {exposure} above 2.0:\n{report}");
}
