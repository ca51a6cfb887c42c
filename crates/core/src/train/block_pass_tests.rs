//! The f32 block pass on the CPU reference and the fast CPU path against the
//! f64 specification (output, weight and bias gradients), on the golden models' first layer (Llama, Qwen2 with
//! q/k/v biases, Qwen3 with q/k norms).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::fast::FastCpu;
use crate::model::{ModelConfig, Weights};
use crate::reference::Reference;
use crate::train::block;
use crate::Checkpoint;

const FAMILIES: [&str; 3] = ["llama", "qwen2", "qwen3"];
const SEQ: usize = 7;
/// Output and gradients of the f32 pass within this fraction of the largest
/// magnitude of the f64 one.
const TOL: f64 = 1e-4;

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

fn close(what: &str, want: &[f64], got: &[f32]) {
    assert_eq!(want.len(), got.len(), "{what}: length");
    let max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (&a, &b)) in want.iter().zip(got).enumerate() {
        assert!(
            (a - b as f64).abs() <= TOL * max,
            "{what}: element {i}: f64 {a}, f32 {b} (largest {max})"
        );
    }
}

fn check_on<D: BlockOps>(dev: &D, name: &str) {
    for family in FAMILIES {
        let (ckpt, cfg) = golden(family);
        let weights = Weights::open(&ckpt, cfg.clone()).unwrap();
        let lw = weights.layer(0).unwrap();
        let blk = block::Block::from_layer(&lw);
        let s = BlockShape::new(&cfg, SEQ);
        let rope = RopeTable::new(&cfg, SEQ);
        let n = 3 * SEQ * cfg.hidden;
        let (x, dy) = (states(n, 5), states(n, 6));
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (want_y, cache) = block::forward(&s, &blk, &rope, &wide(&x));
        let (want_g, want_b) = block::backward_with_biases(&s, &blk, &rope, &cache, &wide(&dy));

        let db = DeviceBlock::new(dev, s, &lw, &rope).unwrap();
        let w: Vec<D::Buf> = lw
            .linears()
            .iter()
            .map(|l| dev.upload(&l.w).unwrap())
            .collect();
        let w: [&D::Buf; 7] = std::array::from_fn(|i| &w[i]);
        let xb = dev.upload(&x).unwrap();
        let pass = forward(dev, &db, w, &xb, 3 * SEQ).unwrap();
        close(
            &format!("{name} {family} output"),
            &want_y,
            &dev.download(&pass.y).unwrap(),
        );
        let (grads, bias_grads) = backward(dev, &db, w, &pass, &dev.upload(&dy).unwrap()).unwrap();
        for (i, g) in grads.iter().enumerate() {
            close(
                &format!("{name} {family} gradient of linear {i}"),
                &want_g[i],
                &dev.download(g).unwrap(),
            );
        }
        for (i, (want, got)) in want_b.iter().zip(&bias_grads).enumerate() {
            assert_eq!(want.is_some(), got.is_some(), "{name} {family} bias {i}");
            if let (Some(want), Some(got)) = (want, got) {
                close(
                    &format!("{name} {family} gradient of bias {i}"),
                    want,
                    &dev.download(got).unwrap(),
                );
            }
        }
    }
}

#[test]
fn reference_pass_matches_the_f64_block() {
    check_on(&Reference, "reference");
}

#[test]
fn fast_pass_matches_the_f64_block() {
    check_on(&FastCpu, "fast");
}
