//! The float schemes against what llm-compressor 0.14 (compressed-tensors
//! 0.20.1) wrote for the golden dense checkpoints (tests/golden, copied
//! from ../shared/golden): every FP8 and FP4 code, scale and global scale
//! byte for byte, bf16 and f32.

use std::path::PathBuf;

use shears::core::reference::fp8::{e4m3_value, quantize_fp8};
use shears::core::reference::quant::Rounding;
use shears::core::{encode_f32, Checkpoint, DType};

fn golden(dir: &str) -> Checkpoint {
    Checkpoint::open(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(dir),
    )
    .unwrap()
}

/// Every FP8 layer of `scheme` in the `dtype` golden folder, recomputed
/// from the dense weights: (name, codes equal, scales equal).
fn check_fp8(dtype: &str, scheme: &str, block: Option<usize>) {
    let dense = golden(&format!("{dtype}/dense"));
    let gold = golden(&format!("{dtype}/{scheme}"));
    let mut layers = 0;
    for t in &gold.tensors {
        let Some(prefix) = t.name.strip_suffix(".weight_scale") else {
            continue;
        };
        layers += 1;
        let name = format!("{prefix}.weight");
        let w = dense.get(&name).unwrap();
        let x = dense.view(w).to_f32().unwrap();
        let (rows, cols) = (w.shape[0], w.shape[1]);
        let q = quantize_fp8(&x, rows, cols, block, w.dtype, Rounding::CompressedTensors);
        let codes = gold.get(&name).unwrap();
        assert_eq!(codes.dtype, DType::F8E4M3, "{name}");
        let want = gold.view(codes).bytes();
        let diff = q.codes.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(t.shape, q.scale_shape().to_vec(), "{name} scale shape");
        let mut scale_bytes = vec![0u8; q.scales.len() * t.dtype.bits() / 8];
        encode_f32(t.dtype, &q.scales, &mut scale_bytes);
        assert_eq!(
            scale_bytes,
            gold.view(t).bytes(),
            "{dtype}/{scheme} {name}: scales differ"
        );
        if diff > 0 {
            let first = q.codes.iter().zip(want).position(|(a, b)| a != b).unwrap();
            panic!(
                "{dtype}/{scheme} {name}: {diff} of {} codes differ; first at {first}: x = {}, scale = {}, ours {:#04x} ({}), theirs {:#04x} ({})",
                want.len(),
                x[first],
                q.scale_of(first / cols, first % cols),
                q.codes[first],
                e4m3_value(q.codes[first]),
                want[first],
                e4m3_value(want[first])
            );
        }
    }
    assert_eq!(layers, 7, "{dtype}/{scheme}: every linear layer");
}

#[test]
fn fp8_channel_matches_the_golden_files() {
    for dtype in ["bf16", "f32"] {
        check_fp8(dtype, "fp8", None);
    }
}

#[test]
fn fp8_block_matches_the_golden_files() {
    for dtype in ["bf16", "f32"] {
        check_fp8(dtype, "fp8-block", Some(128));
    }
}

/// The dense values and shape of `name` in the `dtype` golden folder.
fn dense_weight(dtype: &str, name: &str) -> (Vec<f32>, usize, usize, DType) {
    let dense = golden(&format!("{dtype}/dense"));
    let w = dense.get(name).unwrap();
    (
        dense.view(w).to_f32().unwrap(),
        w.shape[0],
        w.shape[1],
        w.dtype,
    )
}

/// Checks packed codes and scale bytes of one FP4 layer against the golden.
fn same_fp4(what: &str, q: &shears::core::reference::fp4::Fp4, gold: &Checkpoint, prefix: &str) {
    let packed = gold.view(gold.get(&format!("{prefix}.weight_packed")).unwrap());
    let scales = gold.view(gold.get(&format!("{prefix}.weight_scale")).unwrap());
    if let Some(i) = q
        .scales
        .iter()
        .zip(scales.bytes())
        .position(|(a, b)| a != b)
    {
        panic!(
            "{what} {prefix}: scale {i} of {}: ours {}, theirs {}",
            q.scales.len(),
            q.scales[i],
            scales.bytes()[i]
        );
    }
    let ours = q.packed();
    let diff = ours
        .iter()
        .zip(packed.bytes())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(diff, 0, "{what} {prefix}: {diff} packed bytes differ");
}

const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

#[test]
fn mxfp4_matches_the_golden_files() {
    use shears::core::reference::fp4::quantize_mxfp4;
    for dtype in ["bf16", "f32"] {
        let gold = golden(&format!("{dtype}/mxfp4a16"));
        for l in LINEARS {
            let prefix = format!("model.layers.0.{l}");
            let (x, rows, cols, dt) = dense_weight(dtype, &format!("{prefix}.weight"));
            same_fp4(dtype, &quantize_mxfp4(&x, rows, cols, dt), &gold, &prefix);
        }
    }
}

#[test]
fn nvfp4_matches_the_golden_files() {
    use shears::core::reference::fp4::{nv_global_scale, quantize_nvfp4};
    for dtype in ["bf16", "f32"] {
        let gold = golden(&format!("{dtype}/nvfp4a16"));
        // q/k/v share a global scale, and so do gate/up.
        for fused in [
            &LINEARS[0..3],
            &LINEARS[3..4],
            &LINEARS[4..6],
            &LINEARS[6..7],
        ] {
            let weights: Vec<_> = fused
                .iter()
                .map(|l| dense_weight(dtype, &format!("model.layers.0.{l}.weight")))
                .collect();
            let amax = weights
                .iter()
                .flat_map(|w| w.0.iter())
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let gs = nv_global_scale(amax, weights[0].3);
            for (l, (x, rows, cols, dt)) in fused.iter().zip(&weights) {
                let prefix = format!("model.layers.0.{l}");
                let g = gold.view(gold.get(&format!("{prefix}.weight_global_scale")).unwrap());
                let want = f32::from_le_bytes(g.bytes().try_into().unwrap());
                assert_eq!(
                    gs.to_bits(),
                    want.to_bits(),
                    "{dtype} {prefix}: global scale {gs} vs {want}"
                );
                same_fp4(
                    dtype,
                    &quantize_nvfp4(x, *rows, *cols, gs, *dt),
                    &gold,
                    &prefix,
                );
            }
        }
    }
}

/// The fast FP8 path gives the reference's bytes, on random weights with
/// ragged edges, zero rows and values near rounding ties, both roundings.
#[test]
fn fast_fp8_equals_the_reference() {
    use shears::core::fast::float::quantize_fp8 as fast;
    for (rows, cols, seed) in [(1, 1, 1u64), (7, 33, 2), (130, 260, 3), (256, 129, 4)] {
        let mut x = shears::testing::test_values(rows * cols, seed, false);
        x[..cols].fill(0.0);
        for dtype in [DType::BF16, DType::F32] {
            for rounding in [Rounding::Nearest, Rounding::CompressedTensors] {
                for block in [None, Some(128)] {
                    let want = quantize_fp8(&x, rows, cols, block, dtype, rounding);
                    let got = fast(&x, rows, cols, block, dtype, rounding);
                    assert_eq!(got, want, "{rows}x{cols} {dtype} {rounding:?} {block:?}");
                }
            }
        }
    }
}

/// The fast FP4 path and the parallel dequantization give the reference's
/// codes, scales and values.
#[test]
fn fast_fp4_equals_the_reference() {
    use shears::core::fast::float::{dequantize_fp4, quantize_fp4};
    use shears::core::reference::fp4::{quantize_mxfp4, quantize_nvfp4};
    for (rows, cols, seed) in [(1, 32, 1u64), (7, 64, 2), (33, 96, 3), (5, 544, 4)] {
        let mut x = shears::testing::test_values(rows * cols, seed, false);
        x[..cols].fill(0.0);
        for dtype in [DType::BF16, DType::F32] {
            let want = quantize_mxfp4(&x, rows, cols, dtype);
            let got = quantize_fp4(&x, rows, cols, None, dtype);
            assert_eq!(got, want, "mx {rows}x{cols} {dtype}");
            assert_eq!(dequantize_fp4(&got), want.dequantized());
            let want = quantize_nvfp4(&x, rows, cols, 17.5, dtype);
            let got = quantize_fp4(&x, rows, cols, Some(17.5), dtype);
            assert_eq!(got, want, "nv {rows}x{cols} {dtype}");
            assert_eq!(dequantize_fp4(&got), want.dequantized());
        }
    }
}
