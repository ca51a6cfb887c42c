//! GGUF's K-quants Q4_K, Q5_K, Q6_K and the fallbacks Q5_0, Q5_1 against
//! ggml's own reference quantizers:
//! tests/golden/kquants/blocks.safetensors holds 37 rows of 256 values
//! chosen to hit the searches' edge cases (zero, constant, one-signed,
//! subnormal, below-epsilon, huge-range, half-step, tied-extreme blocks,
//! zero sub-blocks, heavy tails) and the bytes
//! `quantize_row_{q4_K,q5_K,q6_K,q5_0,q5_1}_ref` made of them
//! (scripts/kquant-golden.py, libggml-base of llama-cpp-python). shears'
//! reference, the fast path's parallel rows and the GPU kernels must give
//! the same bytes.

use shears::core::fast::quant::quantize_gguf;
use shears::core::reference::gguf::{dequantize_q5, GgufType};
use shears::core::reference::kquants::{dequantize_q4_k, dequantize_q5_k, dequantize_q6_k, QK_K};
use shears::core::{Checkpoint, DType, TensorBuf};
use shears::kernels::quant::GpuQuant;
use shears::testing::{gpu_gguf_rows_match, test_gpu};

/// (name in the file, kind).
const KINDS: [(&str, GgufType); 5] = [
    ("q4_k", GgufType::Q4_K),
    ("q5_k", GgufType::Q5_K),
    ("q6_k", GgufType::Q6_K),
    ("q5_0", GgufType::Q5_0),
    ("q5_1", GgufType::Q5_1),
];

/// The golden rows whose arithmetic leaves the normal f32 range (the
/// subnormal, below-epsilon and 1e-30/1e30 rows), which the GPU hands to
/// the CPU; every other row must be the GPU's own work.
const OUTSIDE_NORMAL_RANGE: [usize; 3] = [5, 6, 12];

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
    for (name, kind) in KINDS {
        let (block, elems, size) = (kind.block_fn(), kind.block_elems(), kind.block_bytes());
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
            quantize_gguf(&t.view(), kind).unwrap(),
            want,
            "{name} fast path"
        );
    }
}

#[test]
fn gpu_blocks_equal_ggml_reference() {
    let Some(ctx) = test_gpu().unwrap() else {
        return;
    };
    let gpu = GpuQuant::new(&ctx);
    let c = golden();
    let x = c.view(c.get("input").unwrap()).to_f32().unwrap();
    for (name, kind) in KINDS {
        gpu_gguf_rows_match(
            name,
            &x,
            QK_K,
            &bytes(&c, name),
            &OUTSIDE_NORMAL_RANGE,
            |w| gpu.quantize_gguf_counted(w, kind),
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
