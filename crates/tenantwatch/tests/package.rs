//! The Debian package, built by cargo-deb from the metadata scripts/build-deb.sh uses, but
//! around this test's own binary (`--no-build`): a release build inside `cargo test` would
//! cost minutes, and what is checked here is the packaging, not the optimiser. The package
//! must hold exactly the files docs/install.md lists, with the right modes, the unit and
//! config as in the repository, and sound maintainer scripts; then dpkg installs,
//! reinstalls, removes and purges it in a scratch root (`dpkg --root`, the scripts run with
//! $DPKG_ROOT) and the user, permissions, conffile, unit state and purge are checked there.
//!
//! cargo-deb comes from `scripts/build-deb.sh --tool-only` (target/tools) and shellcheck from
//! Debian; scripts/test.sh installs both and sets TW_REQUIRE_DEB_TOOLS=1, so there a missing
//! tool, or not being root for `dpkg --root`, fails instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Says loudly why a check is skipped, or fails where the tools are required.
fn skip(why: &str) {
    assert!(
        std::env::var_os("TW_REQUIRE_DEB_TOOLS").is_none(),
        "required (TW_REQUIRE_DEB_TOOLS is set): {why}"
    );
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

fn run(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).unwrap()
}

/// The package, built once for all tests of this file; `None` when cargo-deb is missing.
fn package() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(build).as_deref()
}

fn build() -> Option<PathBuf> {
    let cargo_deb = repo().join("target/tools/bin/cargo-deb");
    if !cargo_deb.is_file() {
        skip("cargo-deb not found in target/tools: run scripts/build-deb.sh --tool-only");
        return None;
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tenantwatch-package");
    if work.exists() {
        std::fs::remove_dir_all(&work).unwrap();
    }
    // cargo-deb takes the binary from <target>/release; a target dir of its own keeps the
    // real target/release untouched.
    let release = work.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_tenantwatch"),
        release.join("tenantwatch"),
    )
    .unwrap();
    let out = work.join("out");
    let started = std::time::SystemTime::now();
    run(Command::new(&cargo_deb)
        .args(["-p", "tenantwatch", "--no-build", "--fast", "--strip", "-o"])
        .arg(format!("{}/", out.display()))
        .env("CARGO_TARGET_DIR", work.join("target"))
        .current_dir(repo()));
    eprintln!(
        "package built in {:?}",
        started.elapsed().unwrap_or_default()
    );
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .expect("cargo-deb wrote no .deb");
    Some(deb)
}

/// The first table of docs/install.md's "Where the files land": path → description.
fn documented_files() -> BTreeMap<String, String> {
    let doc = read("docs/install.md");
    let section = doc
        .split("### Where the files land")
        .nth(1)
        .expect("docs/install.md has no 'Where the files land' section");
    let mut files = BTreeMap::new();
    let mut in_table = false;
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with('|') {
            in_table = true;
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if let Some(path) = cells[0]
                .strip_prefix('`')
                .and_then(|cell| cell.strip_suffix('`'))
            {
                files.insert(path.to_owned(), cells[1].to_owned());
            }
        } else if in_table {
            break;
        }
    }
    assert!(files.len() >= 5, "too few files in the table: {files:?}");
    files
}

/// Non-directory entries of the package: path → (mode string, owner/group).
fn package_files(deb: &Path) -> BTreeMap<String, (String, String)> {
    stdout(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter(|line| !line.starts_with('d'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields[5].trim_start_matches('.').to_owned();
            (path, (fields[0].to_owned(), fields[1].to_owned()))
        })
        .collect()
}

fn extract(deb: &Path, what: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg(what).arg(deb).arg(dir.path()));
    dir
}

#[test]
fn the_package_holds_exactly_the_documented_files_with_their_modes() {
    let Some(deb) = package() else { return };
    let documented = documented_files();
    let packaged = package_files(deb);
    let undocumented: Vec<&String> = packaged
        .keys()
        .filter(|path| !documented.contains_key(*path))
        .collect();
    let missing: Vec<&String> = documented
        .keys()
        .filter(|path| !packaged.contains_key(*path))
        .collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "packaged but not in docs/install.md: {undocumented:?}\nin docs/install.md but not packaged: {missing:?}"
    );
    for (path, (mode, owner)) in &packaged {
        assert_eq!(owner, "0/0", "{path} is not owned by root");
        let want = match path.as_str() {
            "/usr/bin/tenantwatch" => "-rwxr-xr-x",
            // The postinst gives it to group tenantwatch; until then root only.
            "/etc/tenantwatch/tenantwatch.toml" => "-rw-r-----",
            _ => "-rw-r--r--",
        };
        assert_eq!(mode, want, "{path}");
    }
}

#[test]
fn the_control_data_and_the_shipped_files_are_the_repositorys() {
    let Some(deb) = package() else { return };
    let field = |name: &str| {
        stdout(Command::new("dpkg-deb").args(["-f"]).arg(deb).arg(name))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), "tenantwatch");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Section"), "net");
    let depends = field("Depends");
    assert!(
        depends.contains("systemd | systemd-standalone-sysusers") && depends.contains("libc6"),
        "Depends: {depends}"
    );

    let control = extract(deb, "-e");
    assert_eq!(
        std::fs::read_to_string(control.path().join("conffiles")).unwrap(),
        "/etc/tenantwatch/tenantwatch.toml\n"
    );

    let tree = extract(deb, "-x");
    let shipped =
        |path: &str| std::fs::read(tree.path().join(path.trim_start_matches('/'))).unwrap();
    for (installed, source) in [
        (
            "/usr/lib/systemd/system/tenantwatch.service",
            "deploy/systemd/tenantwatch.service",
        ),
        (
            "/etc/tenantwatch/tenantwatch.toml",
            "config/tenantwatch.package.toml",
        ),
        (
            "/usr/lib/sysusers.d/tenantwatch.conf",
            "deploy/debian/tenantwatch.sysusers",
        ),
        (
            "/usr/share/doc/tenantwatch/examples/tenantwatch.example.toml",
            "config/tenantwatch.example.toml",
        ),
        (
            "/usr/share/tenantwatch/grafana/tenantwatch-fleet.json",
            "deploy/grafana/tenantwatch-fleet.json",
        ),
        (
            "/usr/share/tenantwatch/prometheus/tenantwatch.rules.yml",
            "deploy/prometheus/tenantwatch.rules.yml",
        ),
    ] {
        assert!(
            shipped(installed) == read(source).into_bytes(),
            "{installed} differs from {source}"
        );
    }

    // The packaged program runs, and the packaged config is valid and watches nobody, so
    // nothing probes a real tenant before the administrator has configured one.
    let binary = tree.path().join("usr/bin/tenantwatch");
    assert_eq!(
        stdout(Command::new(&binary).arg("--version")).trim(),
        format!("tenantwatch {}", env!("CARGO_PKG_VERSION"))
    );
    let config = tree.path().join("etc/tenantwatch/tenantwatch.toml");
    let checked = stdout(Command::new(&binary).arg("check-config").arg(&config));
    assert!(checked.contains("valid (0 tenants, 0 jobs)"), "{checked}");
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !config_text
            .lines()
            .any(|line| line.starts_with("[[tenants]]") || line.starts_with("[[receivers]]")),
        "the packaged config must not watch or alert anyone"
    );

    // The unit's Documentation= is in the package.
    let unit = String::from_utf8(shipped("/usr/lib/systemd/system/tenantwatch.service")).unwrap();
    let doc = unit
        .lines()
        .find_map(|line| line.strip_prefix("Documentation=file://"))
        .expect("the unit names its documentation");
    assert!(
        tree.path().join(doc.trim_start_matches('/')).is_file(),
        "{doc}"
    );

    // Grafana's provisioning points at the directory holding the dashboard.
    let provisioning = String::from_utf8(shipped(
        "/usr/share/tenantwatch/grafana/provisioning/dashboards/tenantwatch.yaml",
    ))
    .unwrap();
    let path = provisioning
        .lines()
        .find_map(|line| line.trim().strip_prefix("path:"))
        .expect("no path in the provisioning file")
        .trim();
    assert!(
        tree.path()
            .join(path.trim_start_matches('/'))
            .join("tenantwatch-fleet.json")
            .is_file(),
        "provisioning path {path} holds no dashboard"
    );
}

#[test]
fn the_maintainer_scripts_are_sound_and_start_nothing() {
    let Some(deb) = package() else { return };
    let control = extract(deb, "-e");
    let shellcheck = Command::new("shellcheck")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !shellcheck {
        skip("shellcheck not found (apt-get install shellcheck); only sh -n is run");
    }
    let mut scripts = Vec::new();
    for name in ["preinst", "postinst", "prerm", "postrm"] {
        let path = control.path().join(name);
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable");
        assert!(
            text.starts_with("#!/bin/sh\n"),
            "{name}: not a /bin/sh script"
        );
        assert!(
            text.lines().any(|line| line.trim() == "set -e"),
            "{name}: no set -e"
        );
        assert!(
            !text.contains("#DEBHELPER#"),
            "{name}: token left unreplaced"
        );
        run(Command::new("sh").arg("-n").arg(&path));
        if shellcheck {
            run(Command::new("shellcheck").args(["-s", "sh"]).arg(&path));
        }
        // Installing never starts or enables the service; an upgrade only restarts it if
        // it was running, and `enable` only restores what the administrator had enabled.
        for forbidden in [
            "deb-systemd-invoke start",
            "deb-systemd-invoke restart",
            "systemctl start",
            "systemctl enable",
        ] {
            assert!(!text.contains(forbidden), "{name} runs {forbidden}");
        }
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.contains("deb-systemd-helper enable") {
                assert!(
                    lines[index.saturating_sub(3)..index]
                        .iter()
                        .any(|before| before.contains("was-enabled")),
                    "{name}: enables the unit unconditionally"
                );
            }
        }
        scripts.push(name);
    }
    assert!(
        scripts.contains(&"postinst") && scripts.contains(&"postrm"),
        "{scripts:?}"
    );
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers"), "no user is created");
}

// ---------------------------------------------------------------------------------------
// dpkg in a scratch root.

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// dpkg acting on `root`: maintainer scripts run on this host with DPKG_ROOT=root
/// (`--force-script-chrootless`), which is why every path in them carries $DPKG_ROOT.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("dpkg");
    command
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("dpkg.log").display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confdef",
            "--force-confold",
        ])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            format!(
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    run(&mut command)
}

fn status(root: &Path) -> String {
    let output = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f=${Status}", "tenantwatch"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The uid and gid of `name` in the scratch root's passwd and group files.
fn account(root: &Path, name: &str) -> (Vec<String>, Option<u32>) {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let users: Vec<String> = passwd
        .lines()
        .filter(|line| line.starts_with(&format!("{name}:")))
        .map(str::to_owned)
        .collect();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let gid = group
        .lines()
        .find(|line| line.starts_with(&format!("{name}:")))
        .and_then(|line| line.split(':').nth(2))
        .and_then(|gid| gid.parse().ok());
    (users, gid)
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[test]
fn dpkg_installs_reinstalls_removes_and_purges_it_in_a_scratch_root() {
    let Some(deb) = package() else { return };
    if !is_root() {
        skip("dpkg --root needs root; run the tests as root to install into a scratch root");
        return;
    }
    let deb = deb.to_str().unwrap();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let host_state =
        Path::new("/var/lib/systemd/deb-systemd-helper-enabled/tenantwatch.service.dsh-also");
    let host_state_before = exists(host_state);

    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let config = root.join("etc/tenantwatch/tenantwatch.toml");
    let credentials = root.join("etc/tenantwatch/credentials");
    let state = root.join("var/lib/private/tenantwatch");
    let state_link = root.join("var/lib/tenantwatch");
    let mask = root.join("etc/systemd/system/tenantwatch.service");

    // Install: every documented file in place, the user made, the config readable by it
    // alone, the credentials directory root's, the unit neither enabled nor started.
    dpkg(root, &["-i", deb]);
    assert_eq!(status(root), "install ok installed");
    for path in documented_files().keys() {
        assert!(
            root.join(path.trim_start_matches('/')).is_file(),
            "{path} not installed"
        );
    }
    let (users, gid) = account(root, "tenantwatch");
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users[0].ends_with(":/usr/sbin/nologin"), "{users:?}");
    let gid = gid.expect("no tenantwatch group");
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, gid, 0o640),
        "config ownership"
    );
    let meta = std::fs::metadata(&credentials).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (0, 0o700),
        "credentials directory"
    );
    assert!(
        !exists(&root.join("etc/systemd/system/multi-user.target.wants/tenantwatch.service")),
        "the unit was enabled on install"
    );
    assert!(
        root.join("var/lib/systemd/deb-systemd-helper-enabled/tenantwatch.service.dsh-also")
            .is_file(),
        "deb-systemd-helper did not record the unit in the scratch root"
    );

    // Reinstall over an edited config: the edit stays, nothing is duplicated.
    let mut edited = std::fs::read_to_string(&config).unwrap();
    edited.push_str("# edited by the administrator\n");
    std::fs::write(&config, &edited).unwrap();
    dpkg(root, &["-i", deb]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(account(root, "tenantwatch").0.len(), 1);
    assert_eq!(std::fs::metadata(&config).unwrap().gid(), gid);

    // What systemd makes for StateDirectory= with DynamicUser=yes.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("tenantwatch.db"), "history").unwrap();
    std::os::unix::fs::symlink("private/tenantwatch", &state_link).unwrap();

    // Remove: the program goes, the config and the history stay, the unit is masked.
    dpkg(root, &["-r", "tenantwatch"]);
    assert_eq!(status(root), "deinstall ok config-files");
    assert!(!exists(&root.join("usr/bin/tenantwatch")));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(state.join("tenantwatch.db").is_file());
    assert_eq!(std::fs::read_link(&mask).unwrap(), Path::new("/dev/null"));

    // Purge: config, history and mask go; a secret the administrator put there stays.
    std::fs::write(credentials.join("noc-webhook"), "hmac key").unwrap();
    let purge = dpkg(root, &["-P", "tenantwatch"]);
    let said = String::from_utf8_lossy(&purge.stderr);
    assert!(said.contains("kept /etc/tenantwatch/credentials"), "{said}");
    assert_eq!(status(root), "");
    assert!(!exists(&config));
    assert!(
        !exists(&state) && !exists(&state_link),
        "state left after purge"
    );
    assert!(!exists(&mask), "unit still masked after purge");
    assert!(credentials.join("noc-webhook").is_file());
    assert_eq!(account(root, "tenantwatch").0.len(), 1, "the user is kept");

    // Without secrets left behind, purge leaves no /etc/tenantwatch at all.
    std::fs::remove_file(credentials.join("noc-webhook")).unwrap();
    dpkg(root, &["-i", deb]);
    dpkg(root, &["-P", "tenantwatch"]);
    assert!(
        !exists(&root.join("etc/tenantwatch")),
        "/etc/tenantwatch left after purge"
    );

    // Nothing of this reached the host.
    assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), host_passwd);
    assert_eq!(exists(host_state), host_state_before);
}
