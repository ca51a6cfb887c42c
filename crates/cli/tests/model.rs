//! `shears calibrate` and `shears eval` end to end: real calibration feeds
//! Wanda byte for byte like --calibration-text, a compressed checkpoint
//! evaluates exactly like its decompressed copy, a model against itself
//! agrees perfectly, and bad inputs are refused with one line.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A text of a few thousand bytes (the byte-level tokenizer makes one
/// token per byte).
fn text(dir: &Path) -> PathBuf {
    let p = dir.join("text.txt");
    let mut t = String::new();
    for i in 0..120 {
        t.push_str(&format!(
            "Line {i}: the quick brown fox jumps over the lazy dog, {} times.\n",
            i * 7 % 13
        ));
    }
    std::fs::write(&p, t).unwrap();
    p
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let o = run(args);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn calibrate_then_wanda_equals_calibration_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let t = text(dir.path());
    let calib = dir.path().join("calib.safetensors");
    let common = ["--backend", "cpu", "-q"];
    let o = run(&[
        &[
            "calibrate",
            s(&model),
            "--text",
            s(&t),
            "--seq-len",
            "128",
            "-o",
            s(&calib),
        ],
        &common[..],
    ]
    .concat());
    ok(&o);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&run(&[
        &[
            "prune",
            s(&model),
            "-o",
            s(&a),
            "--method",
            "wanda",
            "--calibration",
            s(&calib),
        ],
        &common[..],
    ]
    .concat()));
    let in_process: [&str; 10] = [
        "prune",
        s(&model),
        "-o",
        s(&b),
        "--method",
        "wanda",
        "--calibration-text",
        s(&t),
        "--calibration-seq-len",
        "128",
    ];
    ok(&run(&[&in_process[..], &common[..]].concat()));
    for f in std::fs::read_dir(&a).unwrap() {
        let name = f.unwrap().file_name();
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
            "{name:?} differs"
        );
    }
    // The file holds every linear weight's norms and rows, and says what
    // it was made from.
    let ckpt = shears_core::Checkpoint::open(&calib).unwrap();
    let md = &ckpt.shards[0].metadata;
    assert_eq!(md["shears.calibration"], "activations");
    assert_eq!(md["seq_len"], "128");
    assert_eq!(md["text_sha256"].len(), 64, "one SHA-256 per text file");
    assert_eq!(md["model_fingerprint"].len(), 64);
    let norms = ckpt
        .tensors
        .iter()
        .filter(|t| t.name.ends_with(".input_norm"))
        .count();
    assert_eq!(norms, 14);
    let q = ckpt
        .get("model.layers.1.mlp.down_proj.weight.inputs")
        .unwrap();
    assert_eq!(q.shape, vec![256, 768]);
}

#[test]
fn compressed_evaluates_as_its_decompressed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_with_tokenizer(dir.path(), "llama");
    let t = text(dir.path());
    let (q, d) = (dir.path().join("q"), dir.path().join("d"));
    ok(&run(&[
        "-q",
        "quantize",
        s(&model),
        "-o",
        s(&q),
        "--scheme",
        "w4a16",
        "--group-size",
        "32",
        "--backend",
        "cpu",
    ]));
    ok(&run(&[
        "-q",
        "decompress",
        s(&q),
        "-o",
        s(&d),
        "--backend",
        "cpu",
    ]));
    let f = "tokenizer.json";
    assert!(
        q.join(f).is_file() && d.join(f).is_file(),
        "{f} carried over"
    );
    let args = |m: &Path| -> Vec<String> {
        [
            "eval",
            s(m),
            "--text",
            s(&t),
            "--seq-len",
            "64",
            "--json",
            "--backend",
            "cpu",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let (aq, ad, am) = (args(&q), args(&d), args(&model));
    let jq = eval_json(&strs(&aq));
    let jd = eval_json(&strs(&ad));
    let jm = eval_json(&strs(&am));
    assert_eq!(jq["perplexity"], jd["perplexity"]);
    assert_eq!(jq["tokens"], jd["tokens"]);
    assert_ne!(jq["perplexity"], jm["perplexity"], "int4 changes the model");
    // Against its dense original: KL > 0; against itself: 0 and full agreement.
    let r = eval_json(&[strs(&aq), vec!["--ref", s(&model)]].concat());
    assert!(r["reference"]["kl_mean"].as_f64().unwrap() > 0.0);
    assert_eq!(r["reference"]["perplexity"], jm["perplexity"]);
    let r = eval_json(&[strs(&am), vec!["--ref", s(&model)]].concat());
    assert_eq!(r["reference"]["top1_agreement"], 1.0);
    assert!(r["reference"]["kl_mean"].as_f64().unwrap() < 1e-9);
}

#[test]
fn eval_and_calibrate_refuse_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = golden_with_tokenizer(dir.path(), "qwen3");
    let t = text(dir.path());
    let base = [
        "eval",
        s(&model),
        "--text",
        s(&t),
        "--seq-len",
        "64",
        "--backend",
        "cpu",
    ];
    // The whole pass works first.
    ok(&run(&base));
    // Another architecture, by name.
    let other = dir.path().join("gpt2");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), other.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(
        other.join("config.json"),
        cfg.replace("Qwen3ForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    refused(
        &run(&["eval", s(&other), "--text", s(&t), "--backend", "cpu"]),
        &["config.json", "GPT2LMHeadModel"],
    );
    // An unsupported rope type, by field.
    std::fs::write(
        other.join("config.json"),
        cfg.replace(
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"yarn\", \"factor\": 4.0",
        ),
    )
    .unwrap();
    refused(
        &run(&["eval", s(&other), "--text", s(&t), "--backend", "cpu"]),
        &["rope_parameters.rope_type 'yarn'"],
    );
    // A missing weight, by name.
    std::fs::write(
        other.join("config.json"),
        cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    refused(
        &run(&["eval", s(&other), "--text", s(&t), "--backend", "cpu"]),
        &["model.layers.2.input_layernorm.weight", "missing"],
    );
    // No tokenizer.
    std::fs::write(other.join("config.json"), &cfg).unwrap();
    std::fs::remove_file(other.join("tokenizer.json")).unwrap();
    refused(
        &run(&["eval", s(&other), "--text", s(&t), "--backend", "cpu"]),
        &["tokenizer.json"],
    );
    // Text that is not UTF-8, with the offset; too little text.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"fine so far \xc3\x28 then not").unwrap();
    refused(
        &run(&["eval", s(&model), "--text", s(&bad), "--backend", "cpu"]),
        &["bad.txt", "offset 12"],
    );
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    refused(
        &run(&["eval", s(&model), "--text", s(&short), "--backend", "cpu"]),
        &["9 tokens"],
    );
    // A file is not a model folder.
    refused(
        &run(&["eval", s(&model.join("model.safetensors")), "--text", s(&t)]),
        &["not a model folder"],
    );
    // calibrate never overwrites without --force, nor its input.
    let out = dir.path().join("c.safetensors");
    let cal = [
        "calibrate",
        s(&model),
        "--text",
        s(&t),
        "--seq-len",
        "64",
        "--backend",
        "cpu",
    ];
    ok(&run(&[&cal[..], &["-o", s(&out)]].concat()));
    refused(
        &run(&[&cal[..], &["-o", s(&out)]].concat()),
        &["c.safetensors"],
    );
    let weights = model.join("model.safetensors");
    refused(
        &run(&[&cal[..], &["-o", s(&weights), "--force"]].concat()),
        &["model.safetensors"],
    );
}
