//! K-quant super-blocks against ggml's own reference quantizers:
//! tests/golden/kquants/blocks.safetensors holds 37 blocks of 256 values
//! chosen to hit the searches' edge cases (zero, constant, one-signed,
//! subnormal, below-epsilon, huge-range, half-step, tied-extreme blocks,
//! zero sub-blocks, heavy tails) and the Q4_K and Q6_K bytes
//! `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref` made of them
//! (scripts/kquant-golden.py, libggml-base of llama-cpp-python). shears'
//! reference and the fast path's parallel rows must give the same bytes.

use shears::core::fast::gguf::quantize_k;
use shears::core::reference::kquants::{
    dequantize_q4_k, dequantize_q6_k, q4_k_block, q6_k_block, QK_K,
};
use shears::core::{Checkpoint, DType, TensorBuf};

fn golden() -> (Vec<f32>, Vec<u8>, Vec<u8>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/kquants/blocks.safetensors");
    let c = Checkpoint::open(&path).unwrap();
    let x = c.view(c.get("input").unwrap()).to_f32().unwrap();
    let bytes = |n: &str| c.view(c.get(n).unwrap()).bytes().to_vec();
    (x, bytes("q4_k"), bytes("q6_k"))
}

#[test]
fn blocks_equal_ggml_reference() {
    let (x, q4, q6) = golden();
    let n = x.len() / QK_K;
    assert_eq!(n, 37);
    for (name, block, size, want) in [
        ("Q4_K", q4_k_block as fn(&[f32], &mut [u8]), 144, &q4),
        ("Q6_K", q6_k_block, 210, &q6),
    ] {
        for i in 0..n {
            let mut got = vec![0u8; size];
            block(&x[i * QK_K..(i + 1) * QK_K], &mut got);
            assert_eq!(got, want[i * size..(i + 1) * size], "{name} block {i}");
        }
        // The fast path: the same blocks as one tensor's rows, in parallel.
        let t = TensorBuf::from_f32(DType::F32, vec![n, QK_K], &x).unwrap();
        assert_eq!(
            &quantize_k(&t.view(), block, size).unwrap(),
            want,
            "{name} fast path"
        );
    }
}

#[test]
fn dequantized_blocks_stay_near_their_values() {
    let (x, q4, q6) = golden();
    for (name, values) in [
        ("Q4_K", dequantize_q4_k(&q4)),
        ("Q6_K", dequantize_q6_k(&q6)),
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
            assert!(
                err <= 0.2 * amax + 1e-30,
                "{name} block {i}: {err} of {amax}"
            );
        }
    }
}
