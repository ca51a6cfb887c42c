//! `shears compress` (2:4 + w4a16 from the recipe in assets/) on the
//! multi-shard bf16 assets checkpoint: every 2:4 group keeps its two exact
//! zeros after quantization, and decompress reproduces them.

mod common;

use common::{repo_root, run};
use shears_core::Checkpoint;

fn ok(args: &[&str]) -> String {
    let res = run(args);
    assert_eq!(
        res.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    String::from_utf8(res.stdout).unwrap()
}

#[test]
fn two_four_zeros_survive_quantization_and_decompression() {
    let dir = tempfile::tempdir().unwrap();
    let asset = repo_root().join("assets/tiny-llama");
    let recipe = repo_root().join("assets/compress-2of4-w4a16.toml");
    let (c, d, p) = (
        dir.path().join("c"),
        dir.path().join("d"),
        dir.path().join("p"),
    );
    let report = ok(&[
        "compress",
        asset.to_str().unwrap(),
        "-o",
        c.to_str().unwrap(),
        "--recipe",
        recipe.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(report.contains("compression"), "{report}");
    ok(&["decompress", c.to_str().unwrap(), "-o", d.to_str().unwrap()]);
    ok(&[
        "prune",
        asset.to_str().unwrap(),
        "-o",
        p.to_str().unwrap(),
        "--pattern",
        "2:4",
        "--backend",
        "cpu",
    ]);
    let (dc, pc) = (Checkpoint::open(&d).unwrap(), Checkpoint::open(&p).unwrap());
    assert_eq!(
        Checkpoint::open(&c).unwrap().shards.len(),
        2,
        "shards mirror the input"
    );
    let mut checked = 0;
    for t in pc.tensors.iter().filter(|t| t.name.contains("proj")) {
        let pruned = pc.view(t).to_f32().unwrap();
        let back = dc.view(dc.get(&t.name).unwrap()).to_f32().unwrap();
        for (g, (pg, bg)) in pruned.chunks(4).zip(back.chunks(4)).enumerate() {
            let zeros = pg.iter().filter(|v| **v == 0.0).count();
            assert!(zeros >= 2, "{} group {g}", t.name);
            for (a, b) in pg.iter().zip(bg) {
                if *a == 0.0 {
                    assert_eq!(
                        b.to_bits() & 0x7fff_ffff,
                        0,
                        "{} group {g}: a pruned zero came back {b}",
                        t.name
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 100_000);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("config.json")).unwrap()).unwrap();
    let qc = &config["quantization_config"];
    assert_eq!(qc["sparsity_config"]["sparsity_structure"], "2:4");
    assert_eq!(qc["config_groups"]["group_0"]["weights"]["num_bits"], 4);
}

#[test]
fn compress_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let asset = repo_root().join("assets/tiny-llama");
    for (args, must) in [
        (vec!["--sparsity", "0.5"], "no quantization: give --scheme"),
        (
            vec!["--scheme", "w4a16", "--sparsity", "0.5", "--scope", "bogus"],
            "bogus",
        ),
        (
            vec!["--scheme", "w4a16", "--pattern", "2:4", "--sparsity", "0.5"],
            "drop --sparsity",
        ),
    ] {
        let mut full = vec![
            "compress",
            asset.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        full.extend(args.iter());
        let res = run(&full);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(must), "{args:?}: {err}");
        assert!(!out.exists());
    }
}

/// --validate measures prune + quantize against the original layer: the
/// 2:4 + int4 output error exceeds the int4-only one on every layer, and
/// --verify re-derives every mask and code (no difference).
#[test]
fn validate_measures_pruning_and_quantization_together() {
    let dir = tempfile::tempdir().unwrap();
    let asset = repo_root().join("assets/tiny-llama");
    let recipe = repo_root().join("assets/compress-2of4-w4a16.toml");
    let calib = repo_root().join("assets/tiny-llama-calibration.safetensors");
    let mut errs = Vec::new();
    for pruned in [true, false] {
        let out = dir.path().join(format!("o{pruned}"));
        let rep = dir.path().join(format!("r{pruned}.json"));
        let mut args = vec![
            "compress",
            asset.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--validate",
            "--verify",
            "--calibration",
            calib.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
        ];
        if pruned {
            args.extend(["--recipe", recipe.to_str().unwrap()]);
        } else {
            args.extend(["--scheme", "w4a16"]);
        }
        let text = ok(&args);
        assert!(!pruned || text.contains("sparsity"), "{text}");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
        let rows: Vec<(String, f64, u64)> = doc["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["output_error"].as_f64().unwrap(),
                    r["verify_mismatches"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(rows.iter().all(|r| r.2 == 0), "{rows:?}");
        errs.push(rows);
    }
    for (p, q) in errs[0].iter().zip(&errs[1]) {
        assert_eq!(p.0, q.0);
        assert!(p.1 > q.1, "{}: 2:4+int4 {} vs int4 {}", p.0, p.1, q.1);
    }
}

/// Global scope in one command: `compress --scope global` writes exactly
/// what `prune --scope global` followed by `quantize` writes, byte for byte.
#[test]
fn global_scope_equals_prune_then_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let asset = repo_root().join("assets/tiny-llama");
    let (c, p, q) = (
        dir.path().join("c"),
        dir.path().join("p"),
        dir.path().join("q"),
    );
    let flags = ["--sparsity", "0.4", "--scope", "global", "--backend", "cpu"];
    let mut args = vec![
        "compress",
        asset.to_str().unwrap(),
        "-o",
        c.to_str().unwrap(),
    ];
    args.extend(["--scheme", "w4a16"]);
    args.extend(flags);
    ok(&args);
    let mut args = vec!["prune", asset.to_str().unwrap(), "-o", p.to_str().unwrap()];
    args.extend(flags);
    ok(&args);
    ok(&[
        "quantize",
        p.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--scheme",
        "w4a16",
        "--backend",
        "cpu",
    ]);
    let (a, b) = (Checkpoint::open(&c).unwrap(), Checkpoint::open(&q).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let u = b.get(&t.name).unwrap();
        assert!(a.view(t).bytes() == b.view(u).bytes(), "{}", t.name);
    }
}
