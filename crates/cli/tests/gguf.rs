//! GGUF output for llama.cpp: `quantize --type` on assets/tiny-llama and the
//! five golden forward models (with a byte-level tokenizer.json beside
//! them), read back by shears' GGUF reader and by `decompress`, every
//! tensor equal to shears' own blocks of the checkpoint's values (ggml's
//! reference numerics), q/k rows in llama.cpp's RoPE order (checked
//! against the reshape convert_hf_to_gguf.py describes, written here as
//! index arithmetic of its own), the architecture keys and extra tensors
//! each family needs, the decompressed folder evaluating like the
//! original, and bad requests refused with one line and nothing written.

mod common;

use std::path::Path;

use common::*;
use shears_core::formats::gguf::{hf, GgmlType, GgufFile, Value};
use shears_core::reference::gguf::{quantize_q4_0, quantize_q8_0};
use shears_core::{Checkpoint, DType};

const FAMILIES: [&str; 5] = ["llama", "llama3-tied", "mistral", "qwen2", "qwen3"];

/// `shears -q quantize MODEL -o OUT --type TY`, which must succeed.
fn write_gguf(model: &Path, out: &Path, ty: &str) {
    ok(&run(&[
        "-q",
        "quantize",
        s(model),
        "-o",
        s(out),
        "--type",
        ty,
    ]));
}

fn str_key<'a>(f: &'a GgufFile, k: &str) -> &'a str {
    match f.get(k) {
        Some(Value::Str(s)) => s,
        other => panic!("{k}: {other:?}"),
    }
}

fn u32_key(f: &GgufFile, k: &str) -> u32 {
    match f.get(k) {
        Some(Value::U32(v)) => *v,
        other => panic!("{k}: {other:?}"),
    }
}

/// Row `r` of GGUF q/k comes from checkpoint row … : the weight reshaped
/// to [heads, 2, d/2, in], the middle axes swapped, flattened.
fn permuted_from(r: usize, rows: usize, heads: usize) -> usize {
    let half = rows / heads / 2;
    // GGUF index (h, j, i) over [heads, d/2, 2] ← checkpoint (h, i, j).
    let (h, rest) = (r / (2 * half), r % (2 * half));
    let (j, i) = (rest / 2, rest % 2);
    (h * 2 + i) * half + j
}

/// The expected GGUF bytes of one checkpoint tensor.
fn expected(values: &[f32], shape: &[usize], ty: GgmlType, heads: Option<usize>) -> Vec<u8> {
    let inner = *shape.last().unwrap();
    let rows = values.len() / inner;
    let mut out = Vec::new();
    for r in 0..rows {
        let src = heads.map_or(r, |h| permuted_from(r, rows, h));
        let row = &values[src * inner..(src + 1) * inner];
        match ty {
            GgmlType::Q8_0 => out.extend(quantize_q8_0(row)),
            GgmlType::Q4_0 => out.extend(quantize_q4_0(row)),
            GgmlType::F32 => out.extend(row.iter().flat_map(|v| v.to_le_bytes())),
            GgmlType::F16 | GgmlType::BF16 => {
                let dtype = if ty == GgmlType::F16 {
                    DType::F16
                } else {
                    DType::BF16
                };
                let mut b = vec![0u8; row.len() * 2];
                shears_core::encode_f32(dtype, row, &mut b);
                out.extend(b);
            }
            _ => out.extend(ty.blocks().unwrap().quantize(row)),
        }
    }
    out
}

/// Writes `model` as `ty` and checks every tensor, then decompresses it
/// and checks the folder holds the values the blocks stand for.
fn check(model: &Path, ty: GgmlType, dir: &Path) {
    let out = dir.join(format!(
        "{}-{}.gguf",
        model.file_name().unwrap().to_string_lossy(),
        ty.name()
    ));
    ok(&run(&[
        "-q",
        "quantize",
        s(model),
        "-o",
        s(&out),
        "--type",
        ty.name(),
        "--backend",
        "cpu",
    ]));
    let f = GgufFile::open(&out).unwrap();
    let ckpt = Checkpoint::open(model).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let arch = str_key(&f, "general.architecture").to_string();
    let family = cfg["model_type"].as_str().unwrap();
    let want_arch = if family == "mistral" { "llama" } else { family };
    assert_eq!(arch, want_arch);
    let heads = cfg["num_attention_heads"].as_u64().unwrap() as usize;
    let kv = cfg["num_key_value_heads"].as_u64().unwrap() as usize;
    assert_eq!(
        u32_key(&f, &format!("{arch}.attention.head_count")) as usize,
        heads
    );
    assert_eq!(
        u32_key(&f, &format!("{arch}.attention.head_count_kv")) as usize,
        kv
    );
    assert_eq!(
        u32_key(&f, &format!("{arch}.block_count")) as u64,
        cfg["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        u32_key(&f, &format!("{arch}.vocab_size")) as u64,
        cfg["vocab_size"].as_u64().unwrap()
    );
    match f.get("tokenizer.ggml.tokens") {
        Some(Value::ArrStr(t)) => assert_eq!(t.len() as u64, cfg["vocab_size"].as_u64().unwrap()),
        other => panic!("tokens: {other:?}"),
    }
    assert_eq!(str_key(&f, "tokenizer.ggml.model"), "gpt2");
    // Llama 3's RoPE scaling as a tensor; tied models have no output.
    let llama3 = cfg["rope_scaling"]["rope_type"].as_str() == Some("llama3");
    assert_eq!(f.tensor("rope_freqs.weight").is_some(), llama3, "{arch}");
    if llama3 {
        let r = f.to_f32(f.tensor("rope_freqs.weight").unwrap()).unwrap();
        // Llama 3's rule: each frequency's divisor, 1 above the high
        // band, `factor` below the low one, blended between.
        let rs = &cfg["rope_scaling"];
        let num = |k: &str| rs[k].as_f64().unwrap();
        let (factor, low, high, orig) = (
            num("factor"),
            num("low_freq_factor"),
            num("high_freq_factor"),
            num("original_max_position_embeddings"),
        );
        let base = cfg["rope_theta"].as_f64().unwrap();
        let d = r.len() * 2;
        for (i, &got) in r.iter().enumerate() {
            let wavelen = 2.0 * std::f64::consts::PI * base.powf(2.0 * i as f64 / d as f64);
            let want = if wavelen < orig / high {
                1.0
            } else if wavelen > orig / low {
                factor
            } else {
                let smooth = (orig / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            assert!(
                (got as f64 - want).abs() <= 1e-4 * want,
                "rope_freqs[{i}] {got} vs {want}"
            );
        }
    }
    let tied = cfg["tie_word_embeddings"].as_bool() == Some(true);
    assert_eq!(
        f.tensor("output.weight").is_some(),
        ckpt.get("lm_head.weight").is_some()
    );
    if tied {
        assert!(f.tensor("output.weight").is_none());
    }
    let mut seen = 0;
    for t in &ckpt.tensors {
        let Some(g) = shears_core::formats::gguf::llama::gguf_name(&t.name) else {
            panic!("{} unmapped", t.name)
        };
        if g.is_empty() {
            continue;
        }
        let gt = f.tensor(&g).unwrap_or_else(|| panic!("{g} missing"));
        assert_eq!(gt.shape(), t.shape, "{g}");
        let inner = *t.shape.last().unwrap();
        let want_ty = match t.shape.len() {
            2 if ty.fits(inner) => ty,
            2 => ty.fallback(inner),
            _ => GgmlType::F32,
        };
        assert_eq!(gt.ty, Some(want_ty), "{g}");
        let rope = arch == "llama" && (g.contains("attn_q.") || g.contains("attn_k."));
        let h = match (rope, g.contains("attn_q.")) {
            (false, _) => None,
            (true, true) => Some(heads),
            (true, false) => Some(kv),
        };
        let values = ckpt.view(t).to_f32().unwrap();
        assert!(
            f.bytes(gt).unwrap() == expected(&values, &t.shape, want_ty, h).as_slice(),
            "{} {}: {g} differs",
            model.display(),
            ty.name()
        );
        seen += 1;
    }
    assert_eq!(seen + llama3 as usize, f.tensors.len());
    // Back to safetensors: the values the blocks stand for, in the
    // checkpoint's names and row order, and the same config.
    let back = dir.join(format!(
        "back-{}-{}",
        model.file_name().unwrap().to_string_lossy(),
        ty.name()
    ));
    ok(&run(&["-q", "decompress", s(&out), "-o", s(&back)]));
    let b = Checkpoint::open(&back).unwrap();
    assert_eq!(b.tensors.len(), seen);
    for t in &ckpt.tensors {
        if t.name.ends_with("inv_freq") {
            continue;
        }
        let got = b.view(b.get(&t.name).unwrap()).to_f32().unwrap();
        let g = shears_core::formats::gguf::llama::gguf_name(&t.name).unwrap();
        let gt = f.tensor(&g).unwrap();
        let mut want = gt.ty.unwrap().dequantize(f.bytes(gt).unwrap());
        let rope = arch == "llama" && (g.contains("attn_q.") || g.contains("attn_k."));
        if rope {
            let h = if g.contains("attn_q.") { heads } else { kv };
            let inner = *t.shape.last().unwrap();
            let rows = want.len() / inner;
            let mut unpermuted = vec![0.0; want.len()];
            for r in 0..rows {
                let src = permuted_from(r, rows, h);
                unpermuted[src * inner..(src + 1) * inner]
                    .copy_from_slice(&want[r * inner..(r + 1) * inner]);
            }
            want = unpermuted;
        }
        assert_eq!(got, want, "{}", t.name);
    }
    assert_eq!(
        std::fs::read_to_string(back.join("config.json")).unwrap(),
        std::fs::read_to_string(model.join("config.json")).unwrap()
    );
}

#[test]
fn golden_models_and_the_assets_checkpoint_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut models = vec![repo_root().join("assets/tiny-llama")];
    models.extend(
        FAMILIES
            .iter()
            .map(|f| golden_with_tokenizer(dir.path(), f)),
    );
    for m in &models {
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            check(m, ty, dir.path());
        }
    }
}

#[test]
fn a_decompressed_q8_0_model_evaluates_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let back = dir.path().join("back");
    let model = repo_root().join("assets/tiny-llama");
    write_gguf(&model, &out, "Q8_0");
    ok(&run(&["-q", "decompress", s(&out), "-o", s(&back)]));
    let text = repo_root().join("LICENSE");
    let text = if text.is_file() {
        text
    } else {
        repo_root().join("README.md")
    };
    let o = run(&[
        "eval",
        s(&back),
        "--text",
        s(&text),
        "--tokens",
        "512",
        "--seq-len",
        "128",
        "--ref",
        s(&model),
        "--json",
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kl = v["reference"]["kl_mean"].as_f64().unwrap();
    let agree = v["reference"]["top1_agreement"].as_f64().unwrap();
    // Q8_0 is near lossless: the model's next-token distribution barely moves.
    assert!(kl < 0.01 && agree > 0.9, "{v}");
}

#[test]
fn inspect_lists_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    ok(&run(&[
        "-q",
        "quantize",
        s(&repo_root().join("assets/tiny-llama")),
        "-o",
        s(&out),
        "--type",
        "Q4_0",
    ]));
    let o = run(&["inspect", s(&out), "--json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["metadata"]["general.architecture"], "\"llama\"");
    let q = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q["type"], "Q4_0");
    assert_eq!(q["bytes"], 256 * 256 / 32 * 18);
}

#[test]
fn bad_requests_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let out = dir.path().join("out.gguf");
    // No tokenizer.json.
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    refused(
        &run(&["quantize", s(&model), "-o", s(&out), "--type", "Q8_0"]),
        &["tokenizer.json"],
    );
    assert!(!out.exists());
    // An architecture GGUF output does not describe.
    let gpt2 = tiny_llama(dir.path(), "gpt2");
    let cfg = std::fs::read_to_string(gpt2.join("config.json")).unwrap();
    std::fs::write(
        gpt2.join("config.json"),
        cfg.replace("LlamaForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    refused(
        &run(&["quantize", s(&gpt2), "-o", s(&out), "--type", "Q8_0"]),
        &["GPT2LMHeadModel"],
    );
    assert!(!out.exists());
    // An output that exists, without --force; then with it.
    let good = tiny_llama(dir.path(), "good");
    std::fs::write(&out, b"precious").unwrap();
    refused(
        &run(&["quantize", s(&good), "-o", s(&out), "--type", "Q8_0"]),
        &["exists", "--force"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    refused(
        &run(&[
            "quantize",
            s(&good),
            "-o",
            s(&out),
            "--type",
            "Q8_0",
            "--force",
        ]),
        &["not a safetensors or GGUF"],
    );
    std::fs::remove_file(&out).unwrap();
    write_gguf(&good, &out, "Q8_0");
    ok(&run(&[
        "-q",
        "quantize",
        s(&good),
        "-o",
        s(&out),
        "--type",
        "Q4_0",
        "--force",
    ]));
    // Flags that do not go with GGUF output.
    refused(
        &run(&["quantize", s(&good), "-o", s(&out), "--format", "gguf"]),
        &["--type"],
    );
    refused(
        &run(&["quantize", s(&good), "-o", s(&out), "--type", "IQ2_XS"]),
        &["IQ2_XS"],
    );
    refused(
        &run(&[
            "quantize",
            s(&good),
            "-o",
            s(&out),
            "--type",
            "Q8_0",
            "--method",
            "gptq",
        ]),
        &["gptq"],
    );
    // Not a GGUF file shears wrote.
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00").unwrap();
    refused(
        &run(&["decompress", s(&junk), "-o", s(&dir.path().join("j"))]),
        &["junk.gguf"],
    );
}

/// Q4_K_M on a 12-layer model: the per-tensor choices llama.cpp's own
/// llama-quantize made of the same model (scripts/kquant-check.py, every
/// tensor's type and bytes equal): output Q6_K, attn_v and ffn_down Q6_K in
/// layers 0, 3, 6, 9, 10, 11, the rest Q4_K, norms F32.
#[test]
fn q4_k_m_chooses_types_as_llama_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("deep");
    ok(&run(&[
        "-q",
        "generate",
        s(&model),
        "--hidden",
        "256",
        "--intermediate",
        "512",
        "--layers",
        "12",
        "--vocab",
        "512",
        "--seed",
        "3",
    ]));
    let out = dir.path().join("m.gguf");
    write_gguf(&model, &out, "Q4_K_M");
    let f = GgufFile::open(&out).unwrap();
    let more = [0, 3, 6, 9, 10, 11];
    for t in &f.tensors {
        let layer = t
            .name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok());
        let more_bits = (t.name.ends_with("attn_v.weight") || t.name.ends_with("ffn_down.weight"))
            && more.contains(&layer.unwrap());
        let want = if t.dims.len() < 2 {
            GgmlType::F32
        } else if t.name == "output.weight" || more_bits {
            GgmlType::Q6_K
        } else {
            GgmlType::Q4_K
        };
        assert_eq!(t.ty, Some(want), "{}", t.name);
    }
    assert_eq!(
        f.get("general.file_type"),
        Some(&shears_core::formats::gguf::Value::U32(15))
    );
}

/// Σ over the decoder's linear weights of Σ_ij imp_j (W_ij − Ŵ_ij)²: the
/// error an importance matrix is meant to lower (imp_j = ‖x_j‖², the
/// calibration's `input_norm` squared).
fn weighted_error(model: &Path, back: &Path, calib: &Path) -> f64 {
    let (a, b, c) = (
        Checkpoint::open(model).unwrap(),
        Checkpoint::open(back).unwrap(),
        Checkpoint::open(calib).unwrap(),
    );
    let mut total = 0.0f64;
    for t in &a.tensors {
        let Some(n) = c.get(&format!("{}.input_norm", t.name)) else {
            continue;
        };
        let imp = c.view(n).to_f32().unwrap();
        let w = a.view(t).to_f32().unwrap();
        let q = b.view(b.get(&t.name).unwrap()).to_f32().unwrap();
        let cols = imp.len();
        for (i, (x, y)) in w.iter().zip(&q).enumerate() {
            let e = (x - y) as f64;
            total += (imp[i % cols] as f64).powi(2) * e * e;
        }
    }
    total
}

#[test]
fn an_importance_matrix_weights_the_searches() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo_root().join("assets/tiny-llama");
    let text = repo_root().join("README.md");
    let calib = dir.path().join("calib.safetensors");
    ok(&run(&[
        "-q",
        "calibrate",
        s(&model),
        "--text",
        s(&text),
        "--tokens",
        "1024",
        "--seq-len",
        "128",
        "-o",
        s(&calib),
    ]));
    let mut errors = Vec::new();
    for ty in ["Q4_K", "Q4_0"] {
        for (tag, extra) in [
            ("plain", vec![]),
            ("imatrix", vec!["--calibration", s(&calib)]),
        ] {
            let out = dir.path().join(format!("{ty}-{tag}.gguf"));
            let back = dir.path().join(format!("{ty}-{tag}"));
            let mut args = vec!["quantize", s(&model), "-o", s(&out), "--type", ty, "--json"];
            args.extend(extra);
            let o = run(&args);
            ok(&o);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            // The 14 linear layers of the two decoder blocks; not the
            // embeddings or the output head (llama.cpp's imatrix leaves
            // them out too).
            let want = if tag == "plain" { 0 } else { 14 };
            assert_eq!(v["weighted_tensors"], want, "{v}");
            ok(&run(&["-q", "decompress", s(&out), "-o", s(&back)]));
            errors.push((ty, tag, weighted_error(&model, &back, &calib)));
        }
    }
    eprintln!("importance-weighted error: {errors:?}");
    for pair in errors.chunks(2) {
        // The weighted searches trade error on unimportant columns for
        // error on important ones: the weighted total must drop.
        assert!(pair[1].2 < 0.97 * pair[0].2, "{pair:?}");
    }
    // --calibration-text runs the same statistics in-process: same file.
    let a = dir.path().join("Q4_K-imatrix.gguf");
    let b = dir.path().join("text.gguf");
    ok(&run(&[
        "-q",
        "quantize",
        s(&model),
        "-o",
        s(&b),
        "--type",
        "Q4_K",
        "--calibration-text",
        s(&text),
        "--calibration-tokens",
        "1024",
        "--calibration-seq-len",
        "128",
    ]));
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // Statistics of another model: one line, exit 2, nothing written.
    let other = golden_with_tokenizer(dir.path(), "qwen3");
    let c = dir.path().join("other.gguf");
    let o = run(&[
        "quantize",
        s(&other),
        "-o",
        s(&c),
        "--type",
        "Q4_K",
        "--calibration",
        s(&calib),
    ]);
    let msg = refused(&o, &[]);
    assert!(msg.contains("calib.safetensors"), "{msg}");
    assert!(!c.exists());
}

#[test]
fn llama3_and_qwen2_pre_tokenizers_get_their_llama_cpp_names() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let path = model.join("tokenizer.json");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let qwen2 = llama3.replace(r"\p{N}{1,3}", r"\p{N}");
    let other = llama3.replace(r"\p{N}{1,3}", r"\p{N}{1,4}");
    for (pattern, want) in [
        (llama3, Some("llama-bpe")),
        (&qwen2, Some("qwen2")),
        (&other, None),
    ] {
        let mut t = base.clone();
        t["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]});
        std::fs::write(&path, t.to_string()).unwrap();
        let out = dir.path().join("t.gguf");
        let _ = std::fs::remove_file(&out);
        let o = run(&["-q", "quantize", s(&model), "-o", s(&out), "--type", "Q8_0"]);
        match want {
            Some(name) => {
                ok(&o);
                let f = GgufFile::open(&out).unwrap();
                assert_eq!(str_key(&f, "tokenizer.ggml.pre"), name);
                assert_eq!(str_key(&f, "tokenizer.ggml.model"), "gpt2");
            }
            None => {
                refused(&o, &["pre-tokenizer", "llama-bpe"]);
                assert!(!out.exists());
            }
        }
    }
}

/// A small SentencePiece-style tokenizer.json (byte fallback, "▁" for
/// spaces) of 256 + 3 + 4 tokens, in the two ways files write the scheme.
fn spm_tokenizer(metaspace: bool) -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
    }
    for b in 0..256 {
        vocab.insert(format!("<0x{b:02X}>"), (3 + b).into());
    }
    for (i, t) in ["▁t", "he", "▁the", "▁▁"].iter().enumerate() {
        vocab.insert(t.to_string(), (259 + i).into());
    }
    let (normalizer, pre) = if metaspace {
        (
            serde_json::Value::Null,
            serde_json::json!({"type": "Metaspace", "replacement": "▁",
                               "prepend_scheme": "first", "split": false}),
        )
    } else {
        (
            serde_json::json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}),
            serde_json::Value::Null,
        )
    };
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<unk>", "special": true},
            {"id": 1, "content": "<s>", "special": true},
            {"id": 2, "content": "</s>", "special": true}],
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true,
                  "byte_fallback": true, "vocab": vocab,
                  "merges": [["▁", "t"], ["h", "e"], ["▁t", "he"], ["▁", "▁"]]}
    })
}

#[test]
fn sentencepiece_tokenizers_become_llama_cpp_llama_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let path = model.join("tokenizer.json");
    for metaspace in [false, true] {
        std::fs::write(&path, spm_tokenizer(metaspace).to_string()).unwrap();
        let out = dir.path().join(format!("spm-{metaspace}.gguf"));
        write_gguf(&model, &out, "Q8_0");
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(str_key(&f, "tokenizer.ggml.model"), "llama");
        assert_eq!(str_key(&f, "tokenizer.ggml.pre"), "default");
        assert!(f.get("tokenizer.ggml.merges").is_none());
        assert!(matches!(
            f.get("tokenizer.ggml.add_space_prefix"),
            Some(Value::Bool(true))
        ));
        assert_eq!(u32_key(&f, "tokenizer.ggml.unknown_token_id"), 0);
        let Some(Value::ArrI32(types)) = f.get("tokenizer.ggml.token_type") else {
            panic!("no token types")
        };
        // unknown, control, byte, normal; the model's ids past the
        // tokenizer's are unused.
        assert_eq!(&types[..4], &[2, 3, 3, 6]);
        assert_eq!(&types[258..264], &[6, 1, 1, 1, 1, 5]);
        let Some(Value::ArrF32(scores)) = f.get("tokenizer.ggml.scores") else {
            panic!("no scores")
        };
        // −(rank of the merge that makes the token); 0 where none does.
        assert_eq!(&scores[258..263], &[0.0, -0.0, -1.0, -2.0, -3.0]);
    }
    // A SentencePiece file with a normalizer shears does not know.
    let mut t = spm_tokenizer(false);
    t["normalizer"] = serde_json::json!({"type": "NFKC"});
    std::fs::write(&path, t.to_string()).unwrap();
    let out = dir.path().join("bad.gguf");
    let o = run(&["quantize", s(&model), "-o", s(&out), "--type", "Q8_0"]);
    refused(&o, &["tokenizer.json", "SentencePiece"]);
    assert!(!out.exists());
}

/// `compress` to GGUF (`--type` or a `[gguf]` recipe table) prunes the
/// linear weights and writes the file in one pass: byte for byte what
/// `prune` followed by `quantize --type` write (a magnitude 2:4 recipe to
/// Q4_0; Wanda at 50% to Q4_K_M with the same calibration file as mask
/// scores and importance matrix), the report counting the zeros; requests
/// GGUF output cannot serve are refused with one line.
#[test]
fn compress_prunes_then_writes_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path(), "m");
    let calib = repo_root().join("assets/tiny-llama-calibration.safetensors");
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        "[prune]\npattern = \"2:4\"\nmethod = \"magnitude\"\n\n[gguf]\ntype = \"Q4_0\"\n",
    )
    .unwrap();
    let wanda = [
        "--sparsity",
        "0.5",
        "--method",
        "wanda",
        "--calibration",
        s(&calib),
    ];
    // (type, compress's flags, prune's, quantize's)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);
    let cases: [Case; 2] = [
        (
            "Q4_0",
            vec!["--recipe", s(&recipe)],
            vec!["--pattern", "2:4"],
            vec![],
        ),
        (
            "Q4_K_M",
            [&["--type", "Q4_K_M"][..], &wanda].concat(),
            wanda.to_vec(),
            vec!["--calibration", s(&calib)],
        ),
    ];
    for (ty, compress, prune, quantize) in cases {
        let one = dir.path().join(format!("one-{ty}.gguf"));
        let report = dir.path().join(format!("{ty}.json"));
        let o = run(&[
            &["compress", s(&model), "-o", s(&one), "--json"][..],
            &compress,
        ]
        .concat());
        ok(&o);
        std::fs::write(&report, &o.stdout).unwrap();
        // The same in two steps; the pruned folder named as the model, as
        // the file's general.name comes from it.
        let pruned = dir.path().join(format!("p-{ty}")).join("m");
        ok(&run(&[
            &["-q", "prune", s(&model), "-o", s(&pruned)][..],
            &prune,
        ]
        .concat()));
        let two = dir.path().join(format!("two-{ty}.gguf"));
        ok(&run(&[
            &["-q", "quantize", s(&pruned), "-o", s(&two), "--type", ty][..],
            &quantize,
        ]
        .concat()));
        assert!(
            std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
            "{ty}: compress differs from prune + quantize"
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["pruned"]["tensors"], 14, "{ty}: {r}");
        let (zeros, of) = (
            r["pruned"]["weights"].as_u64().unwrap(),
            r["pruned"]["of"].as_u64().unwrap(),
        );
        assert_eq!(zeros * 2, of, "{ty}: {r}");
    }
    // Without a pruning it is `quantize --type`.
    let plain = dir.path().join("plain.gguf");
    ok(&run(&[
        "-q",
        "compress",
        s(&model),
        "-o",
        s(&plain),
        "--type",
        "Q8_0",
    ]));
    write_gguf(&model, &dir.path().join("q.gguf"), "Q8_0");
    assert!(std::fs::read(&plain).unwrap() == std::fs::read(dir.path().join("q.gguf")).unwrap());
    // What GGUF output cannot serve.
    let out = dir.path().join("bad.gguf");
    let bad_recipe = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let both = bad_recipe(
        "both.toml",
        "[quantize]\nscheme = \"w4a16\"\n[gguf]\ntype = \"Q4_0\"\n",
    );
    let no_type = bad_recipe("notype.toml", "[gguf]\ntokenizer = \"t.json\"\n");
    let bad_type = bad_recipe("badtype.toml", "[gguf]\ntype = \"Q3_K_XL\"\n");
    let compress =
        |more: &[&str]| run(&[&["compress", s(&model), "-o", s(&out)][..], more].concat());
    refused(
        &compress(&["--recipe", s(&both)]),
        &["both.toml", "[quantize]"],
    );
    refused(
        &compress(&["--recipe", s(&no_type)]),
        &["notype.toml", "type"],
    );
    refused(
        &compress(&["--recipe", s(&bad_type)]),
        &["badtype.toml", "Q3_K_XL"],
    );
    refused(
        &compress(&["--type", "Q4_0", "--sparsity", "0.5", "--scope", "global"]),
        &["global"],
    );
    refused(
        &compress(&[
            "--type",
            "Q4_0",
            "--pattern",
            "2:4",
            "--method",
            "sparsegpt",
            "--calibration",
            s(&calib),
        ]),
        &["sparsegpt"],
    );
    refused(
        &compress(&["--type", "Q4_0", "--include", "*.mlp.*"]),
        &["--include"],
    );
    refused(&compress(&["--type", "Q4_0", "--verify"]), &["--verify"]);
    refused(
        &compress(&["--type", "Q4_0", "--pattern", "2:4", "--dampening", "0.1"]),
        &["--dampening"],
    );
    assert!(!out.exists());
}

/// A copy of the GGUF file `src` at `dst` without the keys that carry the
/// folder's config.json and tokenizer.json, as a file from
/// convert_hf_to_gguf.py comes.
fn strip_folder_keys(src: &Path, dst: &Path) {
    use shears_core::formats::gguf::{GgufWriter, PlannedTensor};
    let f = GgufFile::open(src).unwrap();
    let metadata: Vec<(String, Value)> = f
        .metadata
        .iter()
        .filter(|(k, _)| k != "shears.config_json" && k != "tokenizer.huggingface.json")
        .cloned()
        .collect();
    assert!(
        metadata.len() + 2 == f.metadata.len(),
        "both keys were there"
    );
    let planned = f
        .tensors
        .iter()
        .map(|t| PlannedTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty.unwrap(),
        })
        .collect();
    let mut w = GgufWriter::create(dst, &metadata, planned, false, &[]).unwrap();
    for t in &f.tensors {
        w.write_tensor(&t.name, f.bytes(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

/// `shears eval` of `model` on README.md: its JSON report.
fn eval_json(model: &Path) -> serde_json::Value {
    let o = run(&[
        "eval",
        s(model),
        "--text",
        s(&repo_root().join("README.md")),
        "--tokens",
        "1024",
        "--seq-len",
        "128",
        "--json",
    ]);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_gguf_file_shears_did_not_write_decompresses_to_a_folder_that_runs() {
    // Each family's golden model (and the four pre-tokenizer rules shears
    // names) written to GGUF, stripped of shears' own keys: decompressed,
    // the rebuilt config.json reads as the same model, the rebuilt
    // tokenizer.json gives the same tokens (so `eval` gives the same
    // perplexity to the digit) as the folder decompressed from the
    // unstripped file, and the tensors are the same bytes. (This
    // tokenizer has no merges; the rules are told apart on a real one in
    // core's `a_tokenizer_rebuilt_from_the_keys_reads_text_alike`.)
    let dir = tempfile::tempdir().unwrap();
    let base_pre: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("assets/tiny-llama/tokenizer.json")).unwrap(),
    )
    .unwrap();
    // Each rule as tokenizer.json writes it (the folder's own is "gpt-2").
    let rule = |name: &str| hf::pre_tokenizer(name).unwrap();
    let cases = [
        ("llama", base_pre["pre_tokenizer"].clone(), "gpt-2"),
        ("llama", rule("llama-bpe"), "llama-bpe"),
        ("mistral", rule("qwen2"), "qwen2"),
        ("qwen2", rule("smollm"), "smollm"),
        ("qwen3", base_pre["pre_tokenizer"].clone(), "gpt-2"),
    ];
    for (i, (family, pre, name)) in cases.into_iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let model = golden_with_tokenizer(&case, family);
        let mut tok = base_pre.clone();
        tok["pre_tokenizer"] = pre;
        std::fs::write(model.join("tokenizer.json"), tok.to_string()).unwrap();
        let ours = case.join("ours.gguf");
        let foreign = case.join("foreign.gguf");
        write_gguf(&model, &ours, "Q8_0");
        assert_eq!(
            str_key(&GgufFile::open(&ours).unwrap(), "tokenizer.ggml.pre"),
            name
        );
        strip_folder_keys(&ours, &foreign);
        let (a, b) = (case.join("a"), case.join("b"));
        ok(&run(&["-q", "decompress", s(&ours), "-o", s(&a)]));
        let o = run(&["decompress", s(&foreign), "-o", s(&b)]);
        ok(&o);
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(said.contains("rebuilt from the file's keys"), "{said}");
        let config = |d: &Path| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap())
                    .unwrap();
            let mut c = shears_core::model::config::ModelConfig::from_json(&v).unwrap();
            // GGUF names Mistral "llama": the same computation.
            c.family = shears_core::model::config::Family::Llama;
            c
        };
        assert_eq!(config(&a), config(&b), "{family} {name}");
        let tensors = |d: &Path| {
            let c = Checkpoint::open(d).unwrap();
            let mut v: Vec<(String, Vec<u8>)> = c
                .tensors
                .iter()
                .map(|t| (t.name.clone(), c.view(t).bytes().to_vec()))
                .collect();
            v.sort();
            v
        };
        assert!(
            tensors(&a) == tensors(&b),
            "{family} {name}: tensors differ"
        );
        let (ea, eb) = (eval_json(&a), eval_json(&b));
        assert_eq!(ea["tokens"], eb["tokens"], "{family} {name}");
        assert_eq!(
            ea["perplexity"], eb["perplexity"],
            "{family} {name}: {ea} {eb}"
        );
    }
    // Llama 3's RoPE scaling is a tensor of divisors in GGUF: its
    // parameters cannot be rebuilt, so the file is refused.
    let model = golden_with_tokenizer(dir.path(), "llama3-tied");
    let (ours, foreign) = (dir.path().join("l3.gguf"), dir.path().join("l3f.gguf"));
    write_gguf(&model, &ours, "Q8_0");
    strip_folder_keys(&ours, &foreign);
    let out = dir.path().join("l3");
    let o = run(&["decompress", s(&foreign), "-o", s(&out)]);
    refused(&o, &["l3f.gguf", "rope_freqs"]);
    assert!(!out.exists());
}
