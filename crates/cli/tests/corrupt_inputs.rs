//! Corrupted checkpoints: each gives one line on stderr naming the file (and
//! the tensor where there is one), exit code 2, and no panic.

use std::path::{Path, PathBuf};

mod common;

use common::run;

/// A safetensors file from raw header JSON and a data section.
fn raw_file(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `shears inspect path` and checks the failure is clean; returns the
/// error line.
fn expect_clean_failure(path: &Path, must_name: &[&str]) -> String {
    let out = run(&["inspect", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for name in must_name {
        assert!(lines[0].contains(name), "'{name}' missing from: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout");
    lines[0].to_string()
}

const GOOD_ENTRY: &str = r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short.safetensors");
    std::fs::write(&p, [1u8, 2, 3]).unwrap();
    expect_clean_failure(&p, &["short.safetensors", "too short"]);
}

#[test]
fn truncated_data_section() {
    let dir = tempfile::tempdir().unwrap();
    let p = raw_file(
        dir.path(),
        "cut.safetensors",
        &format!("{{{GOOD_ENTRY}}}"),
        &[0u8; 5],
    );
    let line = expect_clean_failure(&p, &["cut.safetensors", "'a'"]);
    assert!(line.contains("outside"), "{line}");
}

#[test]
fn header_length_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long.safetensors");
    let mut bytes = 1_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&p, bytes).unwrap();
    expect_clean_failure(&p, &["long.safetensors", "header length 1000"]);
}

#[test]
fn header_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = raw_file(dir.path(), "bad.safetensors", "{not json", &[]);
    expect_clean_failure(&p, &["bad.safetensors", "JSON"]);
}

#[test]
fn overlapping_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let p = raw_file(dir.path(), "overlap.safetensors", header, &[0u8; 12]);
    expect_clean_failure(&p, &["overlap.safetensors", "'b'", "overlap", "'a'"]);
}

#[test]
fn out_of_range_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let p = raw_file(dir.path(), "range.safetensors", header, &[0u8; 8]);
    expect_clean_failure(&p, &["range.safetensors", "'w'", "outside"]);
}

#[test]
fn unknown_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}"#;
    let p = raw_file(dir.path(), "dtype.safetensors", header, &[0u8; 8]);
    expect_clean_failure(&p, &["dtype.safetensors", "'w'", "unknown dtype 'F12'"]);
}

#[test]
fn dtype_times_shape_differs_from_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#;
    let p = raw_file(dir.path(), "size.safetensors", header, &[0u8; 8]);
    expect_clean_failure(&p, &["size.safetensors", "'w'", "needs 6 bytes"]);
}

#[test]
fn gap_in_data_section() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let p = raw_file(dir.path(), "gap.safetensors", header, &[0u8; 8]);
    expect_clean_failure(&p, &["gap.safetensors", "'w'", "unused bytes"]);
}

#[test]
fn index_naming_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    raw_file(
        dir.path(),
        "model-00001-of-00002.safetensors",
        &format!("{{{GOOD_ENTRY}}}"),
        &[0u8; 8],
    );
    let index = r#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    expect_clean_failure(
        dir.path(),
        &[
            "model.safetensors.index.json",
            "model-00002-of-00002.safetensors",
            "does not exist",
        ],
    );
}

#[test]
fn index_naming_a_tensor_its_shard_lacks() {
    let dir = tempfile::tempdir().unwrap();
    raw_file(
        dir.path(),
        "model-00001-of-00001.safetensors",
        &format!("{{{GOOD_ENTRY}}}"),
        &[0u8; 8],
    );
    let index = r#"{"weight_map":{"a":"model-00001-of-00001.safetensors","ghost":"model-00001-of-00001.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    expect_clean_failure(dir.path(), &["model.safetensors.index.json", "'ghost'"]);
}

#[test]
fn missing_path() {
    let dir = tempfile::tempdir().unwrap();
    expect_clean_failure(&dir.path().join("nope"), &["nope", "No such file"]);
}

#[test]
fn empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    expect_clean_failure(dir.path(), &["no .safetensors files"]);
}
