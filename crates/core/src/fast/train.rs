//! Fast CPU training operations: the products (where training spends its
//! time) on all cores with eight-lane sums over contiguous rows, and the
//! elementwise ops (Adam, fake quantization, activations) rows in parallel
//! with the reference's own formulas. Products sum in another order than
//! [`Reference`] (agreement within `MATMUL_RTOL`, like the GPU); every
//! other op is bit-identical to it. This is what `--backend cpu` trains with.

use rayon::prelude::*;

use crate::reference::train::{adam_slice, fake_quant_row, mse_row};
use crate::reference::Reference;
use crate::train::device::{AdamStep, Device, GridShape};
use crate::Result;

/// Elements per parallel piece of an elementwise op.
const PIECE: usize = 1 << 16;

/// `m` rows of `k` from a matrix stored [m, k], or [k, m] when `t`.
fn rows_of(a: &[f32], m: usize, k: usize, t: bool) -> std::borrow::Cow<'_, [f32]> {
    if !t {
        return std::borrow::Cow::Borrowed(&a[..m * k]);
    }
    let mut out = vec![0.0f32; m * k];
    out.par_chunks_mut(k.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            for (p, v) in row.iter_mut().enumerate() {
                *v = a[p * m + i];
            }
        });
    std::borrow::Cow::Owned(out)
}

/// Dot product in eight independent lanes (vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let body = a.len() / 8 * 8;
    for (ca, cb) in a[..body].chunks_exact(8).zip(b[..body].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for j in body..a.len() {
        s += a[j] * b[j];
    }
    s
}

/// [`dot`] compiled for AVX2 where the CPU has it.
fn dot_any(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn wide(a: &[f32], b: &[f32]) -> f32 {
            dot(a, b)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { wide(a, b) };
    }
    dot(a, b)
}

/// Runs `f` on matching pieces of `out` and the inputs, in parallel.
fn pieces<F>(out: &mut [f32], n: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    out[..n]
        .par_chunks_mut(PIECE)
        .enumerate()
        .for_each(|(i, o)| f(i * PIECE, o));
}

impl Device for super::FastCpu {
    type Buf = Vec<f32>;

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Reference.upload(data)
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Reference.zeros(n)
    }

    fn write(&self, b: &mut Vec<f32>, data: &[f32]) -> Result<()> {
        Reference.write(b, data)
    }

    fn download(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Reference.download(b)
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
        if k == 0 {
            c[..m * n].fill(0.0);
            return Ok(());
        }
        // Rows of op(a) [m, k] and columns of op(b) as rows [n, k].
        let ar = rows_of(a, m, k, ta);
        let bc = rows_of(b, n, k, !tb);
        c[..m * n]
            .par_chunks_mut(n.max(1))
            .zip(ar.par_chunks(k))
            .for_each(|(crow, arow)| {
                for (j, v) in crow.iter_mut().enumerate() {
                    *v = dot_any(arow, &bc[j * k..(j + 1) * k]);
                }
            });
        Ok(())
    }

    fn add_bias(&self, y: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        y[..rows * cols]
            .par_chunks_mut(cols.max(1))
            .for_each(|row| {
                for (v, &b) in row.iter_mut().zip(&bias[..cols]) {
                    *v += b;
                }
            });
        Ok(())
    }

    fn bias_grad(&self, dy: &Vec<f32>, db: &mut Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        Reference.bias_grad(dy, db, rows, cols)
    }

    fn relu(&self, z: &Vec<f32>, h: &mut Vec<f32>, n: usize) -> Result<()> {
        pieces(h, n, |at, o| {
            for (hv, &zv) in o.iter_mut().zip(&z[at..]) {
                *hv = zv.max(0.0);
            }
        });
        Ok(())
    }

    fn relu_backward(
        &self,
        z: &Vec<f32>,
        dh: &Vec<f32>,
        dz: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        pieces(dz, n, |at, o| {
            for (i, v) in o.iter_mut().enumerate() {
                *v = if z[at + i] > 0.0 { dh[at + i] } else { 0.0 };
            }
        });
        Ok(())
    }

    fn gelu(&self, z: &Vec<f32>, h: &mut Vec<f32>, n: usize) -> Result<()> {
        Reference.gelu(z, h, n)
    }

    fn gelu_backward(
        &self,
        z: &Vec<f32>,
        dh: &Vec<f32>,
        dz: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        Reference.gelu_backward(z, dh, dz, n)
    }

    fn softmax(
        &self,
        z: &Vec<f32>,
        p: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        t: f32,
    ) -> Result<()> {
        Reference.softmax(z, p, rows, cols, t)
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
        Reference.classification_loss(z, teacher, labels, dz, rows, cols, temperature, alpha)
    }

    fn mse(
        &self,
        y: &Vec<f32>,
        target: &Vec<f32>,
        dy: &mut Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<f64> {
        // Rows in parallel, each as the reference computes it; the row
        // sums are added in row order in f64, as the reference does.
        let scale = 2.0 / (rows * cols) as f32;
        let mut row_sums = vec![0.0f32; rows];
        dy[..rows * cols]
            .par_chunks_mut(cols.max(1))
            .zip(row_sums.par_iter_mut())
            .enumerate()
            .for_each(|(r, (d, s))| {
                let span = r * cols..(r + 1) * cols;
                *s = mse_row(&y[span.clone()], &target[span], d, scale);
            });
        let total: f64 = row_sums.iter().map(|&v| v as f64).sum();
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
        step: AdamStep,
    ) -> Result<()> {
        // Pieces in parallel, each through the reference's loop.
        w[..n]
            .par_chunks_mut(PIECE)
            .zip(m[..n].par_chunks_mut(PIECE))
            .zip(v[..n].par_chunks_mut(PIECE))
            .enumerate()
            .for_each(|(i, ((wp, mp), vp))| {
                let span = i * PIECE..i * PIECE + wp.len();
                adam_slice(wp, &g[span.clone()], mp, vp, mask.map(|k| &k[span]), step);
            });
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
        // Rows in parallel, each through the reference's row.
        let groups = cols.div_ceil(grid.group.max(1));
        wq[..rows * cols]
            .par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(r, out)| {
                let g = r * groups..(r + 1) * groups;
                fake_quant_row(
                    &w[r * cols..(r + 1) * cols],
                    &scales[g.clone()],
                    zero_points.map(|z| &z[g]),
                    out,
                    grid,
                );
            });
        Ok(())
    }
}
