//! GGUF blocks computed on the CPU only (the K-quants Q4_K, Q5_K, Q6_K and
//! the fallbacks Q5_0, Q5_1) against ggml's own reference quantizers:
//! tests/golden/kquants/blocks.safetensors holds 37 rows of 256 values
//! chosen to hit the searches' edge cases (zero, constant, one-signed,
//! subnormal, below-epsilon, huge-range, half-step, tied-extreme blocks,
//! zero sub-blocks, heavy tails) and the bytes
//! `quantize_row_{q4_K,q5_K,q6_K,q5_0,q5_1}_ref` made of them
//! (scripts/kquant-golden.py, libggml-base of llama-cpp-python). shears'
//! reference and the fast path's parallel rows must give the same bytes.

use shears::core::fast::gguf::quantize_k;
use shears::core::reference::gguf::{dequantize_q5, q5_0_block, q5_1_block};
use shears::core::reference::kquants::{
    dequantize_q4_k, dequantize_q5_k, dequantize_q6_k, q4_k_block, q5_k_block, q6_k_block, BlockFn,
    QK_K,
};
use shears::core::{Checkpoint, DType, TensorBuf};

/// (name in the file, quantizer, values per block, bytes per block).
const KINDS: [(&str, BlockFn, usize, usize); 5] = [
    ("q4_k", q4_k_block, 256, 144),
    ("q5_k", q5_k_block, 256, 176),
    ("q6_k", q6_k_block, 256, 210),
    ("q5_0", q5_0_block, 32, 22),
    ("q5_1", q5_1_block, 32, 24),
];

fn golden() -> Checkpoint {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/kquants/blocks.safetensors");
    Checkpoint::open(&path).unwrap()
}

fn bytes(c: &Checkpoint, name: &str) -> Vec<u8> {
    c.view(c.get(name).unwrap()).bytes().to_vec()
}

#[test]
fn blocks_equal_ggml_reference() {
    let c = golden();
    let x = c.view(c.get("input").unwrap()).to_f32().unwrap();
    let rows = x.len() / QK_K;
    assert_eq!(rows, 37);
    for (name, block, elems, size) in KINDS {
        let want = bytes(&c, name);
        let per_row = QK_K / elems * size;
        for r in 0..rows {
            let mut got = vec![0u8; per_row];
            for (xb, ob) in x[r * QK_K..(r + 1) * QK_K]
                .chunks(elems)
                .zip(got.chunks_mut(size))
            {
                block(xb, ob);
            }
            assert_eq!(got, want[r * per_row..(r + 1) * per_row], "{name} row {r}");
        }
        // The fast path: the same rows as one tensor, in parallel.
        let t = TensorBuf::from_f32(DType::F32, vec![rows, QK_K], &x).unwrap();
        assert_eq!(
            quantize_k(&t.view(), block, elems, size).unwrap(),
            want,
            "{name} fast path"
        );
    }
}

#[test]
fn dequantized_blocks_stay_near_their_values() {
    let c = golden();
    let x = c.view(c.get("input").unwrap()).to_f32().unwrap();
    for (name, values) in [
        ("q4_k", dequantize_q4_k(&bytes(&c, "q4_k"))),
        ("q5_k", dequantize_q5_k(&bytes(&c, "q5_k"))),
        ("q6_k", dequantize_q6_k(&bytes(&c, "q6_k"))),
        ("q5_0", dequantize_q5(&bytes(&c, "q5_0"), false)),
        ("q5_1", dequantize_q5(&bytes(&c, "q5_1"), true)),
    ] {
        assert_eq!(values.len(), x.len());
        for (i, (a, b)) in x.chunks(QK_K).zip(values.chunks(QK_K)).enumerate() {
            let amax = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // The scales are f16: blocks whose steps fall outside its range
            // (the tiny and huge-range blocks) decode to 0 or ±inf, in
            // ggml as here; the bytes above already match ggml's.
            if !(1e-4..=1e4).contains(&amax) {
                continue;
            }
            let err = a
                .iter()
                .zip(b)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            // Within a fifth of the block's range (Q4_K's 16 levels per
            // sub-block, squeezed by the 6-bit scale steps, are the coarsest).
            assert!(err <= 0.2 * amax, "{name} row {i}: {err} of {amax}");
        }
    }
}
