use super::llama::{from_gguf_rows, gguf_name, hf_name, source_row, to_gguf_rows};
use super::*;

#[test]
fn a_planned_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::Str("llama".into()),
        ),
        ("llama.block_count".to_string(), Value::U32(2)),
        ("llama.rope.freq_base".to_string(), Value::F32(1e4)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(true),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::ArrStr(vec!["a".into(), "b c".into()]),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::ArrI32(vec![1, 3]),
        ),
    ];
    let x: Vec<f32> = (0..64 * 3).map(|i| (i as f32 - 90.0) / 17.0).collect();
    let tensors = vec![
        PlannedTensor {
            name: "norm".into(),
            dims: vec![5],
            ty: GgmlType::F32,
        },
        PlannedTensor {
            name: "w8".into(),
            dims: vec![64, 3],
            ty: GgmlType::Q8_0,
        },
        PlannedTensor {
            name: "w4".into(),
            dims: vec![64, 3],
            ty: GgmlType::Q4_0,
        },
    ];
    let (head, offsets) = encode_header(&meta, &tensors).unwrap();
    assert_eq!(head.len() % ALIGNMENT, 0);
    let norm: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let q8 = crate::reference::gguf::quantize_q8_0(&x);
    let q4 = crate::reference::gguf::quantize_q4_0(&x);
    let mut file = head.clone();
    for (data, off) in [&norm, &q8, &q4].into_iter().zip(&offsets) {
        file.resize(head.len() + off, 0);
        file.extend_from_slice(data);
    }
    std::fs::write(&path, &file).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata, meta);
    assert_eq!(f.tensors.len(), 3);
    assert_eq!(f.tensors[1].shape(), vec![3, 64]);
    assert_eq!(
        f.to_f32(&f.tensors[0]).unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(f.bytes(&f.tensors[1]).unwrap(), q8.as_slice());
    assert_eq!(f.bytes(&f.tensors[2]).unwrap(), q4.as_slice());
    // Truncated: one error naming the file.
    std::fs::write(&path, &file[..file.len() - 1]).unwrap();
    let e = GgufFile::open(&path).err().unwrap().to_string();
    assert!(e.contains("t.gguf") && e.contains("past the end"), "{e}");
    std::fs::write(&path, &file[..40]).unwrap();
    assert!(GgufFile::open(&path).is_err());
    std::fs::write(&path, b"GGML0000").unwrap();
    assert!(GgufFile::open(&path)
        .err()
        .unwrap()
        .to_string()
        .contains("magic"));
}

#[test]
fn rows_that_do_not_split_into_blocks_are_refused() {
    let t = PlannedTensor {
        name: "w".into(),
        dims: vec![48, 2],
        ty: GgmlType::Q8_0,
    };
    assert!(encode_header(&[], &[t]).is_err());
}

#[test]
fn names_map_both_ways() {
    for (h, g) in [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.norm.weight", "output_norm.weight"),
        (
            "model.layers.3.self_attn.q_proj.weight",
            "blk.3.attn_q.weight",
        ),
        ("model.layers.0.self_attn.k_proj.bias", "blk.0.attn_k.bias"),
        (
            "model.layers.12.mlp.down_proj.weight",
            "blk.12.ffn_down.weight",
        ),
        (
            "model.layers.1.post_attention_layernorm.weight",
            "blk.1.ffn_norm.weight",
        ),
        (
            "model.layers.1.self_attn.k_norm.weight",
            "blk.1.attn_k_norm.weight",
        ),
    ] {
        assert_eq!(gguf_name(h).as_deref(), Some(g));
        assert_eq!(hf_name(g).as_deref(), Some(h));
    }
    assert_eq!(
        gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq").as_deref(),
        Some("")
    );
    assert_eq!(gguf_name("model.vision.weight"), None);
}

#[test]
fn rope_rows_interleave_each_heads_halves() {
    // One head of 8 rows: GGUF rows 0..8 come from 0 4 1 5 2 6 3 7.
    let got: Vec<usize> = (0..8).map(|r| source_row(r, 16, 2)).collect();
    assert_eq!(got, vec![0, 4, 1, 5, 2, 6, 3, 7]);
    assert_eq!(source_row(9, 16, 2), 12);
    let bytes: Vec<u8> = (0..48).collect();
    let g = to_gguf_rows(&bytes, 3, 2);
    assert_eq!(&g[3..6], &[12, 13, 14]);
    assert_eq!(from_gguf_rows(&g, 3, 2), bytes);
}

#[test]
fn q4_1_blocks_read_as_code_times_d_plus_min() {
    // d = 0.5, min = −1: byte j holds codes j (low nibble) and j + 16.
    let mut block = Vec::new();
    block.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    block.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
    block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    assert_eq!(GgmlType::from_id(3), Some(GgmlType::Q4_1));
    assert_eq!(GgmlType::Q4_1.row_bytes(64), 40);
    let v = GgmlType::Q4_1.dequantize(&block);
    for j in 0..16 {
        assert_eq!(v[j], j as f32 * 0.5 - 1.0);
        assert_eq!(v[j + 16], (15 - j) as f32 * 0.5 - 1.0);
    }
    // Read, never written: `--type Q4_1` is not a target.
    assert_eq!(GgmlType::parse("Q4_1"), None);
    assert!(!mix::Target::names().contains(&"Q4_1"));
}

#[test]
fn a_config_rebuilt_from_the_keys_is_the_same_model() {
    use crate::model::config::ModelConfig;
    let facts = |has_output, qkv_bias| hf::TensorFacts {
        embedding_rows: None,
        has_output,
        qkv_bias,
        rope_freqs: false,
    };
    for (arch, extra) in [
        (
            "LlamaForCausalLM",
            serde_json::json!({"attention_bias": true}),
        ),
        (
            "LlamaForCausalLM",
            serde_json::json!({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
        ),
        (
            "Qwen2ForCausalLM",
            serde_json::json!({"tie_word_embeddings": true}),
        ),
        ("Qwen3ForCausalLM", serde_json::json!({"head_dim": 40})),
    ] {
        let mut v = serde_json::json!({
            "architectures": [arch],
            "hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 3,
            "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 300,
            "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "hidden_act": "silu",
            "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let cfg = ModelConfig::from_json(&v).unwrap();
        let mut keys = llama::metadata(&cfg, "m", 4096, 7);
        keys.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(1)));
        let tied = cfg.tie_word_embeddings;
        let back = hf::config(&hf::Keys(&keys), &facts(!tied, cfg.qkv_bias)).unwrap();
        assert_eq!(
            ModelConfig::from_json(&back).unwrap(),
            cfg,
            "{arch} {extra}"
        );
        assert_eq!(back["max_position_embeddings"], 4096);
    }
    // What config.json cannot say from the keys is refused.
    let cfg = ModelConfig::from_json(&serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10,
        "rms_norm_eps": 1e-5
    }))
    .unwrap();
    let keys = llama::metadata(&cfg, "m", 64, 7);
    let mut freqs = facts(true, false);
    freqs.rope_freqs = true;
    assert!(hf::config(&hf::Keys(&keys), &freqs)
        .unwrap_err()
        .contains("rope_freqs"));
    let mut partial = keys.clone();
    for (k, v) in partial.iter_mut() {
        if k == "llama.rope.dimension_count" {
            *v = Value::U32(8);
        }
    }
    assert!(hf::config(&hf::Keys(&partial), &facts(true, false))
        .unwrap_err()
        .contains("RoPE over 8"));
    let mut gemma = keys.clone();
    gemma[0].1 = Value::Str("gemma".into());
    assert!(hf::config(&hf::Keys(&gemma), &facts(true, false))
        .unwrap_err()
        .contains("\"gemma\""));
}

#[test]
fn a_tokenizer_rebuilt_from_the_keys_reads_text_alike() {
    // The golden forward folder's real byte-level tokenizer (49,152 tokens,
    // 48,900 merges), under each pre-tokenizer rule shears names: written
    // to GGUF keys, rebuilt, the same ids for text that tells the rules
    // apart (digits after spaces, contractions, runs of blanks and
    // newlines, letters outside ASCII).
    use crate::model::text::TextTokenizer;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let golden = root.join("tests/golden/forward/tokenizer/tokenizer.json");
    let mut base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    // One digit merge, which it lacks, so that splitting digits one at a
    // time (or three at a time) shows.
    base["model"]["vocab"]["12"] = 49152.into();
    base["model"]["merges"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(["1", "2"]));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    text.push_str(" 3.14159 can't 12345 x=99\n\n\n  y's l'été ünïcödé 日本語 \t\t x  \r\n 2026");
    let byte_level = |regex: bool| {
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
                           "trim_offsets": true, "use_regex": regex})
    };
    let split = |p: &str| {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
    };
    let digits = serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true}, byte_level(true)]});
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (pre, name) in [
        (byte_level(true), "gpt-2"),
        (split(vocab::LLAMA3_SPLIT), "llama-bpe"),
        (split(vocab::QWEN2_SPLIT), "qwen2"),
        (digits, "smollm"),
    ] {
        let (src, back) = (dir.path().join("src"), dir.path().join("back"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&back).unwrap();
        let mut t = base.clone();
        t["pre_tokenizer"] = pre;
        if name == "llama-bpe" {
            t["model"]["ignore_merges"] = true.into();
        }
        std::fs::write(src.join("tokenizer.json"), t.to_string()).unwrap();
        let keys = vocab::metadata(&src, None, 49153, None).unwrap();
        let k = hf::Keys(&keys);
        assert!(
            matches!(keys.iter().find(|(k, _)| k == "tokenizer.ggml.pre"),
                         Some((_, Value::Str(n))) if n == name)
        );
        let (tok, cfg) = hf::tokenizer(&k, 2048).unwrap();
        assert_eq!(cfg["add_bos_token"], false);
        std::fs::write(back.join("tokenizer.json"), tok.to_string()).unwrap();
        let want = TextTokenizer::open(&src).unwrap().encode(&text).unwrap();
        let got = TextTokenizer::open(&back).unwrap().encode(&text).unwrap();
        assert!(
            want == got,
            "{name}: the rebuilt tokenizer reads the text differently"
        );
        seen.push(want);
    }
    // The rules do differ on this text, so equality above says something.
    for i in 0..seen.len() {
        for j in 0..i {
            assert!(seen[i] != seen[j], "rules {i} and {j} read the text alike");
        }
    }
    // A SentencePiece vocabulary keeps no merges: no tokenizer, a reason.
    let spm = vec![(
        "tokenizer.ggml.model".to_string(),
        Value::Str("llama".into()),
    )];
    assert!(hf::tokenizer(&hf::Keys(&spm), 64)
        .unwrap_err()
        .contains("\"llama\""));
}
