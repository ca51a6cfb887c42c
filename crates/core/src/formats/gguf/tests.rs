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
