//! Issue 35 (1): the README's install section works. `cargo install
//! --locked --path engine` puts a working `cerebelum` into a prefix; the
//! Python SDK's `pip install ./guest-sdk/python` is tested in a fresh
//! virtual environment by `guest-sdk/python/tests/test_install.py`.

use cerebelum_harness as common;

use common::root;
use std::process::Command;

/// The commands the README gives are the ones tested here and in
/// `test_install.py`.
#[test]
fn the_readme_says_how_to_install() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let install = readme
        .split("## Install")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has an Install section");
    for command in [
        "cargo install --locked --path engine",
        "pip install ./guest-sdk/python",
        "pip install './guest-sdk/python[build]'",
    ] {
        assert!(
            install.contains(command),
            "the README's Install section lacks `{command}`"
        );
    }
}

/// `cargo install --locked --path engine` into a temporary prefix, with
/// two changes that keep it to seconds: `--debug`, in the target
/// directory of this test, where the dependencies are compiled already (a
/// release build takes ~15 minutes on 2 cores), and `--offline` (the
/// suite's build fetched every crate). The install's build is the one
/// `cargo build -p cerebelum-engine` makes (the demo's), so it leaves
/// `target/debug/cerebelum` as the demo does.
#[test]
fn cargo_install_puts_a_working_cerebelum_into_a_prefix() {
    // This test is TARGET/PROFILE/deps/install-HASH.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("the target directory");
    let prefix = tempfile::tempdir().unwrap();
    // As from a shell: not with the variables cargo sets for this test
    // (build scripts would see other values and build their crates again).
    let mut cargo = Command::new(env!("CARGO"));
    cargo.env_clear();
    for (key, value) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
        ]
        .contains(&&*key_text)
        {
            cargo.env(key, value);
        }
    }
    let installed = cargo
        .current_dir(root())
        .args(["install", "--locked", "--debug", "--offline", "--quiet"])
        .args(["--path", "engine", "--root"])
        .arg(prefix.path())
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("running cargo install");
    assert!(
        installed.status.success(),
        "cargo install failed:\n{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let cerebelum = prefix.path().join("bin").join("cerebelum");
    let version = Command::new(&cerebelum)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", cerebelum.display()));
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("cerebelum {}\n", env!("CARGO_PKG_VERSION"))
    );
    // The installed binary works on its own: a command on a fresh database.
    let db = prefix.path().join("cerebelum.db");
    let tenants = Command::new(&cerebelum)
        .args(["admin", "tenant", "list", "--db"])
        .arg(&db)
        .env_remove("CEREBELUM_SERVER")
        .output()
        .unwrap();
    assert!(
        tenants.status.success(),
        "{}",
        String::from_utf8_lossy(&tenants.stderr)
    );
    assert!(String::from_utf8_lossy(&tenants.stdout).starts_with("default"));
}
