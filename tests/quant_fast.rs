//! The fast CPU quantizer (SIMD rows where the CPU has AVX2) against the
//! reference: identical codes, scales and zero points for every scheme,
//! rounding mode and dtype, on 1, 7, 31, 33, 127, 129 columns and groups,
//! values next to rounding ties, and NaN / infinities mixed in.

use shears::core::fast::quant::quantize_view;
use shears::core::reference::quant::{quantize_matrix, QuantSpec, Rounding};
use shears::core::{DType, TensorBuf};
use shears::testing::{near_ties, test_values};

const SCHEMES: [QuantSpec; 5] = [
    QuantSpec {
        bits: 8,
        group: None,
        symmetric: true,
    },
    QuantSpec {
        bits: 8,
        group: None,
        symmetric: false,
    },
    QuantSpec {
        bits: 4,
        group: Some(32),
        symmetric: true,
    },
    QuantSpec {
        bits: 4,
        group: Some(128),
        symmetric: true,
    },
    QuantSpec {
        bits: 4,
        group: Some(128),
        symmetric: false,
    },
];

fn check(spec: &QuantSpec, dtype: DType, rows: usize, cols: usize, values: &[f32]) {
    let buf = TensorBuf::from_f32(dtype, vec![rows, cols], values).unwrap();
    let x = buf.view().to_f32().unwrap();
    for rounding in [Rounding::Nearest, Rounding::CompressedTensors] {
        let want = quantize_matrix(spec, &x, rows, cols, dtype, rounding);
        let got = quantize_view(spec, &buf.view(), rounding).unwrap();
        for (i, (a, b)) in want.params.iter().zip(&got.params).enumerate() {
            assert!(
                a.scale.to_bits() == b.scale.to_bits() && a.zero_point == b.zero_point,
                "{spec:?} {dtype} {rows}x{cols} {rounding:?} group {i}: {a:?} vs {b:?}"
            );
        }
        for (i, (a, b)) in want.codes.iter().zip(&got.codes).enumerate() {
            assert_eq!(
                a, b,
                "{spec:?} {dtype} {rows}x{cols} {rounding:?} code {i} (x = {:e})",
                x[i]
            );
        }
        assert_eq!(want, got);
    }
}

#[test]
fn fast_quantizer_equals_reference_next_to_ties() {
    let mut seed = 9000;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for spec in SCHEMES {
            let widths: Vec<usize> = match spec.group {
                None => vec![1, 7, 31, 33, 127, 129],
                Some(g) => vec![g, 2 * g, 3 * g + g / 2],
            };
            for cols in widths {
                seed += 1;
                check(
                    &spec,
                    dtype,
                    6,
                    cols,
                    &near_ties(&spec, dtype, 6, cols, seed),
                );
            }
        }
    }
}

#[test]
fn fast_quantizer_equals_reference_with_specials() {
    let mut seed = 9500;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for spec in SCHEMES {
            for cols in [1, 33, 129, 256, 300] {
                seed += 1;
                check(&spec, dtype, 5, cols, &test_values(5 * cols, seed, true));
            }
        }
    }
}

/// The statistics measured inside the quantizer's pass equal the separate
/// pass over the written codes (f32 lanes in other orders: 1e-5 relative).
#[test]
fn fused_error_statistics_equal_the_separate_pass() {
    use shears::core::fast::quant::{error_stats, quantize_view_into};
    let mut seed = 9900;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for spec in SCHEMES {
            for cols in [1, 33, 128, 300] {
                seed += 1;
                let buf =
                    TensorBuf::from_f32(dtype, vec![7, cols], &test_values(7 * cols, seed, false))
                        .unwrap();
                let mut q = Default::default();
                let fused = quantize_view_into(&spec, &buf.view(), Rounding::Nearest, true, &mut q)
                    .unwrap();
                let apart = error_stats(&buf.view(), &q).unwrap();
                let near = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(b.abs());
                assert!(
                    fused.max_abs == apart.max_abs
                        && near(fused.sum_sq_err, apart.sum_sq_err)
                        && near(fused.sum_sq, apart.sum_sq)
                        && (cols == 1 || fused.sum_sq_err > 0.0),
                    "{spec:?} {dtype} {cols}: {fused:?} vs {apart:?}"
                );
            }
        }
    }
}

/// Dense values from packed codes equal the reference's dequantized
/// values encoded in the dtype, byte for byte.
#[test]
fn dequantize_packed_equals_the_reference() {
    use shears::core::encode_f32;
    use shears::core::fast::quant::dequantize_packed;
    use shears::core::reference::matmul::PackedParts;
    let mut seed = 9700;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for spec in SCHEMES {
            for cols in [1, 7, 33, 128, 300] {
                seed += 1;
                let x = test_values(5 * cols, seed, false);
                let q = quantize_matrix(&spec, &x, 5, cols, dtype, Rounding::Nearest);
                let parts = PackedParts::from_quantized(&q, spec.bits, spec.symmetric);
                let mut want = vec![0u8; 5 * cols * dtype.bits() / 8];
                encode_f32(dtype, &q.dequantized(), &mut want);
                let got = dequantize_packed(&parts.view(), dtype).unwrap();
                assert!(got == want, "{spec:?} {dtype} 5x{cols}");
            }
        }
    }
}

/// GGUF blocks from the parallel rows equal the reference on the whole
/// tensor.
#[test]
fn fast_gguf_equals_the_reference() {
    use shears::core::fast::quant::quantize_gguf;
    use shears::core::reference::gguf::GgufType;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for kind in [GgufType::Q8_0, GgufType::Q4_0] {
            let buf =
                TensorBuf::from_f32(dtype, vec![9, 96], &test_values(9 * 96, 4242, false)).unwrap();
            let want = kind.quantize(&buf.view().to_f32().unwrap());
            assert_eq!(
                quantize_gguf(&buf.view(), kind).unwrap(),
                want,
                "{kind:?} {dtype}"
            );
        }
    }
    let odd = TensorBuf::from_f32(DType::F32, vec![2, 40], &[0.5; 80]).unwrap();
    let err = quantize_gguf(&odd.view(), GgufType::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("whole blocks of 32"), "{err}");
}

/// Quantizing with pruning's mask applied while decoding equals quantizing
/// the pruned tensor written out (zero_pruned), codes, parameters and
/// statistics.
#[test]
fn masked_quantization_equals_quantizing_the_pruned_copy() {
    use shears::core::fast::quant::{quantize_masked_into, quantize_view_into};
    use shears::core::reference::mask::zero_pruned;
    let mut seed = 9800;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for spec in SCHEMES {
            for cols in [1, 33, 128, 300] {
                seed += 1;
                let rows = 6;
                let buf = TensorBuf::from_f32(
                    dtype,
                    vec![rows, cols],
                    &test_values(rows * cols, seed, false),
                )
                .unwrap();
                let keep: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 3 != 0) as u8).collect();
                let pruned = TensorBuf {
                    dtype,
                    shape: vec![rows, cols],
                    data: zero_pruned(dtype, &buf.data, &keep),
                };
                let (mut a, mut b) = (Default::default(), Default::default());
                let sa = quantize_view_into(&spec, &pruned.view(), Rounding::Nearest, true, &mut a)
                    .unwrap();
                let sb = quantize_masked_into(
                    &spec,
                    &buf.view(),
                    Some(&keep),
                    Rounding::Nearest,
                    true,
                    &mut b,
                )
                .unwrap();
                assert_eq!(a, b, "{spec:?} {dtype} {cols}");
                assert_eq!(sa, sb, "{spec:?} {dtype} {cols}");
            }
        }
    }
}

/// Magnitude N:M made while quantizing (compress's one pass) gives the mask
/// family's mask and the codes, parameters and statistics of quantizing
/// with that mask, on every dtype, with NaN, infinities and ties inside the
/// groups; a pattern that does not divide the rows is refused.
#[test]
fn pruning_while_quantizing_equals_masking_first() {
    use shears::core::fast::quant::{quantize_keep_into, quantize_masked_into, Keep};
    use shears::core::fast::FastCpu;
    use shears::core::reference::mask::Mask;
    use shears::core::reference::score::{Method, Scorer};
    let scorer = Scorer {
        method: Method::Magnitude,
        norms: None,
        grad: None,
        salt: 0,
    };
    let mut seed = 9900;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for spec in SCHEMES {
            for (n, m, cols) in [(2, 4, 4), (2, 4, 36), (2, 4, 256), (1, 4, 132), (4, 8, 136)] {
                seed += 1;
                let rows = 5;
                let mut values = test_values(rows * cols, seed, true);
                // Ties inside groups: every third value repeats the one before.
                for i in (1..values.len()).step_by(3) {
                    values[i] = -values[i - 1];
                }
                let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values).unwrap();
                let want_mask = FastCpu.nm(&buf.view(), &scorer, n, m).unwrap();
                let (mut a, mut b) = (Default::default(), Default::default());
                let sa = quantize_masked_into(
                    &spec,
                    &buf.view(),
                    Some(&want_mask),
                    Rounding::Nearest,
                    true,
                    &mut a,
                )
                .unwrap();
                let mut mask = vec![9u8; rows * cols];
                let keep = Keep::MagnitudeNm {
                    n,
                    m,
                    out: &mut mask,
                };
                let sb =
                    quantize_keep_into(&spec, &buf.view(), keep, Rounding::Nearest, true, &mut b)
                        .unwrap();
                let what = format!("{n}:{m} {spec:?} {dtype} {cols}");
                assert_eq!(mask, want_mask, "{what}");
                assert_eq!(a, b, "{what}");
                assert_eq!(sa.max_abs.to_bits(), sb.max_abs.to_bits(), "{what}");
                assert_eq!(sa.sum_sq_err.to_bits(), sb.sum_sq_err.to_bits(), "{what}");
            }
        }
    }
    let buf = TensorBuf::from_f32(DType::F32, vec![2, 6], &[1.0; 12]).unwrap();
    let mut mask = vec![0u8; 12];
    let keep = Keep::MagnitudeNm {
        n: 2,
        m: 4,
        out: &mut mask,
    };
    let spec = SCHEMES[0];
    let err = quantize_keep_into(
        &spec,
        &buf.view(),
        keep,
        Rounding::Nearest,
        true,
        &mut Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("groups of 4"), "{err}");
}
