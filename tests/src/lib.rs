//! Helpers shared by the end-to-end tests in `tests/tests/`.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `wangban` binary built for this test run (cargo builds it for integration tests of the
/// package that declares it; from this package we build it on demand).
pub fn wangban_binary() -> PathBuf {
    let root = workspace_root();
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "wangban"])
        .current_dir(&root)
        .status()
        .expect("cargo build --bin wangban runs");
    assert!(status.success(), "building the wangban binary failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug").join("wangban")
}
