//! The float schemes against what llm-compressor 0.14 (compressed-tensors
//! 0.20.1) wrote for the golden dense checkpoints (tests/golden, copied
//! from ../shared/golden): every FP8 code and scale byte for byte.

use std::path::PathBuf;

use shears::core::reference::fp8::{e4m3_value, quantize_fp8};
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
        let q = quantize_fp8(&x, rows, cols, block, w.dtype);
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
