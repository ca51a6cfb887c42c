//! Finite-difference checks of every backward pass of the CPU reference,
//! Adam's mask and fake quantization's grid.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::reference::quant::{self, QuantSpec, Rounding};
use crate::reference::Reference;
use crate::train::device::{AdamStep, Device, GridShape};
use crate::DType;

/// Central-difference step: large enough that f32 rounding of the loss
/// (about 1e-7 relative) stays well below the difference it measures.
const FD_STEP: f32 = 1e-2;
/// Tolerance of a finite-difference gradient against the analytic one:
/// the O(h²) truncation error plus f32 rounding of the loss, |Δ| ≤
/// FD_ATOL + FD_RTOL·|g|.
const FD_ATOL: f64 = 2e-3;
const FD_RTOL: f64 = 2e-2;

fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Checks `analytic` against central differences of `loss` around `x`.
fn check_grad(what: &str, x: &[f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + FD_STEP;
        let up = loss(&xp);
        xp[i] = x[i] - FD_STEP;
        let down = loss(&xp);
        xp[i] = x[i];
        let fd = (up - down) / (2.0 * FD_STEP as f64);
        let a = analytic[i] as f64;
        let tol = FD_ATOL + FD_RTOL * a.abs();
        assert!(
            (fd - a).abs() <= tol,
            "{what}: index {i}: analytic {a}, finite difference {fd}, tolerance {tol}"
        );
    }
}

/// Σ g ⊙ y in f64: a scalar loss whose gradient in y is g.
fn dot(g: &[f32], y: &[f32]) -> f64 {
    g.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[test]
fn matmul_matches_f64_in_every_layout() {
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (m, k, n) in [(1, 1, 1), (2, 3, 5), (7, 5, 3), (3, 7, 2)] {
        let a = randn(&mut rng, m * k);
        let b = randn(&mut rng, k * n);
        // Row-major op(a) [m, k], op(b) [k, n] and their transposes.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let aa = if ta { at.clone() } else { a.clone() };
            let bb = if tb { bt.clone() } else { b.clone() };
            let mut c = vec![f32::NAN; m * n];
            dev.matmul(&aa, &bb, &mut c, m, k, n, ta, tb).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                        .sum();
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5,
                        "({m},{k},{n}) ta={ta} tb={tb} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn linear_layer_gradients() {
    // y = x·wᵀ + b with x [r, i], w [o, i]; the three matmuls of training.
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (r, i, o) in [(1, 1, 1), (2, 3, 5), (5, 7, 3)] {
        let x = randn(&mut rng, r * i);
        let w = randn(&mut rng, o * i);
        let b = randn(&mut rng, o);
        let g = randn(&mut rng, r * o);
        let forward = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; r * o];
            dev.matmul(&x.to_vec(), &w.to_vec(), &mut y, r, i, o, false, true)
                .unwrap();
            dev.add_bias(&mut y, &b.to_vec(), r, o).unwrap();
            dot(&g, &y)
        };
        let mut dw = vec![0.0; o * i];
        dev.matmul(&g, &x, &mut dw, o, r, i, true, false).unwrap();
        let mut dx = vec![0.0; r * i];
        dev.matmul(&g, &w, &mut dx, r, o, i, false, false).unwrap();
        let mut db = vec![0.0; o];
        dev.bias_grad(&g, &mut db, r, o).unwrap();
        check_grad("dW", &w, &dw, |w| forward(&x, w, &b));
        check_grad("dX", &x, &dx, |x| forward(x, &w, &b));
        check_grad("db", &b, &db, |b| forward(&x, &w, b));
    }
}

#[test]
fn activation_gradients() {
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 7;
    // Keep ReLU's inputs away from its kink at 0.
    let z: Vec<f32> = randn(&mut rng, n)
        .into_iter()
        .map(|v| if v.abs() < 0.1 { v + 0.3 } else { v } * 2.0)
        .collect();
    let g = randn(&mut rng, n);
    let mut dz = vec![0.0; n];
    dev.relu_backward(&z, &g, &mut dz, n).unwrap();
    check_grad("relu", &z, &dz, |z| {
        let mut h = vec![0.0; n];
        dev.relu(&z.to_vec(), &mut h, n).unwrap();
        dot(&g, &h)
    });
    dev.gelu_backward(&z, &g, &mut dz, n).unwrap();
    check_grad("gelu", &z, &dz, |z| {
        let mut h = vec![0.0; n];
        dev.gelu(&z.to_vec(), &mut h, n).unwrap();
        dot(&g, &h)
    });
    let mut h = vec![0.0; 3];
    dev.gelu(&vec![0.0, 1.0, -1.0], &mut h, 3).unwrap();
    assert_eq!(h[0], 0.0);
    assert!((h[1] - 0.841_192).abs() < 1e-5, "gelu(1) = {}", h[1]);
    assert!((h[2] + 0.158_808).abs() < 1e-5, "gelu(-1) = {}", h[2]);
}

#[test]
fn softmax_rows_sum_to_one_and_sharpen_with_low_temperature() {
    let dev = Reference;
    let z = vec![1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0];
    let mut p = vec![0.0; 6];
    dev.softmax(&z, &mut p, 2, 3, 1.0).unwrap();
    for row in p.chunks(3) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-6, "row sums to {s}");
    }
    assert_eq!(&p[3..], &[1.0, 0.0, 0.0]);
    let mut soft = vec![0.0; 6];
    dev.softmax(&z, &mut soft, 2, 3, 4.0).unwrap();
    assert!(soft[2] < p[2] && soft[0] > p[0]);
}

#[test]
fn classification_loss_gradients() {
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (rows, cols) in [(1, 2), (3, 5), (5, 7)] {
        let z: Vec<f32> = randn(&mut rng, rows * cols)
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let tz: Vec<f32> = randn(&mut rng, rows * cols)
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let labels: Vec<f32> = (0..rows).map(|r| (r * 3 % cols) as f32).collect();
        for (teacher, t, alpha) in [(false, 1.0, 1.0), (true, 4.0, 0.5), (true, 2.0, 0.0)] {
            let tref = teacher.then_some(&tz);
            let mut dz = vec![0.0; rows * cols];
            dev.classification_loss(&z, tref, &labels, &mut dz, rows, cols, t, alpha)
                .unwrap();
            check_grad(&format!("loss T={t} α={alpha}"), &z, &dz, |z| {
                let mut scratch = vec![0.0; rows * cols];
                dev.classification_loss(
                    &z.to_vec(),
                    tref,
                    &labels,
                    &mut scratch,
                    rows,
                    cols,
                    t,
                    alpha,
                )
                .unwrap()
            });
        }
    }
}

#[test]
fn kl_is_zero_when_student_equals_teacher() {
    let dev = Reference;
    let z = vec![0.5, -1.0, 2.0, 0.0];
    let mut dz = vec![0.0; 4];
    let loss = dev
        .classification_loss(&z, Some(&z), &vec![0.0], &mut dz, 1, 4, 3.0, 0.0)
        .unwrap();
    assert!(loss.abs() < 1e-6, "KL(p‖p) = {loss}");
    assert!(dz.iter().all(|d| d.abs() < 1e-6));
}

#[test]
fn out_of_range_label_is_an_error() {
    let dev = Reference;
    let mut dz = vec![0.0; 2];
    let err = dev
        .classification_loss(&vec![0.0, 1.0], None, &vec![2.0], &mut dz, 1, 2, 1.0, 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("label 2"), "{err}");
}

#[test]
fn mse_gradient() {
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (rows, cols) in [(1, 1), (3, 5), (7, 2)] {
        let y = randn(&mut rng, rows * cols);
        let t = randn(&mut rng, rows * cols);
        let mut dy = vec![0.0; rows * cols];
        let loss = dev.mse(&y, &t, &mut dy, rows, cols).unwrap();
        let want: f64 = y
            .iter()
            .zip(&t)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / (rows * cols) as f64;
        assert!((loss - want).abs() <= 1e-6 * want.max(1.0));
        check_grad("mse", &y, &dy, |y| {
            let mut scratch = vec![0.0; rows * cols];
            dev.mse(&y.to_vec(), &t, &mut scratch, rows, cols).unwrap()
        });
    }
}

#[test]
fn adam_keeps_masked_weights_exactly_zero() {
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 33;
    let mut w = randn(&mut rng, n);
    let w0 = w.clone();
    let mask: Vec<f32> = (0..n).map(|i| (i % 3 != 0) as u32 as f32).collect();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for t in 1..=20 {
        let g = randn(&mut rng, n);
        let s = AdamStep::at(1e-2, 0.9, 0.999, 1e-8, t);
        dev.adam(&mut w, &g, &mut m, &mut v, Some(&mask), n, s)
            .unwrap();
        for i in 0..n {
            if mask[i] == 0.0 {
                assert_eq!(w[i].to_bits(), 0, "weight {i} at step {t}");
                assert_eq!((m[i], v[i]), (0.0, 0.0), "moments {i} at step {t}");
            }
        }
    }
    assert!((0..n).any(|i| mask[i] == 1.0 && w[i] != w0[i]));
}

#[test]
fn adam_first_step_moves_each_weight_by_lr() {
    // With bias correction, step 1 is w − lr·g/(|g| + eps) ≈ w − lr·sign(g).
    let dev = Reference;
    let mut w = vec![1.0f32, -2.0, 0.5];
    let g = vec![0.3f32, -4.0, 1e-3];
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    let s = AdamStep::at(0.1, 0.9, 0.999, 1e-8, 1);
    dev.adam(&mut w, &g, &mut m, &mut v, None, 3, s).unwrap();
    for (got, want) in w.iter().zip([0.9f32, -1.9, 0.4]) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn fake_quant_lands_on_the_reference_grid() {
    let dev = Reference;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (rows, cols, bits, group, symmetric) in [
        (3, 8, 8, 8, true),
        (5, 12, 4, 4, true),
        (2, 7, 4, 3, false),
        (1, 5, 8, 2, false),
    ] {
        let spec = QuantSpec {
            bits,
            group: Some(group),
            symmetric,
        };
        let mut w = randn(&mut rng, rows * cols);
        for i in (0..w.len()).step_by(4) {
            w[i] = 0.0;
        }
        let groups = cols.div_ceil(group);
        let mut params = Vec::new();
        for r in 0..rows {
            for gi in 0..groups {
                let lo = r * cols + gi * group;
                let hi = (lo + group).min((r + 1) * cols);
                params.push(quant::qparams(&spec, &w[lo..hi], DType::F32));
            }
        }
        let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
        let zps: Vec<f32> = params.iter().map(|p| p.zero_point as f32).collect();
        // Move the weights off their original values, so clamping and
        // rounding both happen.
        let moved: Vec<f32> = w
            .iter()
            .map(|&x| if x == 0.0 { 0.0 } else { x * 1.3 })
            .collect();
        let mut wq = vec![f32::NAN; rows * cols];
        let zp = (!symmetric).then_some(&zps);
        dev.fake_quant(
            &moved,
            &scales,
            zp,
            &mut wq,
            rows,
            cols,
            GridShape::int(bits, group),
        )
        .unwrap();
        for i in 0..rows * cols {
            let p = params[(i / cols) * groups + (i % cols) / group];
            let q = quant::quantize(&spec, moved[i], p, Rounding::Nearest, DType::F32);
            let want = quant::dequantize(q, p);
            assert_eq!(
                wq[i].to_bits(),
                want.to_bits(),
                "index {i}: {} vs {want}",
                wq[i]
            );
            if moved[i] == 0.0 {
                assert_eq!(wq[i], 0.0, "zero at {i} did not stay zero");
            }
        }
    }
}

/// A float grid made of a scheme's own scales gives, on the f32 weight the
/// scheme quantized, that scheme's codes (FP8 per channel and in blocks,
/// NVFP4, MXFP4), and fake quantization gives the values those codes
/// stand for; re-encoding the values keeps them.
#[test]
fn float_grids_reproduce_the_schemes_codes() {
    use crate::reference::{fp4, fp8};
    use crate::train::{Grid, Levels};
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let (rows, cols) = (6, 64);
    let mut w = randn(&mut rng, rows * cols);
    // Outliers past the grids' ranges in their groups, exact zeros, and a
    // negative value that rounds to zero.
    w[5] *= 40.0;
    w[70] = 0.0;
    w[200] = -1e-6;
    let fp8_grid = |q: &fp8::Fp8, group: usize| {
        let groups = cols.div_ceil(group);
        let scales = (0..rows * groups)
            .map(|i| q.scale_of(i / groups, (i % groups) * group))
            .collect();
        (scales, q.codes.clone(), q.dequantized())
    };
    let fp4_grid = |q: &fp4::Fp4| {
        let groups = cols / q.group;
        let scales = (0..rows * groups)
            .map(|i| q.scale(i / groups, i % groups))
            .collect();
        (scales, q.codes.clone(), q.dequantized())
    };
    let per_channel = fp8::quantize_fp8(&w, rows, cols, None, DType::F32, Rounding::Nearest);
    let blocks = fp8::quantize_fp8(&w, rows, cols, Some(16), DType::F32, Rounding::Nearest);
    let gs = fp4::nv_global_scale(w.iter().fold(0.0f32, |m, v| m.max(v.abs())), DType::F32);
    let cases = [
        ("fp8", Levels::E4M3, cols, fp8_grid(&per_channel, cols)),
        ("fp8-block", Levels::E4M3, 16, fp8_grid(&blocks, 16)),
        (
            "nvfp4",
            Levels::E2M1,
            16,
            fp4_grid(&fp4::quantize_nvfp4(&w, rows, cols, gs, DType::F32)),
        ),
        (
            "mxfp4",
            Levels::E2M1,
            32,
            fp4_grid(&fp4::quantize_mxfp4(&w, rows, cols, DType::F32)),
        ),
    ];
    for (name, levels, group, (scales, want_codes, want_values)) in cases {
        let grid = Grid {
            shape: GridShape { levels, group },
            scales,
            zero_points: None,
        };
        let codes = grid.codes(&w, rows, cols);
        let got: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        assert_eq!(got, want_codes, "{name}: codes");
        let values = grid.dequantize(&codes, rows, cols);
        assert_eq!(values, want_values, "{name}: values");
        let mut wq = vec![f32::NAN; rows * cols];
        Reference
            .fake_quant(&w, &grid.scales, None, &mut wq, rows, cols, grid.shape)
            .unwrap();
        assert_eq!(wq, want_values, "{name}: fake quantization");
        let again = grid.dequantize(&grid.codes(&values, rows, cols), rows, cols);
        assert_eq!(again, values, "{name}: re-encoding moved a value");
    }
    // A NaN weight fake-quantizes to 0 on a float grid.
    for levels in [Levels::E4M3, Levels::E2M1] {
        let mut out = vec![1.0f32];
        let grid = GridShape { levels, group: 1 };
        Reference
            .fake_quant(&vec![f32::NAN], &vec![0.5], None, &mut out, 1, 1, grid)
            .unwrap();
        assert_eq!(out[0].to_bits(), 0, "{levels:?}");
    }
}
