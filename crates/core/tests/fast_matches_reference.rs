//! The fast CPU path (threads, vectorised loops) against the reference: bit
//! for bit on every output, for random shapes, dtypes and values.

use proptest::prelude::*;
use shears_core::fast::importance::FastCpu;
use shears_core::reference::importance::{Importance, Reference, TILE};
use shears_core::{DType, TensorBuf};

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -100.0f32..100.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => Just(1.0e-12f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
    ]
}

fn same_bits(a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert_eq!(x.to_bits(), y.to_bits(), "index {}: {} vs {}", i, x, y);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fast_equals_reference(
        dtype in dtype(),
        rows in 1usize..600,
        cols in 1usize..300,
        seed in prop::collection::vec(value(), 64),
    ) {
        let n = rows * cols;
        let values: Vec<f32> = (0..n).map(|i| seed[i % 64] * (1.0 + (i % 7) as f32 * 0.01)).collect();
        let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values).unwrap();
        let w = buf.view();
        let (r, f) = (Reference, FastCpu);
        same_bits(&r.abs(&w).unwrap(), &f.abs(&w).unwrap())?;
        same_bits(&r.square(&w).unwrap(), &f.square(&w).unwrap())?;
        same_bits(&r.row_sumsq(&w).unwrap(), &f.row_sumsq(&w).unwrap())?;
        same_bits(&r.col_sumsq(&w).unwrap(), &f.col_sumsq(&w).unwrap())?;
        prop_assert_eq!(r.stats(&w).unwrap(), f.stats(&w).unwrap());
    }
}

#[test]
fn multi_tile_stats_and_tall_columns() {
    // Several tiles and more than 256 rows, so lanes wrap and tiles combine.
    let rows = 3 * TILE / 100 + 7;
    let values: Vec<f32> = (0..rows * 100)
        .map(|i| ((i * 7919) % 2003) as f32 - 1001.5)
        .collect();
    let buf = TensorBuf::from_f32(DType::F32, vec![rows, 100], &values).unwrap();
    let w = buf.view();
    assert_eq!(Reference.stats(&w).unwrap(), FastCpu.stats(&w).unwrap());
    assert_eq!(
        Reference.col_sumsq(&w).unwrap(),
        FastCpu.col_sumsq(&w).unwrap()
    );
    let s = Reference.stats(&w).unwrap();
    let exact: f64 = values.iter().map(|&v| v as f64).sum();
    assert!(
        (s.sum - exact).abs() <= 1e-6 * exact.abs().max(1.0) * 100.0,
        "{} vs {exact}",
        s.sum
    );
}

#[test]
fn non_float_dtypes_are_refused() {
    let buf = TensorBuf {
        dtype: DType::I8,
        shape: vec![4],
        data: vec![1, 2, 3, 4],
    };
    let err = FastCpu.stats(&buf.view()).unwrap_err().to_string();
    assert!(err.contains("I8"), "{err}");
}

mod quant {
    use proptest::prelude::*;
    use shears_core::fast::quant::quantize_view;
    use shears_core::reference::quant::{quantize_matrix, QuantSpec, Rounding};
    use shears_core::{DType, TensorBuf};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The parallel quantizer equals the reference, codes and parameters.
        #[test]
        fn fast_quantize_equals_reference(
            dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)],
            rows in 1usize..20,
            groups in 1usize..4,
            (bits, group) in prop_oneof![Just((8u32, None)), Just((4, Some(32usize))), Just((4, Some(8)))],
            symmetric in any::<bool>(),
            ct in any::<bool>(),
            seed in any::<u32>(),
        ) {
            let cols = groups * group.unwrap_or(24);
            let vals: Vec<f32> = (0..rows * cols)
                .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.4)
                .collect();
            let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &vals).unwrap();
            let x = buf.view().to_f32().unwrap();
            let spec = QuantSpec { bits, group, symmetric };
            let rounding = if ct { Rounding::CompressedTensors } else { Rounding::Nearest };
            let want = quantize_matrix(&spec, &x, rows, cols, dtype, rounding);
            let got = quantize_view(&spec, &buf.view(), rounding).unwrap();
            prop_assert_eq!(want, got);
        }
    }
}

mod dequant_matmul {
    use proptest::prelude::*;
    use shears_core::fast::matmul::FastCpu;
    use shears_core::reference::matmul::{
        probe_inputs, Matmul, PackedParts, Reference, MATMUL_RTOL,
    };
    use shears_core::reference::quant::{quantize_matrix, QuantSpec, Rounding};
    use shears_core::{DType, TensorBuf};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The reference reads packed codes exactly as dequantization
        /// defines them (bit-equal to the dense product of the dequantized
        /// weight), and the fast path agrees within MATMUL_RTOL.
        #[test]
        fn dequant_matmul_matches_dense_product(
            rows in 1usize..24,
            cols in 1usize..80,
            p in 1usize..6,
            (bits, group) in prop_oneof![Just((8u32, None)), Just((4, None)), Just((4, Some(16usize))), Just((8, Some(8)))],
            symmetric in any::<bool>(),
            seed in any::<u32>(),
        ) {
            let vals: Vec<f32> = (0..rows * cols)
                .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.4)
                .collect();
            let spec = QuantSpec { bits, group, symmetric };
            let q = quantize_matrix(&spec, &vals, rows, cols, DType::F32, Rounding::Nearest);
            let parts = PackedParts::from_quantized(&q, bits, symmetric);
            let x = probe_inputs(p, cols, seed as u64);
            let want = Reference.dequant_matmul(&x, p, &parts.view()).unwrap();
            let dense = TensorBuf::from_f32(DType::F32, vec![rows, cols], &q.dequantized()).unwrap();
            let exact = Reference.masked_matmul(&x, p, &dense.view(), None).unwrap();
            prop_assert_eq!(&want, &exact);
            let got = FastCpu.dequant_matmul(&x, p, &parts.view()).unwrap();
            let deq = q.dequantized();
            for i in 0..p {
                for o in 0..rows {
                    let scale: f32 = (0..cols).map(|k| (x[i * cols + k] * deq[o * cols + k]).abs()).sum();
                    let (a, b) = (want[i * rows + o], got[i * rows + o]);
                    prop_assert!((a - b).abs() <= MATMUL_RTOL * scale + 1e-30, "[{}, {}]: {} vs {}", i, o, a, b);
                }
            }
        }
    }

    #[test]
    fn mismatched_parts_are_refused() {
        let spec = QuantSpec {
            bits: 4,
            group: Some(8),
            symmetric: true,
        };
        let q = quantize_matrix(&spec, &[0.5; 32], 2, 16, DType::F32, Rounding::Nearest);
        let mut parts = PackedParts::from_quantized(&q, 4, true);
        parts.scales.pop();
        let err = Reference
            .dequant_matmul(&[0.0; 16], 1, &parts.view())
            .unwrap_err();
        assert!(err.to_string().contains("scales hold 3 values"), "{err}");
    }
}

mod packing {
    use proptest::prelude::*;
    use shears_core::fast::quant::pack_rows_le;
    use shears_core::reference::quant::pack_rows;

    proptest! {
        /// The parallel byte packer writes the reference's words, little-endian.
        #[test]
        fn pack_rows_le_equals_reference_words(
            rows in 1usize..6,
            cols in 1usize..40,
            bits in prop_oneof![Just(4u32), Just(8u32)],
            seed in any::<u64>(),
        ) {
            let lim = 1i64 << (bits - 1);
            let codes: Vec<i8> = (0..rows * cols)
                .map(|i| ((seed.wrapping_mul(i as u64 + 1) >> 7) as i64 % (2 * lim) - lim) as i8)
                .collect();
            let want: Vec<u8> = pack_rows(&codes, rows, cols, bits)
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            prop_assert_eq!(pack_rows_le(&codes, rows, cols, bits), want);
        }
    }
}
