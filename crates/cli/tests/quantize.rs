//! `shears quantize` against the files compressed-tensors 0.20.0 wrote
//! (tests/golden): same tensor names, dtypes, shapes and bytes, and the same
//! quantization_config, for every scheme and dtype.

mod common;

use common::{repo_root, run};
use shears_core::Checkpoint;

fn golden(rel: &str) -> std::path::PathBuf {
    repo_root().join("tests/golden").join(rel)
}

#[test]
fn compressed_tensors_rounding_reproduces_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["bf16", "f32"] {
        for scheme in ["w8a16", "w4a16", "w4a16-asym", "w8a8"] {
            let out = dir.path().join(format!("{dtype}-{scheme}"));
            let res = run(&[
                "quantize",
                golden(&format!("{dtype}/dense")).to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--scheme",
                scheme,
                "--rounding",
                "compressed-tensors",
            ]);
            assert_eq!(
                res.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
            let ours = Checkpoint::open(&out).unwrap();
            let theirs = Checkpoint::open(golden(&format!("{dtype}/{scheme}"))).unwrap();
            let mut names: Vec<_> = ours.tensors.iter().map(|t| &t.name).collect();
            let mut want: Vec<_> = theirs.tensors.iter().map(|t| &t.name).collect();
            names.sort();
            want.sort();
            assert_eq!(names, want, "{dtype}/{scheme}");
            for t in &theirs.tensors {
                let o = ours.get(&t.name).unwrap();
                assert_eq!(
                    (o.dtype, &o.shape),
                    (t.dtype, &t.shape),
                    "{dtype}/{scheme} {}",
                    t.name
                );
                assert!(
                    ours.view(o).bytes() == theirs.view(t).bytes(),
                    "{dtype}/{scheme} {} bytes",
                    t.name
                );
            }
            let config = |p: std::path::PathBuf| -> serde_json::Value {
                serde_json::from_slice(&std::fs::read(p.join("config.json")).unwrap()).unwrap()
            };
            let (a, b) = (
                config(out.clone()),
                config(golden(&format!("{dtype}/{scheme}"))),
            );
            assert_eq!(
                a["quantization_config"], b["quantization_config"],
                "{dtype}/{scheme}"
            );
            assert_eq!(a["hidden_size"], b["hidden_size"]);
        }
    }
}

#[test]
fn bad_quantize_input_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let dense = golden("bf16/dense");
    for (args, must) in [
        (
            vec!["--scheme", "w3a16"],
            "invalid value 'w3a16' for '--scheme",
        ),
        (
            vec!["--scheme", "w4a16", "--group-size", "100"],
            "group size 100 does not divide",
        ),
        (
            vec!["--scheme", "w8a16", "--group-size", "64"],
            "--group-size applies to the int4 schemes",
        ),
        (
            vec!["--scheme", "w8a16", "--rounding", "up"],
            "invalid value 'up' for '--rounding",
        ),
    ] {
        let mut full = vec![
            "quantize",
            dense.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        full.extend(args.iter());
        let res = run(&full);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(must), "{args:?}: {err}");
        assert!(!out.exists());
    }
}

fn report(path: &std::path::Path) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["tensors"].as_array().unwrap().clone()
}

/// --validate reports each layer's output error from the packed codes;
/// it follows the weight error, and int4 loses more than int8.
#[test]
fn validate_reports_output_error_from_packed_codes() {
    let dir = tempfile::tempdir().unwrap();
    let asset = repo_root().join("assets/tiny-llama");
    let mut sums = Vec::new();
    for scheme in ["w8a16", "w4a16", "w4a16-asym"] {
        let out = dir.path().join(scheme);
        let rep = dir.path().join(format!("{scheme}.json"));
        let res = run(&[
            "quantize",
            asset.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--scheme",
            scheme,
            "--validate",
            "--verify",
            "--report",
            rep.to_str().unwrap(),
        ]);
        assert_eq!(
            res.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            stdout.contains("out err") && stdout.contains("verify"),
            "{stdout}"
        );
        let rows = report(&rep);
        assert_eq!(rows.len(), 14, "{scheme}");
        let mut sum = 0.0;
        for r in &rows {
            let (o, w) = (
                r["output_error"].as_f64().unwrap(),
                r["relative_error"].as_f64().unwrap(),
            );
            // Gaussian probes see the weight error almost unchanged.
            assert!(
                o > 0.0 && (o / w - 1.0).abs() < 0.25,
                "{scheme} {}: {o} vs {w}",
                r["name"]
            );
            assert_eq!(r["verify_mismatches"].as_u64(), Some(0));
            sum += o;
        }
        sums.push(sum);
    }
    assert!(
        sums[0] * 4.0 < sums[1],
        "int8 {} vs int4 {}",
        sums[0],
        sums[1]
    );
    assert!(
        sums[2] < sums[1],
        "asymmetric {} vs symmetric {}",
        sums[2],
        sums[1]
    );
}

/// A wrong code (injected) makes --verify exit 1 and write nothing.
#[test]
fn verify_catches_a_wrong_code_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let asset = repo_root().join("assets/tiny-llama");
    let res = std::process::Command::new(common::shears_bin())
        .args([
            "quantize",
            asset.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--scheme",
            "w8a16",
            "--verify",
        ])
        .env("SHEARS_LOG", "warn")
        .env("SHEARS_INJECT_FAULT", "codes")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--verify: 14 values differ"), "{stderr}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp folder left"
    );
}

/// `--sync` (fsync every shard before the rename) writes the same bytes.
#[test]
fn sync_flushes_every_shard_and_writes_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let asset = repo_root().join("assets/tiny-llama");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut logs = Vec::new();
    for (out, sync) in [(&a, false), (&b, true)] {
        let mut args = vec![
            "quantize",
            asset.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--scheme",
            "w8a16",
        ];
        if sync {
            args.push("--sync");
        }
        let res = std::process::Command::new(common::shears_bin())
            .args(&args)
            .env("SHEARS_LOG", "warn,shears_core=debug")
            .env("XDG_RUNTIME_DIR", common::xdg_runtime_dir())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr).into_owned();
        assert_eq!(res.status.code(), Some(0), "{err}");
        logs.push(err);
    }
    // Observed, not assumed: each of the two shards is fsynced with
    // --sync, none without.
    let flushed = |log: &str| log.matches("flushed to disk (fsync)").count();
    assert_eq!(flushed(&logs[0]), 0, "{}", logs[0]);
    assert_eq!(flushed(&logs[1]), 2, "{}", logs[1]);
    for f in std::fs::read_dir(&a).unwrap() {
        let name = f.unwrap().file_name();
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
            "{name:?}"
        );
    }
}
