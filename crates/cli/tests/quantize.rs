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
        (vec!["--scheme", "w3a16"], "unknown scheme 'w3a16'"),
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
            "--rounding 'up'",
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
