//! Fast CPU training operations: the products (where training spends its
//! time) as `matrixmultiply` SGEMMs on blocks of rows on all cores, and the
//! elementwise ops (Adam, fake quantization, activations) rows in parallel
//! with the reference's own formulas. Products sum in another order than
//! [`Reference`] (agreement within `MATMUL_RTOL`, like the GPU); every
//! other op is bit-identical to it. This is what `--backend cpu` trains with.

use rayon::prelude::*;

use super::forward::gemm;
use crate::reference::train::{adam_slice, fake_quant_row, mse_row};
use crate::reference::Reference;
use crate::train::device::{AdamStep, Device, GridShape};
use crate::Result;

/// Elements per parallel piece of an elementwise op.
const PIECE: usize = 1 << 16;
/// Fewest rows of a product per parallel block.
const ROW_BLOCK: usize = 16;

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
        // op(a) [m, k] and op(b) [k, n] as strided views; blocks of c's
        // rows in parallel, each one SGEMM.
        let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
        let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
        let block = m.div_ceil(4 * rayon::current_num_threads()).max(ROW_BLOCK);
        assert!(
            a.len() >= m * k && b.len() >= k * n,
            "matmul operands too short"
        );
        c[..m * n]
            .par_chunks_mut(block * n.max(1))
            .enumerate()
            .for_each(|(i, cb)| {
                let rows = cb.len() / n.max(1);
                let a0 = &a[i * block * rsa..];
                // SAFETY: rows i·block.. of op(a) start at a0 and stay within
                // a (m×k values at the strides above); b holds k×n values at
                // its strides; cb is rows×n.
                unsafe { gemm(rows, k, n, a0.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, cb) };
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
