//! Block-wise distillation of the golden Llama's first block with its MLP
//! pruned by half, on the block's real inputs (token embeddings): the
//! block's held-out output error falls and pruned weights stay zero.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::fast::FastCpu;
use crate::model::{LayerWeights, ModelConfig, Weights};
use crate::Checkpoint;

/// Golden model `family`'s first block as the teacher, and its inputs and
/// outputs (the f64 block's) on `seqs` sequences of 8 seeded tokens'
/// embeddings.
struct Setup {
    cfg: ModelConfig,
    teacher: LayerWeights,
    shape: BlockShape,
    rope: RopeTable,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn setup(family: &str, seqs: usize, seed: u64) -> Setup {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/forward")
        .join(family);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let weights = Weights::open(&ckpt, cfg.clone()).unwrap();
    let teacher = weights.layer(0).unwrap();
    let shape = BlockShape::new(&cfg, 8);
    let rope = RopeTable::new(&cfg, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u32> = (0..seqs * 8)
        .map(|_| rng.random_range(0..cfg.vocab as u32))
        .collect();
    let x = weights.embed(&ids).unwrap();
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let spec = super::super::block::Block::from_layer(&teacher);
    let (y, _) = super::super::block::forward(&shape, &spec, &rope, &xd);
    let y = y.iter().map(|&v| v as f32).collect();
    Setup {
        cfg,
        teacher,
        shape,
        rope,
        x,
        y,
    }
}

#[test]
fn pruned_block_learns_its_teachers_output() {
    let Setup {
        cfg,
        teacher,
        shape,
        rope,
        x,
        y,
    } = setup("llama", 240, 7);
    // The MLP's linears pruned by half (alternate columns), attention kept.
    let masks: Vec<Vec<f32>> = teacher
        .linears()
        .iter()
        .enumerate()
        .map(|(l, w)| {
            (0..w.w.len())
                .map(|i| if l < 4 { 1.0 } else { ((i + i / 7) % 2) as f32 })
                .collect()
        })
        .collect();
    let mut student = teacher.clone();
    for (l, m) in student.linears_mut().into_iter().zip(&masks) {
        l.w.iter_mut().zip(m).for_each(|(w, &m)| *w *= m);
    }
    // The f32 pass's measure of the teacher against its own f64 output.
    let own = block_error(&FastCpu, shape, &rope, &teacher, &x, &y).unwrap();
    assert!(own < 1e-5, "teacher's f32 error {own}");
    let split = 200 * 8 * cfg.hidden;
    let problem = BlockProblem {
        shape,
        rope: &rope,
        x_train: &x[..split],
        y_train: &y[..split],
        x_held: &x[split..],
        y_held: &y[split..],
        block: &student,
        trained: [true; 7],
        masks: [0, 1, 2, 3, 4, 5, 6].map(|i| Some(masks[i].as_slice())),
        grids: [None; 7],
    };
    let cfg = LkdConfig {
        epochs: 12,
        batch_size: 32,
        lr: 0.003,
        seed: 1,
        patience: Some(5),
    };
    let r = distill_block(&FastCpu, &problem, &cfg).unwrap();
    assert!(
        r.error_after < 0.85 * r.error_before,
        "{} -> {}",
        r.error_before,
        r.error_after
    );
    for (w, m) in r.weights.iter().zip(&masks) {
        for (v, &k) in w.iter().zip(m) {
            assert!(k != 0.0 || *v == 0.0, "a pruned weight moved");
        }
    }
    assert!(r.best_epoch >= 1);
}

/// Qwen2's first block with its q and v biases zeroed (weights as the
/// teacher's): training q and v moves each bias back towards the teacher's
/// and lowers the output error; k, held fixed, keeps its bias.
#[test]
fn biases_train_with_their_linears() {
    let Setup {
        cfg,
        teacher,
        shape,
        rope,
        x,
        y,
    } = setup("qwen2", 160, 9);
    let mut student = teacher.clone();
    for (i, l) in student.linears_mut().into_iter().enumerate() {
        if i == 0 || i == 2 {
            let b = l.bias.as_mut().expect("Qwen2 has q/k/v biases");
            b.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let split = 128 * 8 * cfg.hidden;
    // q and v trained, the rest held fixed.
    let problem = BlockProblem {
        shape,
        rope: &rope,
        x_train: &x[..split],
        y_train: &y[..split],
        x_held: &x[split..],
        y_held: &y[split..],
        block: &student,
        trained: [true, false, true, false, false, false, false],
        masks: [None; 7],
        grids: [None; 7],
    };
    let lkd = LkdConfig {
        epochs: 10,
        batch_size: 32,
        lr: 0.003,
        seed: 2,
        patience: Some(5),
    };
    let r = distill_block(&FastCpu, &problem, &lkd).unwrap();
    assert!(
        r.error_after < 0.8 * r.error_before,
        "{} -> {}",
        r.error_before,
        r.error_after
    );
    let dist = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for i in [0, 2] {
        let want = teacher.linears()[i].bias.as_ref().unwrap();
        let got = r.biases[i].as_ref().expect("a trained linear's bias");
        let given = student.linears()[i].bias.as_ref().unwrap();
        assert!(
            dist(got, want) < 0.75 * dist(given, want),
            "bias {i}: {} from the teacher's, {} as given",
            dist(got, want),
            dist(given, want)
        );
    }
    assert!(r.biases[1].is_none() && r.biases[3].is_none());
}
