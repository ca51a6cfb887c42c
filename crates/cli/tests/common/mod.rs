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
        .output()
        .expect("shears runs")
}

/// Root of the repository (for `assets/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
