//! Running the `shears` binary from the CLI's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod distill;
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

// Helpers of the hostile-input tests (hostile_inputs.rs, hostile_outputs.rs).

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, one `error:` line naming every `names`, no panic.
pub fn refused(o: &Output, names: &[&str]) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {e}");
    for n in names {
        assert!(errors[0].contains(n), "'{n}' missing from: {e}");
    }
    errors[0].to_string()
}

pub fn ok(o: &Output) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(0), "stderr: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
}

/// A copy of golden forward model `family` (vocab 512) in `dir/family`
/// with tiny-llama's byte-level tokenizer (256 tokens; the rest padded).
pub fn golden_with_tokenizer(dir: &Path, family: &str) -> PathBuf {
    let src = repo_root().join("tests/golden/forward").join(family);
    let dst = dir.join(family);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    std::fs::copy(
        repo_root().join("assets/tiny-llama/tokenizer.json"),
        dst.join("tokenizer.json"),
    )
    .unwrap();
    dst
}

/// A copy of assets/tiny-llama in `dir/name`.
pub fn tiny_llama(dir: &Path, name: &str) -> PathBuf {
    let src = repo_root().join("assets/tiny-llama");
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// A safetensors file from a raw header and data.
pub fn raw_file(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A one-layer f32 model: `l.weight` [rows, cols] with `values`, beside a
/// config.json.
pub fn one_layer(dir: &Path, name: &str, rows: usize, cols: usize, values: &[f32]) -> PathBuf {
    let m = dir.join(name);
    std::fs::create_dir_all(&m).unwrap();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = format!(
        r#"{{"l.weight":{{"dtype":"F32","shape":[{rows},{cols}],"data_offsets":[0,{}]}}}}"#,
        data.len()
    );
    raw_file(&m.join("model.safetensors"), &header, &data);
    std::fs::write(m.join("config.json"), r#"{"model_type":"llama"}"#).unwrap();
    m
}

pub fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect()
}

pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Nothing but `keep` in `dir`: no output, no hidden partial folder.
pub fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "leftovers in {}", dir.display());
}
