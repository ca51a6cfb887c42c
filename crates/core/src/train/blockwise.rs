//! Block-wise distillation: every compressed linear layer of one decoder
//! block trained together, so the block's output (attention and MLP
//! included) matches the teacher block's, instead of each linear's own
//! output. Masks and quantization grids stay fixed as in layer-wise
//! distillation: pruned weights stay exactly 0 (their Adam moments too),
//! a quantized linear computes with its fake quantization and trains its
//! latent weight straight through; a trained linear's bias (Qwen2's q, k,
//! v) trains with it, unmasked. Loss: the mean squared error of the
//! block's output; Adam with the learning rate on a cosine to 0; batches of
//! whole sequences (attention needs them); early stopping on the held-out
//! sequences as `LkdConfig::patience` says. Runs on any backend's
//! [`BlockOps`] in f32 ([`super::block_pass`]).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::block::BlockShape;
use super::block_device::BlockOps;
use super::block_pass::{backward, forward, DeviceBlock};
use super::device::{AdamStep, GridShape};
use super::layerwise::{cosine_lr, Grid, LkdConfig, ADAM_BETAS, ADAM_EPS};
use crate::model::rope::RopeTable;
use crate::model::LayerWeights;
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
    /// The student's decoder layer as given.
    pub block: &'a LayerWeights,
    /// Per linear (q, k, v, o, gate, up, down): trained or held fixed, its
    /// keep-mask (1 kept, 0 pruned) and its fixed grid.
    pub trained: [bool; 7],
    pub masks: [Option<&'a [f32]>; 7],
    pub grids: [Option<&'a Grid>; 7],
}

/// The trained block.
#[derive(Debug, Clone)]
pub struct BlockResult {
    /// The latent weights of the trained linears (zero where pruned; the
    /// block computes with their fake quantization where a grid is given);
    /// empty for the linears held fixed.
    pub weights: [Vec<f32>; 7],
    /// The trained biases of q, k, v and o (those of trained linears that
    /// have one).
    pub biases: [Option<Vec<f32>>; 4],
    /// ‖Y_t − Y_s‖ / ‖Y_t‖ of the block's output on the held-out
    /// sequences, before and after.
    pub error_before: f64,
    pub error_after: f64,
    pub losses: Vec<f64>,
    pub epochs: usize,
    pub best_epoch: usize,
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

/// Sequences per forward pass when measuring held-out error.
const EVAL_SEQS: usize = 8;

/// ‖y − ŷ‖ / ‖y‖ of the block with weights `w` on `x` (whole sequences),
/// in pieces of [`EVAL_SEQS`] sequences, sums in f64.
pub fn held_error<D: BlockOps>(
    dev: &D,
    b: &DeviceBlock<D>,
    w: [&D::Buf; 7],
    x: &[f32],
    y: &[f32],
) -> Result<f64> {
    let row = b.shape.seq_len * b.shape.hidden;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (xs, ys) in x.chunks(EVAL_SEQS * row).zip(y.chunks(EVAL_SEQS * row)) {
        let pass = forward(dev, b, w, &dev.upload(xs)?, xs.len() / b.shape.hidden)?;
        let got = dev.download(&pass.y)?;
        for (&t, &g) in ys.iter().zip(&got) {
            num += (t as f64 - g as f64).powi(2);
            den += (t as f64).powi(2);
        }
    }
    Ok(if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    })
}

/// ‖y − ŷ‖ / ‖y‖ of decoder layer `block` as given on `x` (whole
/// sequences).
pub fn block_error<D: BlockOps>(
    dev: &D,
    shape: BlockShape,
    rope: &RopeTable,
    block: &LayerWeights,
    x: &[f32],
    y: &[f32],
) -> Result<f64> {
    let db = DeviceBlock::new(dev, shape, block, rope)?;
    let w: Vec<D::Buf> = block
        .linears()
        .iter()
        .map(|l| dev.upload(&l.w))
        .collect::<Result<_>>()?;
    held_error(dev, &db, std::array::from_fn(|i| &w[i]), x, y)
}

fn check(p: &BlockProblem) -> Result<()> {
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
    Ok(())
}

/// A fixed grid on the device and the buffer the fake quantization of the
/// latent weight goes to.
struct OnGrid<D: BlockOps> {
    scales: D::Buf,
    zero_points: Option<D::Buf>,
    shape: GridShape,
    wq: D::Buf,
}

/// A trained linear on the device: its latent weight, Adam's moments, its
/// mask and grid.
struct Trained<D: BlockOps> {
    latent: D::Buf,
    m: D::Buf,
    v: D::Buf,
    mask: Option<D::Buf>,
    grid: Option<OnGrid<D>>,
    out: usize,
    inn: usize,
}

/// The seven linears on the device: trained ones (with what training
/// needs) and fixed ones.
enum Linear<D: BlockOps> {
    Trained(Box<Trained<D>>),
    Fixed(D::Buf),
}

impl<D: BlockOps> Linear<D> {
    /// The weight the block computes with (after [`refresh`]).
    fn weight(&self) -> &D::Buf {
        match self {
            Linear::Trained(t) => t.grid.as_ref().map_or(&t.latent, |g| &g.wq),
            Linear::Fixed(w) => w,
        }
    }
}

/// Fake-quantizes the gridded linears' latent weights.
fn refresh<D: BlockOps>(dev: &D, lin: &mut [Linear<D>]) -> Result<()> {
    for l in lin.iter_mut() {
        if let Linear::Trained(t) = l {
            if let Some(g) = &mut t.grid {
                let z = g.zero_points.as_ref();
                dev.fake_quant(&t.latent, &g.scales, z, &mut g.wq, t.out, t.inn, g.shape)?;
            }
        }
    }
    Ok(())
}

fn weights<D: BlockOps>(lin: &[Linear<D>]) -> [&D::Buf; 7] {
    std::array::from_fn(|i| lin[i].weight())
}

/// Adam's moments of a trained bias.
struct BiasMoments<D: BlockOps> {
    m: D::Buf,
    v: D::Buf,
    width: usize,
}

/// What training changes: the trained linears' latent weights and the
/// trained biases.
type Snapshot = ([Vec<f32>; 7], [Option<Vec<f32>>; 4]);

/// The latent weights of the trained linears and the trained biases
/// (nothing of the rest).
fn snapshot<D: BlockOps>(
    dev: &D,
    lin: &[Linear<D>],
    db: &DeviceBlock<D>,
    bm: &[Option<BiasMoments<D>>; 4],
) -> Result<Snapshot> {
    let mut out: [Vec<f32>; 7] = Default::default();
    for (i, l) in lin.iter().enumerate() {
        if let Linear::Trained(t) = l {
            out[i] = dev.download(&t.latent)?;
        }
    }
    let mut biases: [Option<Vec<f32>>; 4] = Default::default();
    for (i, b) in biases.iter_mut().enumerate() {
        if let (Some(_), Some(buf)) = (&bm[i], &db.biases[i]) {
            *b = Some(dev.download(buf)?);
        }
    }
    Ok((out, biases))
}

/// Distills one block on `dev`; see the module documentation.
pub fn distill_block<D: BlockOps>(
    dev: &D,
    p: &BlockProblem,
    cfg: &LkdConfig,
) -> Result<BlockResult> {
    check(p)?;
    let s = &p.shape;
    let row = s.seq_len * s.hidden;
    let mut db = DeviceBlock::new(dev, *s, p.block, p.rope)?;
    let mut bm: [Option<BiasMoments<D>>; 4] = Default::default();
    for (i, b) in bm.iter_mut().enumerate() {
        if let (true, Some(bias)) = (p.trained[i], &p.block.linears()[i].bias) {
            *b = Some(BiasMoments {
                m: dev.zeros(bias.len())?,
                v: dev.zeros(bias.len())?,
                width: bias.len(),
            });
        }
    }
    let mut lin = Vec::with_capacity(7);
    for i in 0..7 {
        let given = &p.block.linears()[i].w;
        if !p.trained[i] {
            lin.push(Linear::Fixed(dev.upload(given)?));
            continue;
        }
        // The student starts masked.
        let mut w = given.clone();
        if let Some(m) = p.masks[i] {
            w.iter_mut().zip(m).for_each(|(w, &m)| *w *= m);
        }
        let out = linear_out(s, i);
        let inn = w.len() / out;
        let grid = match p.grids[i] {
            Some(g) => Some(OnGrid {
                scales: dev.upload(&g.scales)?,
                zero_points: g
                    .zero_points
                    .as_deref()
                    .map(|z| dev.upload(z))
                    .transpose()?,
                shape: g.shape,
                wq: dev.zeros(w.len())?,
            }),
            None => None,
        };
        lin.push(Linear::Trained(Box::new(Trained {
            m: dev.zeros(w.len())?,
            v: dev.zeros(w.len())?,
            mask: p.masks[i].map(|m| dev.upload(m)).transpose()?,
            latent: dev.upload(&w)?,
            grid,
            out,
            inn,
        })));
    }
    refresh(dev, &mut lin)?;
    let start = snapshot(dev, &lin, &db, &bm)?;
    let error_before = held_error(dev, &db, weights(&lin), p.x_held, p.y_held)?;
    let seqs = p.x_train.len() / row;
    let per_step = (cfg.batch_size / s.seq_len).clamp(1, seqs);
    let total = cfg.epochs * seqs.div_ceil(per_step);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..seqs).collect();
    let mut losses = Vec::with_capacity(total);
    let mut best: (f64, usize, Option<Snapshot>) = (error_before, 0, None);
    let mut epochs = 0;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(per_step) {
            let mut x = Vec::with_capacity(idx.len() * row);
            let mut t = Vec::with_capacity(idx.len() * row);
            for &q in idx {
                x.extend_from_slice(&p.x_train[q * row..(q + 1) * row]);
                t.extend_from_slice(&p.y_train[q * row..(q + 1) * row]);
            }
            let tokens = idx.len() * s.seq_len;
            let pass = forward(dev, &db, weights(&lin), &dev.upload(&x)?, tokens)?;
            let mut dy = dev.zeros(x.len())?;
            losses.push(dev.mse(&pass.y, &dev.upload(&t)?, &mut dy, tokens, s.hidden)?);
            let (grads, bias_grads) = backward(dev, &db, weights(&lin), &pass, &dy)?;
            drop(pass);
            let step = losses.len();
            let at = AdamStep::at(
                cosine_lr(cfg.lr, step, total),
                ADAM_BETAS.0,
                ADAM_BETAS.1,
                ADAM_EPS,
                step as u32,
            );
            for (l, g) in lin.iter_mut().zip(&grads) {
                if let Linear::Trained(tr) = l {
                    let n = tr.out * tr.inn;
                    dev.adam(
                        &mut tr.latent,
                        g,
                        &mut tr.m,
                        &mut tr.v,
                        tr.mask.as_ref(),
                        n,
                        at,
                    )?;
                }
            }
            for ((b, g), buf) in bm.iter_mut().zip(&bias_grads).zip(&mut db.biases) {
                if let (Some(b), Some(g), Some(buf)) = (b, g, buf) {
                    dev.adam(buf, g, &mut b.m, &mut b.v, None, b.width, at)?;
                }
            }
            refresh(dev, &mut lin)?;
        }
        epochs = epoch;
        let Some(patience) = cfg.patience else {
            continue;
        };
        let e = held_error(dev, &db, weights(&lin), p.x_held, p.y_held)?;
        if e < best.0 {
            best = (e, epoch, Some(snapshot(dev, &lin, &db, &bm)?));
        } else if epoch - best.1 >= patience {
            break;
        }
    }
    let (error_after, best_epoch, (kept, biases)) = match cfg.patience {
        Some(_) => (best.0, best.1, best.2.unwrap_or(start)),
        None => (
            held_error(dev, &db, weights(&lin), p.x_held, p.y_held)?,
            epochs,
            snapshot(dev, &lin, &db, &bm)?,
        ),
    };
    Ok(BlockResult {
        weights: kept,
        biases,
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
