//! Layer-wise distillation (ZeroQuant's LKD, Yao et al. 2022): a compressed
//! linear layer learns to reproduce its dense teacher's outputs on
//! calibration inputs, its mask and quantization grid held fixed.
//!
//! Each step: Ŵ = fake_quant(W) on the fixed grid (or W), Y_s = X·Ŵᵀ (+ b),
//! loss = MSE(Y_s, Y_t), dW = dY_sᵀ·X passed straight through the
//! quantizer, Adam with the mask (pruned weights stay exactly 0). The
//! learning rate decays on a cosine from `lr` to 0 over all steps, so the
//! last steps settle instead of oscillating around the optimum.

use std::f64::consts::PI;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use crate::reference::matmul::relative_error;
use crate::reference::quant::{self, QParams, QuantSpec, Rounding};
use crate::reference::train;
use crate::train::device::{AdamStep, Device, GridShape, Levels};
use crate::{DType, Error, Result};

/// Adam's β1, β2 and ε for layer-wise distillation.
pub const ADAM_BETAS: (f32, f32) = (0.9, 0.999);
pub const ADAM_EPS: f32 = 1e-8;

/// A fixed quantization grid: scales [rows, groups] and, when asymmetric,
/// zero points [rows, groups] as f32 integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub shape: GridShape,
    pub scales: Vec<f32>,
    pub zero_points: Option<Vec<f32>>,
}

impl Grid {
    /// The codes of `w` [rows, cols] on this grid: integers rounded to
    /// nearest, as the reference quantizer; on a float grid the E4M3 byte
    /// or E2M1 nibble ([`reference::train::float_code`]) as `i8` bits.
    pub fn codes(&self, w: &[f32], rows: usize, cols: usize) -> Vec<i8> {
        let groups = cols.div_ceil(self.shape.group);
        let at = |i: usize| (i / cols) * groups + (i % cols) / self.shape.group;
        let Levels::Int { bits } = self.shape.levels else {
            return (0..rows * cols)
                .map(|i| train::float_code(w[i], self.scales[at(i)], self.shape.levels) as i8)
                .collect();
        };
        let spec = QuantSpec {
            bits,
            group: Some(self.shape.group),
            symmetric: self.zero_points.is_none(),
        };
        (0..rows * cols)
            .map(|i| {
                quant::quantize(
                    &spec,
                    w[i],
                    self.params(at(i)),
                    Rounding::Nearest,
                    DType::F32,
                ) as i8
            })
            .collect()
    }

    /// The values `codes` stand for: (q − zp)·s, or a float code's value
    /// times s.
    pub fn dequantize(&self, codes: &[i8], rows: usize, cols: usize) -> Vec<f32> {
        let groups = cols.div_ceil(self.shape.group);
        (0..rows * cols)
            .map(|i| {
                let g = (i / cols) * groups + (i % cols) / self.shape.group;
                match self.shape.levels {
                    Levels::Int { .. } => quant::dequantize(codes[i] as i32, self.params(g)),
                    levels => train::float_value(codes[i] as u8, self.scales[g], levels),
                }
            })
            .collect()
    }

    fn params(&self, g: usize) -> QParams {
        QParams {
            scale: self.scales[g],
            zero_point: self.zero_points.as_ref().map_or(0, |z| z[g] as i32),
        }
    }
}

/// One layer to distill: calibration inputs, the teacher, and the student
/// with what is fixed about it. Matrices are row-major: inputs [n, inputs],
/// weights [outputs, inputs], mask like the weight (1 kept, 0 pruned).
#[derive(Debug, Clone, Copy)]
pub struct LayerProblem<'a> {
    pub inputs: usize,
    pub outputs: usize,
    /// Training inputs [n_train, inputs].
    pub x_train: &'a [f32],
    /// Held-out inputs [n_held, inputs] for the before / after error.
    pub x_held: &'a [f32],
    pub teacher_weight: &'a [f32],
    pub teacher_bias: Option<&'a [f32]>,
    pub student_weight: &'a [f32],
    /// Trained along with the weight when present (never masked or
    /// quantized).
    pub student_bias: Option<&'a [f32]>,
    pub mask: Option<&'a [f32]>,
    pub grid: Option<&'a Grid>,
    /// The teacher's outputs for the same tokens, when the teacher saw
    /// other inputs than the student (sequential distillation: the student
    /// layer reads what the compressed layers before it produced, the
    /// teacher what the dense ones did). The teacher's weight and bias are
    /// then not used; without this they make the targets from `x_train`
    /// and `x_held`.
    pub targets: Option<Targets<'a>>,
}

/// Given teacher outputs: [n_train, outputs] and [n_held, outputs].
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    pub train: &'a [f32],
    pub held: &'a [f32],
}

/// How long and how fast a layer is distilled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LkdConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (cosine-decayed to 0).
    pub lr: f32,
    /// Seed of the mini-batch order.
    pub seed: u64,
    /// Early stopping: the held-out error is measured after every epoch and
    /// training stops once it has not improved for this many epochs; the
    /// result is the best epoch's weights (or the student as given, when no
    /// epoch beat it). `None` trains every epoch and keeps the last.
    pub patience: Option<usize>,
}

/// The distilled layer and how much closer it came to its teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct LkdResult {
    /// The trained weight (the latent one before fake quantization; zero
    /// where the mask is 0).
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// For a quantized student, the codes of `weight` on the fixed grid.
    pub codes: Option<Vec<i8>>,
    /// ‖Y_t − Y_s‖ / ‖Y_t‖ on the held-out inputs, before and after.
    pub error_before: f64,
    pub error_after: f64,
    /// The MSE of every step.
    pub losses: Vec<f64>,
    /// Epochs trained, and the one whose weights were kept (0: the
    /// student as given).
    pub epochs: usize,
    pub best_epoch: usize,
}

/// The learning rate of step `t` (1-based) of `total`: a cosine from `lr`
/// down to 0, computed in f64 and rounded once.
pub fn cosine_lr(lr: f32, t: usize, total: usize) -> f32 {
    let frac = (t - 1) as f64 / total.max(1) as f64;
    (lr as f64 * 0.5 * (1.0 + (PI * frac).cos())) as f32
}

fn check(p: &LayerProblem) -> Result<(usize, usize)> {
    let (i, o) = (p.inputs, p.outputs);
    let bad = |what: &str, len: usize, want: usize| {
        Error::Invalid(format!(
            "layer-wise distillation: {what} has {len} values, expected {want}"
        ))
    };
    if i == 0 || o == 0 || p.x_train.is_empty() || p.x_held.is_empty() {
        return Err(Error::Invalid(
            "layer-wise distillation needs a non-empty layer, training and held-out inputs".into(),
        ));
    }
    for (what, x) in [("training", p.x_train), ("held-out", p.x_held)] {
        if !x.len().is_multiple_of(i) {
            return Err(Error::Invalid(format!(
                "layer-wise distillation: the {what} inputs have {} values, not a multiple of {i} inputs",
                x.len()
            )));
        }
    }
    let teacher_weight = p.targets.is_none().then_some(p.teacher_weight.len());
    for (what, len) in [
        ("the teacher weight", teacher_weight),
        ("the student weight", Some(p.student_weight.len())),
        ("the mask", p.mask.map(<[f32]>::len)),
    ] {
        if let Some(len) = len.filter(|&l| l != o * i) {
            return Err(bad(what, len, o * i));
        }
    }
    for (what, len) in [
        ("the teacher bias", p.teacher_bias.map(<[f32]>::len)),
        ("the student bias", p.student_bias.map(<[f32]>::len)),
    ] {
        if let Some(len) = len.filter(|&l| l != o) {
            return Err(bad(what, len, o));
        }
    }
    let (n_train, n_held) = (p.x_train.len() / i, p.x_held.len() / i);
    if let Some(t) = p.targets {
        for (what, len, n) in [
            ("training", t.train.len(), n_train),
            ("held-out", t.held.len(), n_held),
        ] {
            if len != n * o {
                return Err(bad(&format!("the {what} targets"), len, n * o));
            }
        }
    }
    if let Some(g) = p.grid {
        let want = o * i.div_ceil(g.shape.group.max(1));
        if !g.shape.is_supported() {
            return Err(Error::Invalid(format!("unsupported grid {:?}", g.shape)));
        }
        if g.zero_points.is_some() && !matches!(g.shape.levels, Levels::Int { .. }) {
            return Err(Error::Invalid("a float grid has no zero points".into()));
        }
        if g.scales.len() != want {
            return Err(bad("the grid's scales", g.scales.len(), want));
        }
        if let Some(len) = g.zero_points.as_ref().map(Vec::len).filter(|&l| l != want) {
            return Err(bad("the grid's zero points", len, want));
        }
    }
    Ok((n_train, n_held))
}

/// Distills one layer on `dev`. See the module documentation for the step.
pub fn distill_layer<D: Device>(dev: &D, p: &LayerProblem, cfg: &LkdConfig) -> Result<LkdResult> {
    let (n_train, n_held) = check(p)?;
    if cfg.batch_size == 0 {
        return Err(Error::Invalid("the batch size must be above 0".into()));
    }
    let (inp, out) = (p.inputs, p.outputs);
    let nw = inp * out;
    let batch = cfg.batch_size.min(n_train);

    // The student starts masked, so its first forward pass is the
    // compressed layer as given.
    let mut w0 = p.student_weight.to_vec();
    if let Some(mask) = p.mask {
        for (w, &m) in w0.iter_mut().zip(mask) {
            if m == 0.0 {
                *w = 0.0;
            }
        }
    }
    let teacher = |x: &D::Buf, n: usize| -> Result<Vec<f32>> {
        let mut y = dev.zeros(n * out)?;
        dev.matmul(
            x,
            &dev.upload(p.teacher_weight)?,
            &mut y,
            n,
            inp,
            out,
            false,
            true,
        )?;
        if let Some(b) = p.teacher_bias {
            dev.add_bias(&mut y, &dev.upload(b)?, n, out)?;
        }
        Ok(dev.download(&y)?[..n * out].to_vec())
    };
    let mut w = dev.upload(&w0)?;
    let mut b = p.student_bias.map(|b| dev.upload(b)).transpose()?;
    let mask = p.mask.map(|m| dev.upload(m)).transpose()?;
    let scales = p.grid.map(|g| dev.upload(&g.scales)).transpose()?;
    let zps = match p.grid.and_then(|g| g.zero_points.as_ref()) {
        Some(z) => Some(dev.upload(z)?),
        None => None,
    };
    let mut wq = dev.zeros(nw)?;
    let (mut mw, mut vw, mut dw) = (dev.zeros(nw)?, dev.zeros(nw)?, dev.zeros(nw)?);
    let (mut mb, mut vb, mut db) = (dev.zeros(out)?, dev.zeros(out)?, dev.zeros(out)?);

    // Ŵ: the weight the student computes with (w itself when unquantized).
    let effective = |w: &D::Buf, wq: &mut D::Buf| -> Result<bool> {
        match (p.grid, &scales) {
            (Some(g), Some(s)) => {
                dev.fake_quant(w, s, zps.as_ref(), wq, out, inp, g.shape)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let linear = |x: &D::Buf, w: &D::Buf, b: Option<&D::Buf>, y: &mut D::Buf, n: usize| {
        dev.matmul(x, w, y, n, inp, out, false, true)?;
        if let Some(b) = b {
            dev.add_bias(y, b, n, out)?;
        }
        Ok::<_, Error>(())
    };

    // Held-out targets, and the error before training.
    let x_held = dev.upload(p.x_held)?;
    let y_held_t_host = match p.targets {
        Some(t) => t.held.to_vec(),
        None => teacher(&x_held, n_held)?,
    };
    let mut y_held_s = dev.zeros(n_held * out)?;
    let mut held_error = |w: &D::Buf, b: Option<&D::Buf>, wq: &mut D::Buf| -> Result<f64> {
        let used = if effective(w, wq)? { &*wq } else { w };
        linear(&x_held, used, b, &mut y_held_s, n_held)?;
        let ys = dev.download(&y_held_s)?;
        Ok(relative_error(
            &y_held_t_host[..n_held * out],
            &ys[..n_held * out],
        ))
    };
    let error_before = held_error(&w, b.as_ref(), &mut wq)?;

    // Training targets: the teacher's outputs on every training row, held
    // on the host and gathered per batch.
    let y_train = match p.targets {
        Some(t) => t.train.to_vec(),
        None => teacher(&dev.upload(p.x_train)?, n_train)?,
    };

    let mut xb = dev.zeros(batch * inp)?;
    let mut tb = dev.zeros(batch * out)?;
    let mut ys = dev.zeros(batch * out)?;
    let mut dy = dev.zeros(batch * out)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n_train).collect();
    let total = cfg.epochs * n_train.div_ceil(batch);
    let (mut hx, mut hy) = (Vec::new(), Vec::new());
    let mut losses = Vec::with_capacity(total);
    // Early stopping: the best held-out error so far, its epoch and weights
    // (epoch 0: the student as given).
    let mut best = (error_before, 0usize, None::<(Vec<f32>, Option<Vec<f32>>)>);
    let mut epochs = 0;
    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(batch) {
            let n = idx.len();
            hx.clear();
            hy.clear();
            for &r in idx {
                hx.extend_from_slice(&p.x_train[r * inp..(r + 1) * inp]);
                hy.extend_from_slice(&y_train[r * out..(r + 1) * out]);
            }
            dev.write(&mut xb, &hx)?;
            dev.write(&mut tb, &hy)?;
            let used = if effective(&w, &mut wq)? { &wq } else { &w };
            linear(&xb, used, b.as_ref(), &mut ys, n)?;
            losses.push(dev.mse(&ys, &tb, &mut dy, n, out)?);
            dev.matmul(&dy, &xb, &mut dw, out, n, inp, true, false)?;
            let t = losses.len();
            let lr = cosine_lr(cfg.lr, t, total);
            let s = AdamStep::at(lr, ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS, t as u32);
            dev.adam(&mut w, &dw, &mut mw, &mut vw, mask.as_ref(), nw, s)?;
            if let Some(b) = b.as_mut() {
                dev.bias_grad(&dy, &mut db, n, out)?;
                dev.adam(b, &db, &mut mb, &mut vb, None, out, s)?;
            }
        }
        epochs = epoch;
        let Some(patience) = cfg.patience else {
            continue;
        };
        let e = held_error(&w, b.as_ref(), &mut wq)?;
        if e < best.0 {
            let bias = b.as_ref().map(|b| dev.download(b)).transpose()?;
            best = (e, epoch, Some((dev.download(&w)?, bias)));
        } else if epoch - best.1 >= patience {
            break;
        }
    }

    let best_error = best.0;
    let (weight, bias, best_epoch) = match (cfg.patience, best) {
        (None, _) => {
            let bias = b.as_ref().map(|b| dev.download(b)).transpose()?;
            (dev.download(&w)?, bias, epochs)
        }
        (Some(_), (_, e, Some((w, b)))) => (w, b, e),
        (Some(_), (_, _, None)) => (w0, p.student_bias.map(<[f32]>::to_vec), 0),
    };
    let weight = weight[..nw].to_vec();
    let bias = bias.map(|b| b[..out].to_vec());
    let error_after = if cfg.patience.is_some() {
        best_error
    } else {
        held_error(&w, b.as_ref(), &mut wq)?
    };
    let codes = p.grid.map(|g| g.codes(&weight, out, inp));
    Ok(LkdResult {
        weight,
        bias,
        codes,
        error_before,
        error_after,
        losses,
        epochs,
        best_epoch,
    })
}

/// The held-out relative output error ‖Y_t − Y_s‖ / ‖Y_t‖ of a student
/// layer computing with exactly `weight` (and `bias`) against the
/// problem's teacher: how a caller measures the layer it really writes
/// (for example rounded to bf16, or dequantized from its codes).
pub fn held_out_error<D: Device>(
    dev: &D,
    p: &LayerProblem,
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<f64> {
    let (_, n) = check(&LayerProblem {
        student_weight: weight,
        student_bias: bias,
        ..*p
    })?;
    let (inp, out) = (p.inputs, p.outputs);
    let x = dev.upload(p.x_held)?;
    let run = |w: &[f32], b: Option<&[f32]>| -> Result<Vec<f32>> {
        let w = dev.upload(w)?;
        let mut y = dev.zeros(n * out)?;
        dev.matmul(&x, &w, &mut y, n, inp, out, false, true)?;
        if let Some(b) = b {
            dev.add_bias(&mut y, &dev.upload(b)?, n, out)?;
        }
        Ok(dev.download(&y)?[..n * out].to_vec())
    };
    let teacher = match p.targets {
        Some(t) => t.held.to_vec(),
        None => run(p.teacher_weight, p.teacher_bias)?,
    };
    Ok(relative_error(&teacher, &run(weight, bias)?))
}

#[cfg(test)]
#[path = "layerwise_tests.rs"]
mod tests;
