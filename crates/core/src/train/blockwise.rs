//! Block-wise distillation: every compressed linear layer of one decoder
//! block trained together, so the block's output (attention and MLP
//! included) matches the teacher block's, instead of each linear's own
//! output. Masks and quantization grids stay fixed as in layer-wise
//! distillation: pruned weights stay exactly 0 (their Adam moments too),
//! a quantized linear computes with its fake quantization and trains its
//! latent weight straight through. Loss: the mean squared error of the
//! block's output; Adam with the learning rate on a cosine to 0; batches of
//! whole sequences (attention needs them); early stopping on the held-out
//! sequences as `LkdConfig::patience` says. Runs on the f64 block of
//! [`super::block`] (the CPU; no GPU kernels yet).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::block::{backward, forward, Block, BlockShape};
use super::layerwise::{cosine_lr, Grid, LkdConfig, ADAM_BETAS, ADAM_EPS};
use crate::model::rope::RopeTable;
use crate::{Error, Result};

/// One block to distill. States are [tokens, hidden] in whole sequences of
/// `shape.seq_len`: the student block's inputs and the teacher block's
/// outputs for the same tokens.
pub struct BlockProblem<'a> {
    pub shape: BlockShape,
    pub rope: &'a RopeTable,
    pub x_train: &'a [f32],
    pub y_train: &'a [f32],
    pub x_held: &'a [f32],
    pub y_held: &'a [f32],
    /// The student block as given.
    pub block: &'a Block,
    /// Per linear (q, k, v, o, gate, up, down): trained or held fixed, its
    /// keep-mask (1 kept, 0 pruned) and its fixed grid.
    pub trained: [bool; 7],
    pub masks: [Option<&'a [f32]>; 7],
    pub grids: [Option<&'a Grid>; 7],
}

/// The trained block.
#[derive(Debug, Clone)]
pub struct BlockResult {
    /// The latent weights of the seven linears (zero where pruned); the
    /// block computes with their fake quantization where a grid is given.
    pub weights: [Vec<f32>; 7],
    /// ‖Y_t − Y_s‖ / ‖Y_t‖ of the block's output on the held-out
    /// sequences, before and after.
    pub error_before: f64,
    pub error_after: f64,
    pub losses: Vec<f64>,
    pub epochs: usize,
    pub best_epoch: usize,
}

/// The weights the block computes with: masked, and fake-quantized on the
/// fixed grids (as f32, the way the layer is stored).
fn effective(p: &BlockProblem, latent: &[Vec<f64>; 7]) -> Block {
    let mut b = p.block.clone();
    for (i, lat) in latent.iter().enumerate() {
        if !p.trained[i] {
            continue;
        }
        let out = linear_out(&p.shape, i);
        let inn = lat.len() / out;
        let w: Vec<f32> = lat.iter().map(|&v| v as f32).collect();
        let w = match p.grids[i] {
            Some(g) => g.dequantize(&g.codes(&w, out, inn), out, inn),
            None => w,
        };
        b.linears[i] = w.iter().map(|&v| v as f64).collect();
    }
    b
}

/// Output width of linear `i` of the block.
pub fn linear_out(s: &BlockShape, i: usize) -> usize {
    match i {
        0 => s.heads * s.head_dim,
        1 | 2 => s.kv_heads * s.head_dim,
        3 | 6 => s.hidden,
        _ => s.inter,
    }
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// ‖t − y‖ / ‖t‖.
fn relative(t: &[f64], y: &[f64]) -> f64 {
    let num: f64 = t.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = t.iter().map(|a| a * a).sum();
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

/// Distills one block; see the module documentation.
pub fn distill_block(p: &BlockProblem, cfg: &LkdConfig) -> Result<BlockResult> {
    let s = &p.shape;
    let row = s.seq_len * s.hidden;
    for (what, x) in [
        ("training inputs", p.x_train),
        ("training targets", p.y_train),
        ("held-out inputs", p.x_held),
        ("held-out targets", p.y_held),
    ] {
        if x.is_empty() || !x.len().is_multiple_of(row) {
            return Err(Error::Invalid(format!(
                "block-wise distillation: the {what} hold {} values, not whole sequences of {} × {}",
                x.len(),
                s.seq_len,
                s.hidden
            )));
        }
    }
    if p.x_train.len() != p.y_train.len() || p.x_held.len() != p.y_held.len() {
        return Err(Error::Invalid(
            "block-wise distillation: inputs and targets differ in length".into(),
        ));
    }
    let (x_held, y_held) = (wide(p.x_held), wide(p.y_held));
    let held_error = |latent: &[Vec<f64>; 7]| -> f64 {
        let (y, _) = forward(s, &effective(p, latent), p.rope, &x_held);
        relative(&y_held, &y)
    };
    // The student starts masked.
    let mut latent: [Vec<f64>; 7] = p.block.linears.clone();
    for (i, w) in latent.iter_mut().enumerate() {
        if let Some(m) = p.masks[i] {
            w.iter_mut().zip(m).for_each(|(w, &m)| *w *= m as f64);
        }
    }
    let start = latent.clone();
    let error_before = held_error(&latent);
    let seqs = p.x_train.len() / row;
    let per_step = (cfg.batch_size / s.seq_len).clamp(1, seqs);
    let total = cfg.epochs * seqs.div_ceil(per_step);
    let mut mom: [Vec<f64>; 7] = latent.clone().map(|w| vec![0.0; w.len()]);
    let mut vel = mom.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..seqs).collect();
    let mut losses = Vec::with_capacity(total);
    let mut best = (error_before, 0usize, start.clone());
    let mut epochs = 0;
    let (b1, b2) = (ADAM_BETAS.0 as f64, ADAM_BETAS.1 as f64);
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(per_step) {
            let mut x = Vec::with_capacity(idx.len() * row);
            let mut t = Vec::with_capacity(idx.len() * row);
            for &q in idx {
                x.extend(p.x_train[q * row..(q + 1) * row].iter().map(|&v| v as f64));
                t.extend(p.y_train[q * row..(q + 1) * row].iter().map(|&v| v as f64));
            }
            let eff = effective(p, &latent);
            let (y, cache) = forward(s, &eff, p.rope, &x);
            let n = y.len() as f64;
            let dy: Vec<f64> = y.iter().zip(&t).map(|(a, b)| 2.0 * (a - b) / n).collect();
            losses.push(y.iter().zip(&t).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n);
            let grads = backward(s, &eff, p.rope, &cache, &dy);
            let step = losses.len();
            let lr = cosine_lr(cfg.lr, step, total) as f64;
            let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
            for i in (0..7).filter(|&i| p.trained[i]) {
                let mask = p.masks[i];
                for (e, g) in grads[i].iter().enumerate() {
                    if mask.is_some_and(|m| m[e] == 0.0) {
                        continue;
                    }
                    let (m, v) = (&mut mom[i][e], &mut vel[i][e]);
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    latent[i][e] -= lr * (*m / c1) / ((*v / c2).sqrt() + ADAM_EPS as f64);
                }
            }
        }
        epochs = epoch;
        let Some(patience) = cfg.patience else {
            continue;
        };
        let e = held_error(&latent);
        if e < best.0 {
            best = (e, epoch, latent.clone());
        } else if epoch - best.1 >= patience {
            break;
        }
    }
    let (error_after, best_epoch, kept) = match cfg.patience {
        Some(_) => best,
        None => (held_error(&latent), epochs, latent),
    };
    Ok(BlockResult {
        weights: kept.map(|w| w.iter().map(|&v| v as f32).collect()),
        error_before,
        error_after,
        losses,
        epochs,
        best_epoch,
    })
}

#[cfg(test)]
#[path = "blockwise_tests.rs"]
mod tests;
