//! Layer-wise distillation on synthetic layers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::*;
use crate::reference::quant::qparams;
use crate::reference::Reference;

/// The relative output error a student must reach when the teacher is
/// exactly representable under its mask (issue 5).
const REPRESENTABLE_ERROR: f64 = 1e-4;

fn gauss(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Rows z·(I + A) with z and A Gaussian: features that share components.
fn correlated(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Vec<f32> {
    let a = gauss(rng, cols * cols);
    let z = gauss(rng, rows * cols);
    let mut x = vec![0.0; rows * cols];
    for r in 0..rows {
        for j in 0..cols {
            let mut acc = z[r * cols + j];
            for k in 0..cols {
                acc += 0.3 * z[r * cols + k] * a[k * cols + j];
            }
            x[r * cols + j] = acc;
        }
    }
    x
}

#[test]
fn representable_teacher_is_recovered_under_the_mask() {
    let (inp, out) = (16, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mask: Vec<f32> = (0..inp * out)
        .map(|i| ((i * 7 + i / 5) % 2) as f32)
        .collect();
    let teacher: Vec<f32> = gauss(&mut rng, inp * out)
        .iter()
        .zip(&mask)
        .map(|(w, m)| w * m)
        .collect();
    let bias = gauss(&mut rng, out);
    // A student that starts far off, with weights where the mask is 0 too
    // (they must be zeroed and stay so).
    let student = gauss(&mut rng, inp * out);
    let x_train = gauss(&mut rng, 256 * inp);
    let x_held = gauss(&mut rng, 64 * inp);
    let problem = LayerProblem {
        inputs: inp,
        outputs: out,
        x_train: &x_train,
        x_held: &x_held,
        teacher_weight: &teacher,
        teacher_bias: Some(&bias),
        student_weight: &student,
        student_bias: Some(&vec![0.0; out]),
        mask: Some(&mask),
        grid: None,
        targets: None,
    };
    let cfg = LkdConfig {
        epochs: 150,
        batch_size: 64,
        lr: 0.05,
        seed: 3,
        patience: None,
    };
    let r = distill_layer(&Reference, &problem, &cfg).unwrap();
    assert!(r.error_before > 0.5, "before {}", r.error_before);
    assert!(
        r.error_after < REPRESENTABLE_ERROR,
        "relative error after {} (before {})",
        r.error_after,
        r.error_before
    );
    for (i, (&w, &m)) in r.weight.iter().zip(&mask).enumerate() {
        if m == 0.0 {
            assert_eq!(w.to_bits(), 0, "pruned weight {i} is {w}");
        }
    }
    assert_eq!(r.losses.len(), 150 * 4);
    assert_eq!(r, distill_layer(&Reference, &problem, &cfg).unwrap());
}

#[test]
fn quantized_student_stays_on_its_grid_and_improves() {
    let (inp, out, group) = (32, 6, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let teacher = gauss(&mut rng, inp * out);
    // Student: the teacher magnitude-pruned by half per row, its grid fixed
    // from the pruned weight (what prune + quantize produce).
    let mut mask = vec![1.0f32; inp * out];
    for r in 0..out {
        let row = &teacher[r * inp..(r + 1) * inp];
        let mut idx: Vec<usize> = (0..inp).collect();
        idx.sort_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()));
        for &c in &idx[..inp / 2] {
            mask[r * inp + c] = 0.0;
        }
    }
    let pruned: Vec<f32> = teacher.iter().zip(&mask).map(|(w, m)| w * m).collect();
    let spec = QuantSpec {
        bits: 4,
        group: Some(group),
        symmetric: false,
    };
    let (mut scales, mut zps) = (Vec::new(), Vec::new());
    for g in pruned.chunks(group) {
        let p = qparams(&spec, g, DType::F32);
        scales.push(p.scale);
        zps.push(p.zero_point as f32);
    }
    let grid = Grid {
        shape: GridShape::int(4, group),
        scales,
        zero_points: Some(zps),
    };
    // Correlated inputs (as real activations are): with white inputs the
    // pruned weight is already the best one under its mask.
    let all = correlated(&mut rng, 640, inp);
    let (x_train, x_held) = all.split_at(512 * inp);
    let problem = LayerProblem {
        inputs: inp,
        outputs: out,
        x_train,
        x_held,
        teacher_weight: &teacher,
        teacher_bias: None,
        student_weight: &pruned,
        student_bias: None,
        mask: Some(&mask),
        grid: Some(&grid),
        targets: None,
    };
    let cfg = LkdConfig {
        epochs: 20,
        batch_size: 64,
        lr: 1e-2,
        seed: 4,
        patience: None,
    };
    let r = distill_layer(&Reference, &problem, &cfg).unwrap();
    assert!(
        r.error_after < 0.9 * r.error_before,
        "before {} after {}",
        r.error_before,
        r.error_after
    );
    let codes = r.codes.as_ref().unwrap();
    let deq = grid.dequantize(codes, out, inp);
    let mut fq = vec![0.0; inp * out];
    Reference
        .fake_quant(
            &r.weight,
            &grid.scales,
            grid.zero_points.as_ref(),
            &mut fq,
            out,
            inp,
            grid.shape,
        )
        .unwrap();
    assert_eq!(deq, fq, "codes and fake quantization disagree");
    for i in 0..inp * out {
        assert!((-8..=7).contains(&codes[i]), "code {} at {i}", codes[i]);
        if mask[i] == 0.0 {
            assert_eq!(deq[i], 0.0, "pruned weight {i} dequantizes to {}", deq[i]);
        }
    }
}

#[test]
fn mismatched_shapes_are_errors() {
    let x = vec![0.0; 8];
    let w = vec![0.0; 8];
    let problem = LayerProblem {
        inputs: 4,
        outputs: 2,
        x_train: &x,
        x_held: &x,
        teacher_weight: &w,
        teacher_bias: None,
        student_weight: &w[..6],
        student_bias: None,
        mask: None,
        grid: None,
        targets: None,
    };
    let cfg = LkdConfig {
        epochs: 1,
        batch_size: 4,
        lr: 1e-3,
        seed: 0,
        patience: None,
    };
    let e = distill_layer(&Reference, &problem, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the student weight has 6 values, expected 8"),
        "{e}"
    );
}

#[test]
fn held_out_error_measures_the_given_weight() {
    let (inp, out) = (5, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let teacher = gauss(&mut rng, inp * out);
    let bias = gauss(&mut rng, out);
    let x = gauss(&mut rng, 7 * inp);
    let problem = LayerProblem {
        inputs: inp,
        outputs: out,
        x_train: &x,
        x_held: &x,
        teacher_weight: &teacher,
        teacher_bias: Some(&bias),
        student_weight: &teacher,
        student_bias: None,
        mask: None,
        grid: None,
        targets: None,
    };
    let e = |w: &[f32], b: Option<&[f32]>| held_out_error(&Reference, &problem, w, b).unwrap();
    assert_eq!(e(&teacher, Some(&bias)), 0.0);
    assert!(e(&teacher, None) > 0.0);
    let half: Vec<f32> = teacher.iter().map(|w| 0.5 * w).collect();
    let zero_bias = vec![0.0; out];
    let (t_no_bias, h_no_bias) = (
        LayerProblem {
            teacher_bias: None,
            ..problem
        },
        &half,
    );
    let r = held_out_error(&Reference, &t_no_bias, h_no_bias, Some(&zero_bias)).unwrap();
    assert!(
        (r - 0.5).abs() < 1e-6,
        "half the weight: relative error {r}"
    );
}

/// A layer whose teacher saw other inputs than the student: given targets
/// replace the teacher's weight, the same targets the weight would make
/// give the same result bit for bit, and targets from inputs the student
/// does not see still pull it toward them.
#[test]
fn given_targets_stand_in_for_the_teacher() {
    let (inp, out) = (12, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let teacher = gauss(&mut rng, inp * out);
    let bias = gauss(&mut rng, out);
    let student: Vec<f32> = teacher.iter().map(|w| w * 0.7).collect();
    let x = correlated(&mut rng, 128, inp);
    let (x_train, x_held) = x.split_at(96 * inp);
    let (tw, tb) = (&teacher, &bias);
    let outputs = |x: &[f32]| -> Vec<f32> {
        x.chunks(inp)
            .flat_map(|r| {
                (0..out).map(move |o| {
                    let w = &tw[o * inp..(o + 1) * inp];
                    r.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + tb[o]
                })
            })
            .collect()
    };
    let base = LayerProblem {
        inputs: inp,
        outputs: out,
        x_train,
        x_held,
        teacher_weight: &teacher,
        teacher_bias: Some(&bias),
        student_weight: &student,
        student_bias: Some(&vec![0.0; out]),
        mask: None,
        grid: None,
        targets: None,
    };
    let cfg = LkdConfig {
        epochs: 60,
        batch_size: 16,
        lr: 0.05,
        seed: 5,
        patience: None,
    };
    let (train, held) = (outputs(x_train), outputs(x_held));
    let given = LayerProblem {
        teacher_weight: &[],
        teacher_bias: None,
        targets: Some(Targets {
            train: &train,
            held: &held,
        }),
        ..base
    };
    let a = distill_layer(&Reference, &base, &cfg).unwrap();
    let b = distill_layer(&Reference, &given, &cfg).unwrap();
    // The reference's products sum in the same order as `outputs`.
    assert!((a.error_before - b.error_before).abs() < 1e-6);
    assert!(b.error_after < 0.5 * b.error_before, "{b:?}");
    let short = LayerProblem {
        targets: Some(Targets {
            train: &train[..out],
            held: &held,
        }),
        ..given
    };
    let err = distill_layer(&Reference, &short, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("training targets"), "{err}");
}

/// With patience, training stops once the held-out error stops falling and
/// keeps the best epoch; when no epoch beats the student as given (a
/// learning rate that diverges), the result is that student, unchanged.
#[test]
fn early_stopping_keeps_the_best_epoch() {
    let (inp, out) = (16, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let teacher = gauss(&mut rng, inp * out);
    let mask: Vec<f32> = (0..inp * out).map(|i| (i % 2) as f32).collect();
    let student: Vec<f32> = teacher.iter().zip(&mask).map(|(w, m)| w * m).collect();
    // One draw, so training and held-out rows share their correlations;
    // few training rows, so fitting them closely stops generalizing.
    let x = correlated(&mut rng, 74, inp);
    let (x_train, x_held) = x.split_at(10 * inp);
    let problem = LayerProblem {
        inputs: inp,
        outputs: out,
        x_train,
        x_held,
        teacher_weight: &teacher,
        teacher_bias: None,
        student_weight: &student,
        student_bias: None,
        mask: Some(&mask),
        grid: None,
        targets: None,
    };
    let cfg = LkdConfig {
        epochs: 200,
        batch_size: 5,
        lr: 0.01,
        seed: 6,
        patience: Some(3),
    };
    let r = distill_layer(&Reference, &problem, &cfg).unwrap();
    assert!(
        r.best_epoch >= 1 && r.best_epoch <= r.epochs,
        "{} of {}",
        r.best_epoch,
        r.epochs
    );
    assert!(r.epochs < 200, "never stopped");
    assert!(r.epochs - r.best_epoch == 3);
    let e = held_out_error(&Reference, &problem, &r.weight, None).unwrap();
    assert_eq!(e, r.error_after);
    assert!(r.error_after < r.error_before);
    let wild = LkdConfig {
        lr: 1e6,
        epochs: 5,
        ..cfg
    };
    let r = distill_layer(&Reference, &problem, &wild).unwrap();
    assert_eq!(r.best_epoch, 0);
    assert_eq!(r.weight, student);
    assert_eq!(r.error_after, r.error_before);
}
