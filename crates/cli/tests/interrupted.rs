//! Runs interrupted mid-way: SIGINT, SIGTERM and SIGHUP leave no temporary
//! folder, no output and the input unchanged; after SIGKILL (which no
//! process can catch) the next run of the same output removes the
//! abandoned folder.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{repo_root, run, shears_bin};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generated checkpoint large enough that compressing it with --verify
/// (the plain CPU reference beside the fast path) takes seconds, in 4
/// shards so the partial folder gets its first file long before the end.
fn model(dir: &Path) -> PathBuf {
    let m = dir.join("m");
    let o = run(&[
        "generate",
        s(&m),
        "--hidden",
        "512",
        "--intermediate",
        "2048",
        "--layers",
        "4",
        "--vocab",
        "2048",
        "--shard-size",
        "6MB",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    m
}

fn compress(m: &Path, out: &Path) -> Child {
    Command::new(shears_bin())
        .args([
            "compress",
            s(m),
            "-o",
            s(out),
            "--recipe",
            s(&repo_root().join("assets/compress-2of4-w4a16.toml")),
            "--verify",
            "--validate",
        ])
        .env("SHEARS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shears starts")
}

/// The partial folders of `out`'s parent.
fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".shears-partial-"))
        })
        .collect()
}

/// Waits until the run has written into its partial folder (so the signal
/// lands mid-run), and fails if the run ended first.
fn wait_for_partial_data(child: &mut Child, dir: &Path) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be interrupted");
        }
        for p in partials(dir) {
            let written: u64 = std::fs::read_dir(&p)
                .map(|l| {
                    l.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            if written > 0 {
                return p;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no partial output appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, name: &str) {
    // The shell's own `kill`, so the test needs no procps.
    let st = Command::new("sh")
        .args(["-c", &format!("kill -s {name} {}", child.id())])
        .status()
        .unwrap();
    assert!(st.success(), "kill -s {name}");
}

fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sigint_sigterm_and_sighup_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let before = contents(&m);
    for (name, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let out = dir.path().join("out");
        let mut child = compress(&m, &out);
        wait_for_partial_data(&mut child, dir.path());
        signal(&child, name);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "SIG{name}: exit status {status}");
        assert_eq!(
            partials(dir.path()),
            Vec::<PathBuf>::new(),
            "SIG{name}: temp folder left"
        );
        assert!(!out.exists(), "SIG{name}: an output appeared");
        assert_eq!(contents(&m), before, "SIG{name}: the input changed");
    }
}

#[test]
fn after_sigkill_the_next_run_removes_the_abandoned_folder() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let out = dir.path().join("out");
    let mut child = compress(&m, &out);
    let left = wait_for_partial_data(&mut child, dir.path());
    signal(&child, "KILL");
    child.wait().unwrap();
    assert!(left.exists(), "SIGKILL cannot be caught: its folder stays");
    let o = run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w8a16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        partials(dir.path()),
        Vec::<PathBuf>::new(),
        "stale folder kept"
    );
    assert!(out.join("config.json").is_file());
}
