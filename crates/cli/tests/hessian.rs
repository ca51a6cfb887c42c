//! GPTQ and SparseGPT through the CLI on the assets checkpoint with real
//! calibration from `shears calibrate --gram`: every layer's
//! Hessian-weighted error below round-to-nearest's / magnitude's, pruned
//! zeros exact, `--actorder group` writing a `weight_g_idx` that decompress
//! and eval read, `--calibration-text` sequential, and refusals.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use shears_core::Checkpoint;

/// A text of a few thousand bytes (one token per byte).
fn text(dir: &Path, seed: usize) -> PathBuf {
    let p = dir.join(format!("text{seed}.txt"));
    let mut t = String::new();
    for i in 0..150 {
        t.push_str(&format!(
            "Line {i}: {} brown foxes jump over {} lazy dogs, said report {}.\n",
            (i * 7 + seed) % 13,
            (i * 3 + seed) % 11,
            i * 31 % 97
        ));
    }
    std::fs::write(&p, t).unwrap();
    p
}

/// The calibration file of `model` on `text`, with XᵀX.
fn calibrate(model: &Path, text: &Path, out: &Path) {
    ok(&run(&[
        "-q",
        "calibrate",
        s(model),
        "--text",
        s(text),
        "--seq-len",
        "128",
        "--gram",
        "--backend",
        "cpu",
        "-o",
        s(out),
    ]));
}

/// The report's rows: (name, result, baseline) of the Hessian-weighted error.
fn weighted(report: &Path) -> Vec<(String, f64, f64)> {
    let doc: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let h = &r["hessian_error"];
            (
                r["name"].as_str().unwrap().to_string(),
                h["result"].as_f64().unwrap(),
                h["baseline"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_beats_baseline(report: &Path, what: &str) {
    let rows = weighted(report);
    assert_eq!(rows.len(), 14, "{what}: every linear layer reported");
    for (name, result, baseline) in rows {
        assert!(
            result < baseline,
            "{what}: {name}: {result:.4e} is not below the baseline {baseline:.4e}"
        );
    }
}

#[test]
fn gptq_and_sparsegpt_beat_their_baselines_on_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let calib = dir.path().join("c.safetensors");
    calibrate(&model, &text(dir.path(), 0), &calib);
    let cases: [(&str, &[&str]); 4] = [
        (
            "gptq",
            &["quantize", "--scheme", "w4a16", "--method", "gptq"],
        ),
        (
            "gptq-asym-static",
            &[
                "quantize",
                "--scheme",
                "w4a16-asym",
                "--method",
                "gptq",
                "--actorder",
                "static",
            ],
        ),
        (
            "sparsegpt",
            &["prune", "--sparsity", "0.5", "--method", "sparsegpt"],
        ),
        (
            "sparsegpt-2:4",
            &["prune", "--pattern", "2:4", "--method", "sparsegpt"],
        ),
    ];
    for (what, args) in cases {
        let out = dir.path().join(what);
        let report = dir.path().join(format!("{what}.json"));
        let common = [
            s(&model),
            "-o",
            s(&out),
            "--calibration",
            s(&calib),
            "--report",
            s(&report),
            "--backend",
            "cpu",
            "-q",
        ];
        ok(&run(&[args, &common[..]].concat()));
        assert_beats_baseline(&report, what);
    }
    // 2:4 SparseGPT: every group of 4 inputs keeps at most 2 non-zeros.
    let ck = Checkpoint::open(dir.path().join("sparsegpt-2:4")).unwrap();
    let t = ck.get("model.layers.1.mlp.down_proj.weight").unwrap();
    let v = ck.view(t).to_f32().unwrap();
    for (i, g) in v.chunks(4).enumerate() {
        assert!(
            g.iter().filter(|x| **x != 0.0).count() <= 2,
            "group {i}: {g:?}"
        );
    }
}

#[test]
fn joint_sparsegpt_and_gptq_keep_pruned_zeros_and_group_order_loads() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let calib = dir.path().join("c.safetensors");
    calibrate(&model, &text(dir.path(), 0), &calib);
    let joint = dir.path().join("joint");
    let report = dir.path().join("joint.json");
    ok(&run(&[
        "-q",
        "compress",
        s(&model),
        "-o",
        s(&joint),
        "--pattern",
        "2:4",
        "--method",
        "sparsegpt",
        "--scheme",
        "w4a16",
        "--quant-method",
        "gptq",
        "--calibration",
        s(&calib),
        "--report",
        s(&report),
        "--backend",
        "cpu",
    ]));
    assert_beats_baseline(&report, "sparsegpt 2:4 + gptq");
    let dense = dir.path().join("joint-dense");
    ok(&run(&["-q", "decompress", s(&joint), "-o", s(&dense)]));
    let ck = Checkpoint::open(&dense).unwrap();
    let t = ck.get("model.layers.0.self_attn.o_proj.weight").unwrap();
    let v = ck.view(t).to_f32().unwrap();
    for (i, g) in v.chunks(4).enumerate() {
        assert!(
            g.iter().filter(|x| **x != 0.0).count() <= 2,
            "group {i}: {g:?}"
        );
    }

    // Group activation order: weight_g_idx names each input's group, every
    // group holds group_size inputs, and eval reads the checkpoint as it
    // reads its decompressed copy.
    let gag = dir.path().join("gag");
    let report = dir.path().join("gag.json");
    ok(&run(&[
        "-q",
        "quantize",
        s(&model),
        "-o",
        s(&gag),
        "--scheme",
        "w4a16",
        "--group-size",
        "64",
        "--method",
        "gptq",
        "--actorder",
        "group",
        "--calibration",
        s(&calib),
        "--report",
        s(&report),
        "--backend",
        "cpu",
    ]));
    assert_beats_baseline(&report, "gptq actorder group");
    // Laid out as round to nearest writes it, plus weight_g_idx, and the
    // config differs only by the activation order.
    let rtn = dir.path().join("rtn");
    ok(&run(&[
        "-q",
        "quantize",
        s(&model),
        "-o",
        s(&rtn),
        "--scheme",
        "w4a16",
        "--group-size",
        "64",
        "--backend",
        "cpu",
    ]));
    let (a, b) = (
        Checkpoint::open(&rtn).unwrap(),
        Checkpoint::open(&gag).unwrap(),
    );
    for t in &b.tensors {
        match a.get(&t.name) {
            Some(u) => assert_eq!((u.dtype, &u.shape), (t.dtype, &t.shape), "{}", t.name),
            None => assert!(t.name.ends_with(".weight_g_idx"), "{} only in gptq", t.name),
        }
    }
    assert_eq!(b.tensors.len(), a.tensors.len() + 14);
    let qc = |d: &Path| -> Value {
        let v: Value =
            serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
        v["quantization_config"].clone()
    };
    let (mut x, y) = (qc(&rtn), qc(&gag));
    x["config_groups"]["group_0"]["weights"]["actorder"] = "group".into();
    assert_eq!(x, y, "quantization_config of rtn and gptq");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(gag.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"],
        "group"
    );
    let ck = Checkpoint::open(&gag).unwrap();
    let g = ck.get("model.layers.0.mlp.down_proj.weight_g_idx").unwrap();
    assert_eq!(g.shape, [768]);
    let idx: Vec<i32> = ck
        .view(g)
        .bytes()
        .chunks(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut count = [0usize; 12];
    idx.iter().for_each(|&i| count[i as usize] += 1);
    assert_eq!(count, [64; 12]);
    assert_ne!(
        idx,
        (0..768).map(|c| c / 64).collect::<Vec<i32>>(),
        "activation order permutes"
    );
    let copy = dir.path().join("gag-dense");
    ok(&run(&["-q", "decompress", s(&gag), "-o", s(&copy)]));
    let eval = |m: &Path| {
        let o = run(&[
            "eval",
            s(m),
            "--text",
            s(&text(dir.path(), 5)),
            "--seq-len",
            "128",
            "--json",
            "--backend",
            "cpu",
        ]);
        ok(&o);
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        doc["perplexity"].as_f64().unwrap()
    };
    let (a, b, d) = (eval(&gag), eval(&copy), eval(&model));
    assert_eq!(a, b, "eval of the checkpoint and of its decompressed copy");
    assert!((a / d - 1.0).abs() < 0.05, "perplexity {a} vs dense {d}");
}

#[test]
fn calibration_text_runs_sequentially_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let t = text(dir.path(), 0);
    let mut outs = Vec::new();
    for seq in ["true", "false"] {
        let out = dir.path().join(format!("seq-{seq}"));
        let report = dir.path().join(format!("seq-{seq}.json"));
        ok(&run(&[
            "-q",
            "quantize",
            s(&model),
            "-o",
            s(&out),
            "--scheme",
            "w4a16",
            "--method",
            "gptq",
            "--calibration-text",
            s(&t),
            "--calibration-seq-len",
            "128",
            "--sequential",
            seq,
            "--report",
            s(&report),
            "--backend",
            "cpu",
        ]));
        assert_beats_baseline(&report, &format!("--sequential {seq}"));
        outs.push(out);
    }
    // Layer 0 sees the same inputs either way; layer 1 does not.
    let read = |dir: &Path, name: &str| {
        let ck = Checkpoint::open(dir).unwrap();
        let t = ck.get(name).unwrap().clone();
        ck.view(&t).bytes().to_vec()
    };
    let l0 = "model.layers.0.mlp.up_proj.weight_packed";
    let l1 = "model.layers.1.mlp.up_proj.weight_packed";
    assert_eq!(read(&outs[0], l0), read(&outs[1], l0));
    assert_ne!(read(&outs[0], l1), read(&outs[1], l1));
}

#[test]
fn refusals_name_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let plain = dir.path().join("plain.safetensors");
    ok(&run(&[
        "-q",
        "calibrate",
        s(&model),
        "--text",
        s(&text(dir.path(), 0)),
        "--seq-len",
        "128",
        "--backend",
        "cpu",
        "-o",
        s(&plain),
    ]));
    let out = dir.path().join("out");
    let q = |extra: &[&str]| {
        run(&[
            &["quantize", s(&model), "-o", s(&out), "--scheme", "w4a16"][..],
            extra,
        ]
        .concat())
    };
    refused(&q(&["--method", "gptq"]), &["gptq", "--calibration"]);
    refused(
        &q(&["--method", "gptq", "--calibration", s(&plain)]),
        &["plain.safetensors", "input_gram", "--gram"],
    );
    refused(&q(&["--dampening", "0.1"]), &["--dampening", "gptq"]);
    refused(
        &run(&[
            "quantize",
            s(&model),
            "-o",
            s(&out),
            "--scheme",
            "fp8",
            "--method",
            "gptq",
            "--calibration",
            s(&plain),
        ]),
        &["gptq", "fp8"],
    );
    refused(
        &run(&[
            "quantize",
            s(&model),
            "-o",
            s(&out),
            "--scheme",
            "w8a16",
            "--method",
            "gptq",
            "--actorder",
            "group",
            "--calibration",
            s(&plain),
        ]),
        &["--actorder group", "static"],
    );
    refused(
        &run(&[
            "prune",
            s(&model),
            "-o",
            s(&out),
            "--method",
            "sparsegpt",
            "--scope",
            "row",
            "--calibration",
            s(&plain),
        ]),
        &["sparsegpt", "--scope"],
    );
    assert!(!out.exists(), "nothing written");
}
