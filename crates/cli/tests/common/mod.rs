//! Running the `shears` binary from the CLI's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `shears` binary cargo built for these tests.
pub fn shears_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shears"))
}

/// Runs `shears args…` and returns its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(shears_bin())
        .args(args)
        .env("SHEARS_LOG", "warn")
        .env("XDG_RUNTIME_DIR", xdg_runtime_dir())
        .output()
        .expect("shears runs")
}

/// A private runtime folder, so Mesa's window-system probes stay quiet
/// on stderr (where tests count error lines) whatever the environment.
pub fn xdg_runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    let d = std::env::temp_dir().join(format!("shears-test-xdg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
    }
    d
}

/// Root of the repository (for `assets/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
