//! MLP training on small synthetic problems, and the model file's checks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::reference::Reference;
use crate::train::metrics::{evaluate, predict};

/// Three well separated Gaussian blobs in 4 dimensions.
fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres = [
        [2.0, 0.0, 0.0, 1.0],
        [0.0, 2.0, 0.0, -1.0],
        [0.0, 0.0, 2.0, 0.0],
    ];
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % 3;
        for &m in &centres[c] {
            x.push(m + rng.random_range(-0.6f32..0.6));
        }
        y.push(c as u32);
    }
    (x, y)
}

fn cfg(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 1e-2,
        seed,
        temperature: 1.0,
        alpha: 1.0,
    }
}

#[test]
fn learns_separable_blobs_and_is_deterministic() {
    let (x, y) = blobs(150, 1);
    let dev = Reference;
    let mut a = Mlp::new(&[4, 8, 3], 3).unwrap();
    let log = train(&dev, &mut a, &x, &y, None, &cfg(20, 5), &mut |_, _| {}).unwrap();
    assert_eq!(log.epoch_losses.len(), 20);
    assert_eq!(log.step_losses.len(), 20 * 150usize.div_ceil(16));
    assert!(
        log.epoch_losses[19] < 0.5 * log.epoch_losses[0],
        "{:?}",
        log.epoch_losses
    );
    let (xt, yt) = blobs(90, 2);
    let m = evaluate(&a.logits(&dev, &xt, 90).unwrap(), &yt, 3);
    assert!(m.accuracy >= 0.95, "accuracy {}", m.accuracy);
    assert_eq!(m.confusion.iter().flatten().sum::<u64>(), 90);

    let mut b = Mlp::new(&[4, 8, 3], 3).unwrap();
    let again = train(&dev, &mut b, &x, &y, None, &cfg(20, 5), &mut |_, _| {}).unwrap();
    assert_eq!(log, again);
    assert_eq!(a, b);
    let mut c = Mlp::new(&[4, 8, 3], 3).unwrap();
    let other = train(&dev, &mut c, &x, &y, None, &cfg(20, 6), &mut |_, _| {}).unwrap();
    assert_ne!(log.step_losses, other.step_losses);
}

#[test]
fn a_student_distilled_from_a_teacher_agrees_with_it() {
    let (x, y) = blobs(150, 3);
    let dev = Reference;
    let mut teacher = Mlp::new(&[4, 16, 3], 1).unwrap();
    train(
        &dev,
        &mut teacher,
        &x,
        &y,
        None,
        &cfg(20, 1),
        &mut |_, _| {},
    )
    .unwrap();
    let tl = teacher.logits(&dev, &x, 150).unwrap();
    let mut student = Mlp::new(&[4, 4, 3], 2).unwrap();
    let c = TrainConfig {
        temperature: 4.0,
        alpha: 0.5,
        ..cfg(20, 2)
    };
    let mut epochs = 0;
    let log = train(&dev, &mut student, &x, &y, Some(&tl), &c, &mut |_, _| {
        epochs += 1
    })
    .unwrap();
    assert_eq!(epochs, 20);
    assert!(log.epoch_losses[19] < log.epoch_losses[0]);
    let sp = predict(&student.logits(&dev, &x, 150).unwrap(), 3);
    let tp = predict(&tl, 3);
    let agree = sp.iter().zip(&tp).filter(|(a, b)| a == b).count();
    assert!(
        agree >= 140,
        "student agrees with the teacher on {agree}/150"
    );
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m = Mlp::new(&[5, 7, 2, 3], 9).unwrap();
    m.save(&path, false, &[]).unwrap();
    assert_eq!(Mlp::load(&path).unwrap(), m);
    assert_eq!((m.inputs(), m.classes(), m.hidden()), (5, 3, vec![7, 2]));
    let e = m.save(&path, false, &[]).unwrap_err().to_string();
    assert!(e.contains("exists"), "{e}");
    m.save(&path, true, &[]).unwrap();
}

/// Tensor names and shapes of a model file.
type Layout<'a> = &'a [(&'a str, Vec<usize>)];

fn write(path: &std::path::Path, tensors: Layout) {
    let bufs: Vec<(String, crate::TensorBuf)> = tensors
        .iter()
        .map(|(n, s)| {
            let len = s.iter().product::<usize>();
            let t = crate::TensorBuf::from_f32(DType::F32, s.clone(), &vec![0.5; len]).unwrap();
            (n.to_string(), t)
        })
        .collect();
    write_file(path, &bufs, true, &[]).unwrap();
}

#[test]
fn load_rejects_broken_models() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let cases: &[(Layout, &str)] = &[
        (
            &[
                ("layers.0.weight", vec![4, 3]),
                ("layers.0.bias", vec![4]),
                ("layers.1.weight", vec![2, 5]),
                ("layers.1.bias", vec![2]),
            ],
            "'layers.1.weight': takes 5 inputs but layers.0.weight has 4 outputs",
        ),
        (
            &[("layers.0.weight", vec![4, 3])],
            "tensor 'layers.0.bias' is missing",
        ),
        (
            &[("layers.0.weight", vec![4, 3]), ("layers.0.bias", vec![3])],
            "'layers.0.bias': shape [3], expected [4]",
        ),
        (
            &[
                ("layers.0.weight", vec![4, 3]),
                ("layers.0.bias", vec![4]),
                ("embed.weight", vec![4, 3]),
            ],
            "'embed.weight': not part of an MLP classifier",
        ),
        (
            &[("layers.0.weight", vec![12]), ("layers.0.bias", vec![4])],
            "is not [out, in]",
        ),
    ];
    for (tensors, want) in cases {
        write(&path, tensors);
        let e = Mlp::load(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{tensors:?}: got '{e}', want '{want}'");
        assert!(e.contains("bad.safetensors"), "{e}");
    }
}

#[test]
fn metrics_count_the_confusion() {
    let logits = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.0, 1.0];
    let m = evaluate(&logits, &[0, 1, 1, 0], 2);
    assert_eq!(m.confusion, vec![vec![1, 1], vec![1, 1]]);
    assert_eq!((m.correct, m.rows), (2, 4));
    assert_eq!(m.accuracy, 0.5);
}
