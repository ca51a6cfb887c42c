//! The CPU reference of the training family (`Device` on [`super::Reference`]): plain single-threaded
//! loops in the order [`Device`]'s documentation specifies. It is the
//! specification the GPU (`shears_kernels::GpuTrain`) is checked against,
//! not a fast path.
//!
//! Orders the trait leaves to the implementation, fixed here:
//! * softmax: s_j = fl32(z_j / t), m = max_j s_j, e_j = exp(s_j − m),
//!   p_j = e_j / Σ e (sum in increasing j);
//! * the KL and CE terms use log-probabilities s_j − m − ln Σ e (no log of
//!   a rounded probability), and a teacher probability of 0 contributes 0.

use crate::reference::quant::{self, QParams, QuantSpec, Rounding};
use crate::reference::{fp4, fp8};
use crate::train::device::{AdamStep, Device, GridShape, Levels};
use crate::{DType, Error, Result};

/// √(2/π), the constant of GELU's tanh form.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of GELU's tanh form.
const GELU_C: f32 = 0.044_715;

/// One row's softmax at temperature `t` into `p`; returns (max, Σ e) of the
/// scaled row so callers can form log-probabilities.
fn softmax_row(z: &[f32], t: f32, p: &mut [f32]) -> (f32, f32) {
    let mut mx = f32::NEG_INFINITY;
    for &v in z {
        mx = mx.max(v / t);
    }
    let mut sum = 0.0f32;
    for (pj, &v) in p.iter_mut().zip(z) {
        let e = (v / t - mx).exp();
        *pj = e;
        sum += e;
    }
    for pj in p.iter_mut() {
        *pj /= sum;
    }
    (mx, sum)
}

// The reference's loops over one row or slice, in the order the trait
// documents; the fast CPU path runs the same functions on pieces in
// parallel, so its results are these bit for bit.

/// One row of [`Device::mse`]: writes `dy = scale·(y − t)` and returns
/// Σ(y − t)² summed in increasing column, f32.
pub(crate) fn mse_row(y: &[f32], t: &[f32], dy: &mut [f32], scale: f32) -> f32 {
    let mut sum = 0.0f32;
    for ((d, &a), &b) in dy.iter_mut().zip(y).zip(t) {
        let e = a - b;
        sum += e * e;
        *d = scale * e;
    }
    sum
}

/// [`Device::adam`] on matching slices.
pub(crate) fn adam_slice(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    mask: Option<&[f32]>,
    s: AdamStep,
) {
    for i in 0..w.len() {
        if mask.is_some_and(|k| k[i] == 0.0) {
            (w[i], m[i], v[i]) = (0.0, 0.0, 0.0);
            continue;
        }
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * g[i];
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * g[i] * g[i];
        w[i] -= s.lr * (m[i] * s.c1) / ((v[i] * s.c2).sqrt() + s.eps);
    }
}

/// [`Device::fake_quant`] of one row: `scales` (and `zero_points`) are the
/// row's groups.
pub(crate) fn fake_quant_row(
    w: &[f32],
    scales: &[f32],
    zero_points: Option<&[f32]>,
    out: &mut [f32],
    grid: GridShape,
) {
    let bits = match grid.levels {
        Levels::Int { bits } => bits,
        levels => {
            for (c, (o, &x)) in out.iter_mut().zip(w).enumerate() {
                *o = fake_float(x, scales[c / grid.group], levels);
            }
            return;
        }
    };
    let spec = QuantSpec {
        bits,
        group: Some(grid.group),
        symmetric: zero_points.is_none(),
    };
    for (c, (o, &x)) in out.iter_mut().zip(w).enumerate() {
        let g = c / grid.group;
        let p = QParams {
            scale: scales[g],
            zero_point: zero_points.map_or(0, |z| z[g] as i32),
        };
        *o = quant::dequantize(
            quant::quantize(&spec, x, p, Rounding::Nearest, DType::F32),
            p,
        );
    }
}

/// The code of `x` on a float grid of divisor `s`: the E4M3 byte or E2M1
/// nibble nearest the f32 quotient clamped to the format's range (a NaN
/// weight gets the code of 0).
pub fn float_code(x: f32, s: f32, levels: Levels) -> u8 {
    if x.is_nan() {
        return 0;
    }
    match levels {
        Levels::E4M3 => fp8::e4m3((x / s).clamp(-fp8::E4M3_MAX, fp8::E4M3_MAX)),
        Levels::E2M1 => fp4::e2m1((x / s).clamp(-6.0, 6.0)),
        Levels::Int { .. } => unreachable!("integer grids have integer codes"),
    }
}

/// The value a float grid's code stands for under divisor `s`.
pub fn float_value(code: u8, s: f32, levels: Levels) -> f32 {
    match levels {
        Levels::E4M3 => fp8::e4m3_value(code) * s,
        Levels::E2M1 => fp4::e2m1_value(code) * s,
        Levels::Int { .. } => unreachable!("integer grids have integer codes"),
    }
}

/// Fake quantization of one weight on a float grid.
fn fake_float(x: f32, s: f32, levels: Levels) -> f32 {
    float_value(float_code(x, s, levels), s, levels)
}

/// The class index a label stored as f32 stands for, checked against `cols`.
fn class_of(label: f32, cols: usize) -> Result<usize> {
    if label >= 0.0 && label.fract() == 0.0 && (label as usize) < cols {
        Ok(label as usize)
    } else {
        Err(Error::Invalid(format!(
            "label {label} is not a class index below {cols}"
        )))
    }
}

/// The CPU reference as a training device; buffers are `Vec<f32>`.
impl Device for super::Reference {
    type Buf = Vec<f32>;

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }

    fn write(&self, b: &mut Vec<f32>, data: &[f32]) -> Result<()> {
        b[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn download(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(b.clone())
    }

    fn matmul(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        c: &mut Vec<f32>,
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
    ) -> Result<()> {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    acc += x * y;
                }
                c[i * n + j] = acc;
            }
        }
        Ok(())
    }

    fn add_bias(&self, y: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        for row in y[..rows * cols].chunks_exact_mut(cols) {
            for (v, &b) in row.iter_mut().zip(&bias[..cols]) {
                *v += b;
            }
        }
        Ok(())
    }

    fn bias_grad(&self, dy: &Vec<f32>, db: &mut Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        db[..cols].fill(0.0);
        for row in dy[..rows * cols].chunks_exact(cols) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        Ok(())
    }

    fn relu(&self, z: &Vec<f32>, h: &mut Vec<f32>, n: usize) -> Result<()> {
        for (hv, &zv) in h[..n].iter_mut().zip(&z[..n]) {
            *hv = zv.max(0.0);
        }
        Ok(())
    }

    fn relu_backward(
        &self,
        z: &Vec<f32>,
        dh: &Vec<f32>,
        dz: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        for i in 0..n {
            dz[i] = if z[i] > 0.0 { dh[i] } else { 0.0 };
        }
        Ok(())
    }

    fn gelu(&self, z: &Vec<f32>, h: &mut Vec<f32>, n: usize) -> Result<()> {
        for (hv, &x) in h[..n].iter_mut().zip(&z[..n]) {
            let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
            *hv = 0.5 * x * (1.0 + u.tanh());
        }
        Ok(())
    }

    fn gelu_backward(
        &self,
        z: &Vec<f32>,
        dh: &Vec<f32>,
        dz: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        for i in 0..n {
            let x = z[i];
            let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
            let t = u.tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
            let d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
            dz[i] = dh[i] * d;
        }
        Ok(())
    }

    fn softmax(
        &self,
        z: &Vec<f32>,
        p: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        t: f32,
    ) -> Result<()> {
        for (zr, pr) in z[..rows * cols]
            .chunks_exact(cols)
            .zip(p[..rows * cols].chunks_exact_mut(cols))
        {
            softmax_row(zr, t, pr);
        }
        Ok(())
    }

    fn classification_loss(
        &self,
        z: &Vec<f32>,
        teacher: Option<&Vec<f32>>,
        labels: &Vec<f32>,
        dz: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        temperature: f32,
        alpha: f32,
    ) -> Result<f64> {
        let t = temperature;
        let inv_rows = 1.0 / rows as f32;
        let mut ps = vec![0.0f32; cols];
        let mut pt = vec![0.0f32; cols];
        let mut p1 = vec![0.0f32; cols];
        let mut total = 0.0f64;
        for r in 0..rows {
            let zr = &z[r * cols..(r + 1) * cols];
            let label = class_of(labels[r], cols)?;
            let (m1, s1) = softmax_row(zr, 1.0, &mut p1);
            // CE = −log p_label = −(z_label − m − ln Σ e).
            let ce = -(zr[label] - m1 - s1.ln());
            let mut row_loss = alpha * ce;
            let dzr = &mut dz[r * cols..(r + 1) * cols];
            for j in 0..cols {
                let onehot = if j == label { 1.0 } else { 0.0 };
                dzr[j] = alpha * (p1[j] - onehot);
            }
            if let Some(tz) = teacher {
                let tzr = &tz[r * cols..(r + 1) * cols];
                let (ms, ss) = softmax_row(zr, t, &mut ps);
                let (mt, st) = softmax_row(tzr, t, &mut pt);
                let (lss, lst) = (ss.ln(), st.ln());
                let mut kl = 0.0f32;
                for j in 0..cols {
                    if pt[j] > 0.0 {
                        let log_pt = tzr[j] / t - mt - lst;
                        let log_ps = zr[j] / t - ms - lss;
                        kl += pt[j] * (log_pt - log_ps);
                    }
                }
                row_loss += t * t * kl;
                for j in 0..cols {
                    dzr[j] += t * (ps[j] - pt[j]);
                }
            }
            for d in dzr.iter_mut() {
                *d *= inv_rows;
            }
            total += row_loss as f64;
        }
        Ok(total / rows as f64)
    }

    fn mse(
        &self,
        y: &Vec<f32>,
        target: &Vec<f32>,
        dy: &mut Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<f64> {
        let scale = 2.0 / (rows * cols) as f32;
        let mut total = 0.0f64;
        for r in 0..rows {
            let span = r * cols..(r + 1) * cols;
            total += mse_row(
                &y[span.clone()],
                &target[span.clone()],
                &mut dy[span],
                scale,
            ) as f64;
        }
        Ok(total / (rows * cols) as f64)
    }

    fn adam(
        &self,
        w: &mut Vec<f32>,
        g: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        mask: Option<&Vec<f32>>,
        n: usize,
        s: AdamStep,
    ) -> Result<()> {
        adam_slice(
            &mut w[..n],
            &g[..n],
            &mut m[..n],
            &mut v[..n],
            mask.map(|k| &k[..n]),
            s,
        );
        Ok(())
    }

    fn fake_quant(
        &self,
        w: &Vec<f32>,
        scales: &Vec<f32>,
        zero_points: Option<&Vec<f32>>,
        wq: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        grid: GridShape,
    ) -> Result<()> {
        let groups = cols.div_ceil(grid.group);
        for r in 0..rows {
            let g = r * groups..(r + 1) * groups;
            fake_quant_row(
                &w[r * cols..(r + 1) * cols],
                &scales[g.clone()],
                zero_points.map(|z| &z[g]),
                &mut wq[r * cols..(r + 1) * cols],
                grid,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
