use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::*;
use crate::reference::quant::quantize_matrix;

/// Inputs whose features share a few latent factors (as activations do),
/// and their Gram matrix.
pub(crate) fn correlated(tokens: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = (n / 4).max(1);
    let a: Vec<f32> = (0..r * n).map(|_| rng.sample(StandardNormal)).collect();
    let scale: Vec<f32> = (0..n)
        .map(|_| (0.7 * rng.sample::<f32, _>(StandardNormal)).exp())
        .collect();
    let mut x = vec![0.0f32; tokens * n];
    for t in 0..tokens {
        let z: Vec<f32> = (0..r).map(|_| rng.sample(StandardNormal)).collect();
        for j in 0..n {
            let s: f32 = (0..r).map(|k| z[k] * a[k * n + j]).sum();
            let e: f32 = rng.sample(StandardNormal);
            x[t * n + j] = (s / (r as f32).sqrt() + 0.1 * e) * scale[j];
        }
    }
    (x.clone(), gram_of(&x, tokens, n))
}

pub(crate) fn gram_of(x: &[f32], tokens: usize, n: usize) -> Vec<f32> {
    let mut g = vec![0.0f32; n * n];
    for t in 0..tokens {
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] += x[t * n + i] * x[t * n + j];
            }
        }
    }
    g
}

pub(crate) fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| 0.02 * rng.sample::<f32, _>(StandardNormal))
        .collect()
}

const W4G8: QuantJob = QuantJob {
    spec: QuantSpec {
        bits: 4,
        group: Some(8),
        symmetric: true,
    },
    rounding: Rounding::Nearest,
    dtype: DType::F32,
    scales: GroupScales::Upfront,
};

fn job(quant: Option<QuantJob>, prune: Option<Sparsify>) -> Job {
    Job {
        quant,
        prune,
        block: 8,
    }
}

#[test]
fn factor_is_the_upper_cholesky_factor_of_the_damped_inverse() {
    let n = 7;
    let (_, g) = correlated(40, n, 1);
    let f = factor(&g, n, 0.01, ActOrder::None).unwrap();
    let h = damped(&g, n, &f.dead, &f.order, 0.01);
    // UᵀU·H = I.
    for i in 0..n {
        for j in 0..n {
            let mut s = 0.0f64;
            for k in 0..n {
                let hinv_ik: f64 = (0..n)
                    .map(|m| f.u[m * n + i] as f64 * f.u[m * n + k] as f64)
                    .sum();
                s += hinv_ik * h[k * n + j];
            }
            let want = (i == j) as u8 as f64;
            assert!((s - want).abs() < 1e-4, "[{i},{j}] {s} vs {want}");
        }
        for j in 0..i {
            assert_eq!(f.u[i * n + j], 0.0, "below the diagonal at [{i},{j}]");
        }
        assert!(f.u[i * n + i] > 0.0);
    }
}

#[test]
fn one_pruned_column_moves_its_weight_by_the_obs_rule() {
    // Two inputs: pruning w0 changes w1 by −w0·[H⁻¹]₀₁/[H⁻¹]₀₀.
    let g = [4.0f32, 2.0, 2.0, 3.0];
    let f = factor(&g, 2, 0.0, ActOrder::None).unwrap();
    let w = [0.5f32, -0.25];
    let keep = [0u8, 1];
    let s = solve(&w, 1, &f, &job(None, Some(Sparsify::Keep(&keep)))).unwrap();
    let det = 4.0 * 3.0 - 2.0 * 2.0;
    let (i00, i01) = (3.0 / det, -2.0 / det);
    let want = -0.25 - 0.5 * i01 / i00;
    assert_eq!(s.values[0], 0.0);
    assert!(
        (s.values[1] - want).abs() < 1e-6,
        "{} vs {want}",
        s.values[1]
    );
}

#[test]
fn a_diagonal_hessian_gives_round_to_nearest() {
    // Uncorrelated inputs: no error to propagate, so GPTQ is RTN exactly.
    let (rows, n) = (5, 24);
    let w = weights(rows, n, 2);
    let g: Vec<f32> = (0..n * n)
        .map(|i| {
            if i / n == i % n {
                1.0 + (i % 7) as f32
            } else {
                0.0
            }
        })
        .collect();
    let f = factor(&g, n, 0.01, ActOrder::None).unwrap();
    let s = solve(&w, rows, &f, &job(Some(W4G8), None)).unwrap();
    let rtn = quantize_matrix(&W4G8.spec, &w, rows, n, DType::F32, Rounding::Nearest);
    assert_eq!(s.quantized.unwrap(), rtn);
}

#[test]
fn gptq_beats_round_to_nearest_on_correlated_inputs() {
    let (rows, n) = (16, 32);
    let (_, g) = correlated(256, n, 3);
    let w = weights(rows, n, 4);
    for order in [ActOrder::None, ActOrder::Static, ActOrder::Group] {
        let f = factor(&g, n, 0.01, order).unwrap();
        let s = solve(&w, rows, &f, &job(Some(W4G8), None)).unwrap();
        let rtn = quantize_matrix(&W4G8.spec, &w, rows, n, DType::F32, Rounding::Nearest);
        let e_rtn = weighted_error(&w, &rtn.dequantized(), rows, &g).unwrap();
        let e = weighted_error(&w, &s.values, rows, &g).unwrap();
        assert!(e < 0.8 * e_rtn, "{order:?}: GPTQ {e} vs RTN {e_rtn}");
        // The values are what the codes decode to.
        let q = s.quantized.unwrap();
        for (i, v) in s.values.iter().enumerate() {
            let (r, c) = (i / n, i % n);
            let grp = match &s.g_idx {
                Some(gi) => gi[c] as usize,
                None => c / q.group,
            };
            let p = q.params[r * q.groups() + grp];
            assert_eq!(*v, dequantize(q.codes[i] as i32, p), "{order:?} at {i}");
        }
        assert_eq!(s.g_idx.is_some(), order == ActOrder::Group);
    }
}

#[test]
fn sparsegpt_prunes_exactly_and_beats_magnitude() {
    let (rows, n) = (16, 32);
    let (_, g) = correlated(256, n, 5);
    let w = weights(rows, n, 6);
    let f = factor(&g, n, 0.01, ActOrder::None).unwrap();
    let s = solve(&w, rows, &f, &job(None, Some(Sparsify::Unstructured(0.5)))).unwrap();
    let keep = s.keep.as_ref().unwrap();
    // Each block of 8 columns loses exactly half of its 16×8 weights.
    for b in 0..n / 8 {
        let pruned = (0..rows * 8)
            .filter(|i| keep[(i / 8) * n + b * 8 + i % 8] == 0)
            .count();
        assert_eq!(pruned, rows * 4, "block {b}");
    }
    for (v, &k) in s.values.iter().zip(keep) {
        if k == 0 {
            assert_eq!(v.to_bits(), 0, "a pruned weight is exactly +0");
        }
    }
    // Magnitude at the same sparsity, per tensor.
    let mut mags: Vec<(f32, usize)> = w.iter().map(|v| v.abs()).zip(0..).collect();
    mags.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut mag = w.clone();
    for &(_, i) in &mags[..w.len() / 2] {
        mag[i] = 0.0;
    }
    let e_mag = weighted_error(&w, &mag, rows, &g).unwrap();
    let e = weighted_error(&w, &s.values, rows, &g).unwrap();
    assert!(e < 0.8 * e_mag, "SparseGPT {e} vs magnitude {e_mag}");
}

#[test]
fn two_four_with_quantization_keeps_pruned_zeros_exact() {
    let (rows, n) = (8, 32);
    let (_, g) = correlated(128, n, 7);
    let w = weights(rows, n, 8);
    let f = factor(&g, n, 0.01, ActOrder::None).unwrap();
    let asym = QuantJob {
        spec: QuantSpec {
            symmetric: false,
            ..W4G8.spec
        },
        ..W4G8
    };
    let pattern = Sparsify::Pattern { n: 2, m: 4 };
    let s = solve(&w, rows, &f, &job(Some(asym), Some(pattern))).unwrap();
    let keep = s.keep.unwrap();
    for (i, grp) in keep.chunks(4).enumerate() {
        assert_eq!(grp.iter().sum::<u8>(), 2, "group {i} keeps 2 of 4");
    }
    let q = s.quantized.unwrap();
    assert_eq!(keep.len(), rows * n);
    for (i, &k) in keep.iter().enumerate() {
        if k == 0 {
            assert_eq!(s.values[i], 0.0, "pruned value at {i}");
            assert_eq!(q.codes[i] as i32, q.params_at(i).zero_point, "code at {i}");
        }
    }
}

#[test]
fn dead_inputs_are_zeroed_and_refusals_name_the_reason() {
    let n = 4;
    let (_, mut g) = correlated(32, n, 9);
    for k in 0..n {
        g[k * n + 2] = 0.0;
        g[2 * n + k] = 0.0;
    }
    let f = factor(&g, n, 0.01, ActOrder::None).unwrap();
    assert_eq!(f.dead, [false, false, true, false]);
    let w = weights(2, n, 10);
    let s = solve(&w, 2, &f, &job(Some(W4G8), None)).unwrap();
    assert_eq!((s.values[2], s.values[n + 2]), (0.0, 0.0));
    let bad = factor(&[1.0, 2.0, 2.0, 1.0], 2, 0.0, ActOrder::None).unwrap_err();
    assert!(bad.to_string().contains("not positive definite"), "{bad}");
    let nan = factor(&[f32::NAN, 0.0, 0.0, 1.0], 2, 0.0, ActOrder::None).unwrap_err();
    assert!(nan.to_string().contains("non-finite"), "{nan}");
    let f = factor(&g, n, 0.01, ActOrder::Static).unwrap();
    let e = solve(&w, 2, &f, &job(None, Some(Sparsify::Unstructured(0.5)))).unwrap_err();
    assert!(e.to_string().contains("actorder"), "{e}");
}
