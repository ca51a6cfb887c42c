//! The f64 block against the model's forward pass, and its gradients
//! against finite differences, on the golden models' first layer (Llama,
//! Qwen2 with q/k/v biases, Qwen3 with q/k norms).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::model::{ModelConfig, NoCapture, Runner, Weights};
use crate::reference::Reference;
use crate::Checkpoint;

const FAMILIES: [&str; 3] = ["llama", "qwen2", "qwen3"];
const SEQ: usize = 6;

fn golden(family: &str) -> (Checkpoint, ModelConfig) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/forward")
        .join(family);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    (Checkpoint::open(&dir).unwrap(), cfg)
}

fn states(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

#[test]
fn forward_matches_the_models_layer() {
    for family in FAMILIES {
        let (ckpt, cfg) = golden(family);
        let weights = Weights::open(&ckpt, cfg.clone()).unwrap();
        let lw = weights.layer(0).unwrap();
        let runner = Runner::new(&weights, &Reference, SEQ).unwrap();
        let x = states(2 * SEQ * cfg.hidden, 1);
        let mut want = x.clone();
        runner.layer(&lw, &mut want, &mut NoCapture).unwrap();
        let t = RopeTable::new(&cfg, SEQ);
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (got, _) = forward(
            &BlockShape::new(&cfg, SEQ),
            &Block::from_layer(&lw),
            &t,
            &xd,
        );
        let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        for (i, (&a, &b)) in want.iter().zip(&got).enumerate() {
            assert!(
                (a as f64 - b).abs() <= 1e-4 * max,
                "{family}: element {i}: model {a}, block {b}"
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    for family in FAMILIES {
        let (ckpt, cfg) = golden(family);
        let weights = Weights::open(&ckpt, cfg.clone()).unwrap();
        let block = Block::from_layer(&weights.layer(0).unwrap());
        let s = BlockShape::new(&cfg, SEQ);
        let t = RopeTable::new(&cfg, SEQ);
        let n = 2 * SEQ * cfg.hidden;
        let x: Vec<f64> = states(n, 2).iter().map(|&v| v as f64).collect();
        let target: Vec<f64> = states(n, 3).iter().map(|&v| v as f64).collect();
        // loss = ½‖y − target‖², so dy = y − target.
        let loss = |b: &Block| -> f64 {
            let (y, _) = forward(&s, b, &t, &x);
            0.5 * y
                .iter()
                .zip(&target)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
        };
        let (y, cache) = forward(&s, &block, &t, &x);
        let dy: Vec<f64> = y.iter().zip(&target).map(|(a, b)| a - b).collect();
        let (grads, bias_grads) = backward_with_biases(&s, &block, &t, &cache, &dy);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // The biases (Qwen2's q, k, v): every element.
        for (bi, g) in bias_grads.iter().enumerate() {
            assert_eq!(
                g.is_some(),
                block.biases[bi].is_some(),
                "{family}: bias {bi}"
            );
            let Some(g) = g else { continue };
            for (e, &analytic) in g.iter().enumerate() {
                let step = 1e-5;
                let mut plus = block.clone();
                plus.biases[bi].as_mut().unwrap()[e] += step;
                let mut minus = block.clone();
                minus.biases[bi].as_mut().unwrap()[e] -= step;
                let numeric = (loss(&plus) - loss(&minus)) / (2.0 * step);
                let tol = 1e-5 * numeric.abs().max(1.0);
                assert!(
                    (numeric - analytic).abs() <= tol,
                    "{family}: bias {bi}, element {e}: analytic {analytic}, numeric {numeric}"
                );
            }
        }
        for (li, g) in grads.iter().enumerate() {
            assert_eq!(g.len(), block.linears[li].len());
            for _ in 0..6 {
                let e = rng.random_range(0..g.len());
                let step = 1e-5;
                let mut plus = block.clone();
                plus.linears[li][e] += step;
                let mut minus = block.clone();
                minus.linears[li][e] -= step;
                let numeric = (loss(&plus) - loss(&minus)) / (2.0 * step);
                let tol = 1e-5 * numeric.abs().max(1.0);
                assert!(
                    (numeric - g[e]).abs() <= tol,
                    "{family}: linear {li}, element {e}: analytic {}, numeric {numeric}",
                    g[e]
                );
            }
        }
    }
}
