//! `shears bench` end to end: one run measures the CPU path and every
//! adapter (lavapipe in CI; Mesa's GL adapter too when wgpu offers it),
//! saves JSON with the machine, the targets and each kernel's figures,
//! `--compare` tabulates two runs and `--svg` draws them, and a kernel
//! broken on purpose (the SHEARS_BENCH_BREAK seam) is a failure, never a
//! speed. With SHEARS_REQUIRE_GPU=1 a run without a GPU target fails.

mod common;

use std::process::Command;

use common::*;

fn bench_json(dir: &std::path::Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let path = dir.join(name);
    let mut args = vec![
        "bench",
        "--size",
        "128",
        "--repeat",
        "2",
        "--json",
        s(&path),
    ];
    args.extend(extra);
    let o = run(&args);
    assert!(o.status.success(), "bench: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("quant/int8-channel"), "{text}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn gpu_required() -> bool {
    std::env::var("SHEARS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

#[test]
fn one_run_measures_every_target_and_family_and_saves_json() {
    let dir = tempfile::tempdir().unwrap();
    let a = bench_json(dir.path(), "a.json", &[]);
    let targets = a["targets"].as_array().unwrap();
    assert_eq!(targets[0]["name"], "cpu");
    if gpu_required() {
        assert!(targets.len() >= 2, "no GPU target: {targets:?}");
    }
    assert!(a["machine"]["cores"].as_u64().unwrap() >= 1);
    let results = a["results"].as_array().unwrap();
    // 13 kernels on every target, each checked and measured.
    assert_eq!(results.len(), 13 * targets.len());
    for family in ["importance", "select", "mask", "quant", "float", "matmul"] {
        assert!(results.iter().any(|r| r["family"] == family), "{family}");
    }
    for r in results {
        assert_eq!(r["status"], "ok", "{r}");
        let (rate, ratio) = (r["rate"].as_f64().unwrap(), r["ratio"].as_f64().unwrap());
        assert!(rate > 0.0 && ratio > 0.0 && ratio.is_finite(), "{r}");
        assert!(r["min_ms"].as_f64() <= r["median_ms"].as_f64(), "{r}");
        assert!(r["median_ms"].as_f64() <= r["max_ms"].as_f64(), "{r}");
        // A GPU row splits its time: uploads, readbacks, the rest.
        if r["target"] != "cpu" {
            let parts = ["upload_ms", "readback_ms", "compute_ms"].map(|p| r[p].as_f64().unwrap());
            assert!(parts.iter().all(|&p| p >= 0.0), "{r}");
            assert!(
                parts[1] > 0.0,
                "every GPU kernel reads its result back: {r}"
            );
            // Adapters with timestamp queries also time their passes.
            let target = targets.iter().find(|t| t["name"] == r["target"]).unwrap();
            let features = target["adapter"]["features"].as_array().unwrap();
            if features.iter().any(|f| f == "timestamp-query") {
                let g = r["gpu_ms"].as_f64().unwrap_or(-1.0);
                assert!(g > 0.0 && g.is_finite(), "{r}");
            }
        } else {
            assert!(r.get("upload_ms").is_none(), "{r}");
        }
        let y = r["yardstick"].as_str().unwrap();
        match r["family"].as_str().unwrap() {
            "matmul" => assert_eq!(y, "dense product"),
            _ if r["target"] == "cpu" => assert_eq!(y, "memcpy"),
            _ => assert_eq!(y, "device buffer copy"),
        }
    }
    // A second run (the CPU only), then both side by side.
    let _b = bench_json(
        dir.path(),
        "b.json",
        &["--adapter", "none", "--family", "quant,float"],
    );
    let svg = dir.path().join("c.svg");
    let o = run(&[
        "bench",
        "--compare",
        s(&dir.path().join("a.json")),
        s(&dir.path().join("b.json")),
        "--svg",
        s(&svg),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("a: cpu") && table.contains("b: cpu"),
        "{table}"
    );
    // The b run has no product: its cells say so.
    let matmul = table
        .lines()
        .find(|l| l.starts_with("matmul/dense"))
        .unwrap();
    assert!(matmul.contains('—'), "{matmul}");
    assert!(table
        .lines()
        .any(|l| l.starts_with("float/nvfp4") && l.contains('×')));
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));
    assert!(doc.matches("<rect").count() >= 13 + 6, "bars and legend");
}

#[test]
fn a_broken_kernel_is_a_failure_not_a_speed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    let o = Command::new(shears_bin())
        .args([
            "bench",
            "--size",
            "64",
            "--repeat",
            "1",
            "--family",
            "importance,quant,matmul",
            "--json",
            s(&path),
        ])
        .env("SHEARS_BENCH_BREAK", "quant,importance")
        .env("SHEARS_LOG", "warn")
        .env("XDG_RUNTIME_DIR", xdg_runtime_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("differ from the CPU reference"));
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for r in f["results"].as_array().unwrap() {
        if r["family"] == "quant" || r["family"] == "importance" {
            assert_eq!(r["status"], "failed", "{r}");
            assert_eq!(r["rate"], 0.0, "{r}");
            assert!(r["error"].as_str().unwrap().contains("differ"), "{r}");
        } else {
            assert_eq!(r["status"], "ok", "{r}");
        }
    }
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("FAILED"), "{table}");
}

#[test]
fn bad_requests_are_one_line() {
    for (args, names) in [
        (vec!["bench", "--family", "fft"], vec!["--family", "fft"]),
        (vec!["bench", "--size", "huge"], vec!["--size", "huge"]),
        (
            vec!["bench", "--adapter", "no-such-gpu"],
            vec!["no-such-gpu"],
        ),
        (vec!["bench", "--api", "glide"], vec!["--api", "glide"]),
    ] {
        refused(&run(&args), &names);
    }
}
