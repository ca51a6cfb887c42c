//! `shears prune` end to end on the assets checkpoint (CPU backend; the GPU
//! path is held to the same masks by tests/gpu_prune.rs and --verify).

mod common;

use std::path::{Path, PathBuf};

use common::{repo_root, run};
use shears_core::reference::select::prune_count;
use shears_core::Checkpoint;

fn asset() -> String {
    repo_root().join("assets/tiny-llama").display().to_string()
}

fn calib() -> String {
    repo_root()
        .join("assets/tiny-llama-calibration.safetensors")
        .display()
        .to_string()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Prunes into a fresh folder and returns it with the report.
fn prune(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = dir.join(name);
    let rep = dir.join(format!("{name}.json"));
    let mut args: Vec<String> = [
        "prune",
        &asset(),
        "-o",
        out.to_str().unwrap(),
        "--backend",
        "cpu",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(["--report".into(), rep.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&refs);
    (out, report(&rep))
}

#[test]
fn exact_counts_in_every_scope() {
    let dir = tempfile::tempdir().unwrap();
    for scope in ["row", "tensor", "global"] {
        let (_, rep) = prune(dir.path(), scope, &["--scope", scope, "--sparsity", "0.37"]);
        let tensors = rep["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), 14, "{scope}");
        let mut total = (0u64, 0u64);
        for t in tensors {
            let shape: Vec<u64> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            let (n, pruned) = (t["numel"].as_u64().unwrap(), t["pruned"].as_u64().unwrap());
            total.0 += n;
            total.1 += pruned;
            match scope {
                "row" => assert_eq!(pruned, shape[0] * prune_count(0.37, shape[1])),
                "tensor" => assert_eq!(pruned, prune_count(0.37, n)),
                _ => {}
            }
        }
        if scope == "global" {
            assert_eq!(total.1, prune_count(0.37, total.0));
        }
    }
}

#[test]
fn two_four_groups_keep_their_two_largest() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = prune(dir.path(), "nm", &["--pattern", "2:4"]);
    let pruned = Checkpoint::open(&out).unwrap();
    let orig = Checkpoint::open(asset()).unwrap();
    assert_eq!(pruned.shards.len(), orig.shards.len());
    for t in &orig.tensors {
        let p = pruned.get(&t.name).unwrap();
        assert_eq!((p.dtype, &p.shape), (t.dtype, &t.shape));
        let (a, b) = (orig.view(t), pruned.view(p));
        if !t.name.contains("proj") {
            assert_eq!(a.bytes(), b.bytes(), "{} must pass through", t.name);
            continue;
        }
        let (x, y) = (a.to_f32().unwrap(), b.to_f32().unwrap());
        for (g, (xo, yo)) in x.chunks(4).zip(y.chunks(4)).enumerate() {
            let zeros = yo.iter().filter(|v| **v == 0.0).count();
            assert_eq!(zeros, 2, "{} group {g}", t.name);
            let mut kept: Vec<(f32, usize)> = (0..4)
                .filter(|&i| yo[i] != 0.0)
                .map(|i| (xo[i].abs(), i))
                .collect();
            let mut dropped: Vec<(f32, usize)> = (0..4)
                .filter(|&i| yo[i] == 0.0)
                .map(|i| (xo[i].abs(), i))
                .collect();
            kept.sort_by(|a, b| a.partial_cmp(b).unwrap());
            dropped.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert!(
                dropped.last().unwrap() <= kept.first().unwrap(),
                "{} group {g}",
                t.name
            );
            for &(_, i) in &kept {
                assert_eq!(xo[i], yo[i]);
            }
        }
    }
    assert!(out.join("config.json").exists());
    assert!(out.join("model.safetensors.index.json").exists());
}

#[test]
fn validation_error_grows_with_sparsity() {
    let dir = tempfile::tempdir().unwrap();
    let mut errs = Vec::new();
    for s in ["0.5", "0.7", "0.9"] {
        let (_, rep) = prune(dir.path(), s, &["--sparsity", s, "--validate"]);
        let e: Vec<f64> = rep["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["relative_error"].as_f64().unwrap())
            .collect();
        errs.push(e);
    }
    for (i, ((a, b), c)) in errs[0].iter().zip(&errs[1]).zip(&errs[2]).enumerate() {
        assert!(a < b && b < c, "layer {i}: {a} {b} {c}");
    }
}

#[test]
fn structured_rows_zero_whole_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = prune(
        dir.path(),
        "rows",
        &["--structured", "rows", "--sparsity", "0.25"],
    );
    let ck = Checkpoint::open(&out).unwrap();
    let t = ck.get("model.layers.0.mlp.up_proj.weight").unwrap();
    let v = ck.view(t).to_f32().unwrap();
    let zero_rows = v
        .chunks(t.shape[1])
        .filter(|r| r.iter().all(|x| *x == 0.0))
        .count();
    assert_eq!(zero_rows as u64, prune_count(0.25, t.shape[0] as u64));
}

#[test]
fn wanda_and_taylor_with_the_calibration_example() {
    let dir = tempfile::tempdir().unwrap();
    let c = calib();
    let (_, w) = prune(
        dir.path(),
        "wanda",
        &["--method", "wanda", "--calibration", &c, "--validate"],
    );
    let (_, m) = prune(
        dir.path(),
        "mag",
        &["--scope", "row", "--calibration", &c, "--validate"],
    );
    prune(
        dir.path(),
        "taylor",
        &["--method", "taylor", "--calibration", &c, "--verify"],
    );
    // On inputs with outlier features Wanda keeps more of the output.
    let sum = |r: &serde_json::Value| -> f64 {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["relative_error"].as_f64().unwrap())
            .sum()
    };
    assert!(
        sum(&w) < sum(&m),
        "wanda {} vs magnitude {}",
        sum(&w),
        sum(&m)
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let text = ok(&[
        "prune",
        &asset(),
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
        "--include",
        "*nothing*",
        "--exclude",
        "*.o_proj.weight",
    ]);
    assert!(
        text.contains("model.embed_tokens.weight") && text.contains("keep (embedding)"),
        "{text}"
    );
    assert!(text.contains("keep (excluded)"), "{text}");
    assert!(
        text.contains("prune 50.0% per tensor (magnitude)"),
        "{text}"
    );
    assert!(
        text.contains("warning: pattern '*nothing*' matched no tensor"),
        "{text}"
    );
    assert!(!out.exists());
}

#[test]
fn verify_passes_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    for extra in [
        &["--scope", "global"][..],
        &["--pattern", "2:4"][..],
        &["--method", "random"][..],
    ] {
        let mut args = vec!["--verify"];
        args.extend_from_slice(extra);
        prune(
            dir.path(),
            &format!("v{}", extra.join("")).replace(['-', ':', ' '], ""),
            &args,
        );
    }
}

/// Runs a bad command: one line on stderr naming `must`, exit 2, nothing written.
fn bad(extra: &[&str], must: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let asset = asset();
    let mut args = vec!["prune", asset.as_str(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let res = run(&args);
    let err = String::from_utf8_lossy(&res.stderr).to_string();
    assert_eq!(res.status.code(), Some(2), "{extra:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
    for m in must {
        assert!(err.contains(m), "{extra:?}: '{m}' missing from {err}");
    }
    assert!(!out.exists(), "{extra:?} wrote output");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{extra:?} left files behind");
}

#[test]
fn bad_input_is_refused_cleanly() {
    bad(
        &["--sparsity", "1.0"],
        &["--sparsity", "1.0 is outside [0, 1)"],
    );
    bad(&["--sparsity", "-0.1"], &["outside [0, 1)"]);
    bad(&["--sparsity", "half"], &["not a number"]);
    for p in ["2:4x", "4:2", "0:4", "2:17", "24"] {
        bad(&["--pattern", p], &["--pattern", p]);
    }
    bad(&["--method", "wanda"], &["needs --calibration"]);
    bad(
        &["--method", "best"],
        &["'best'", "--method", "magnitude, wanda"],
    );
    bad(
        &["--scope", "layer"],
        &["'layer'", "--scope", "row, tensor, global"],
    );
    // An explicit --sparsity beside --pattern is refused whatever its value.
    bad(
        &["--pattern", "2:4", "--sparsity", "0.5"],
        &["drop --sparsity"],
    );
    bad(
        &["--pattern", "3:7"],
        &["model.layers.0.self_attn.q_proj.weight", "groups of 7"],
    );
    bad(&["--include", "[oops"], &["--include '[oops'"]);
}

#[test]
fn calibration_problems_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // A calibration file missing one layer, and one with a wrong shape.
    let src = Checkpoint::open(calib()).unwrap();
    let keep = |skip: &str, reshape: Option<&str>| -> PathBuf {
        let mut tensors = Vec::new();
        for t in &src.tensors {
            if t.name == skip {
                continue;
            }
            let mut shape = t.shape.clone();
            let mut data = src.view(t).bytes().to_vec();
            if Some(t.name.as_str()) == reshape {
                shape = vec![shape[0] - 1];
                data.truncate(data.len() - 4);
            }
            tensors.push((
                t.name.clone(),
                shears_core::TensorBuf {
                    dtype: t.dtype,
                    shape,
                    data,
                },
            ));
        }
        let p = dir.path().join(format!("c{}.safetensors", tensors.len()));
        shears_core::checkpoint::write_file(&p, &tensors, true, &[]).unwrap();
        p
    };
    let missing = keep("model.layers.1.mlp.up_proj.weight.input_norm", None);
    bad(
        &[
            "--method",
            "wanda",
            "--calibration",
            missing.to_str().unwrap(),
        ],
        &[
            missing.file_name().unwrap().to_str().unwrap(),
            "model.layers.1.mlp.up_proj.weight.input_norm",
            "missing",
        ],
    );
    let wrong = keep(
        "",
        Some("model.layers.0.self_attn.k_proj.weight.input_norm"),
    );
    bad(
        &[
            "--method",
            "wanda",
            "--calibration",
            wrong.to_str().unwrap(),
        ],
        &[
            "model.layers.0.self_attn.k_proj.weight.input_norm",
            "shape [255]",
        ],
    );
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let res = run(&["prune", &asset(), "-o", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    let res = run(&["prune", &asset(), "-o", &asset()]);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("input"));
}
