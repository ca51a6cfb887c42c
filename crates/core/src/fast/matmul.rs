//! Fast CPU path of the `matmul` family: output rows in parallel, the
//! weight decoded and masked once, inner products over contiguous rows.

use rayon::prelude::*;

use crate::reference::matmul::{check_packed, check_shapes, Matmul, PackedWeight};
use crate::{Result, TensorView};

pub use super::FastCpu;

impl Matmul for FastCpu {
    fn masked_matmul(
        &self,
        x: &[f32],
        p: usize,
        w: &TensorView,
        mask: Option<&[u8]>,
    ) -> Result<Vec<f32>> {
        let (out, inn) = check_shapes(x, p, w, mask)?;
        let mut wf = w.to_f32()?;
        if let Some(m) = mask {
            wf.par_iter_mut().zip(m.par_iter()).for_each(|(v, &k)| {
                if k == 0 {
                    *v = 0.0;
                }
            });
        }
        // yᵀ[o][i] = w[o]·x[i], computed per weight row for locality.
        let mut yt = vec![0.0f32; out * p];
        if inn > 0 {
            yt.par_chunks_mut(p.max(1))
                .zip(wf.par_chunks(inn))
                .for_each(|(col, wrow)| {
                    for (i, y) in col.iter_mut().enumerate() {
                        let xr = &x[i * inn..(i + 1) * inn];
                        *y = dot(xr, wrow);
                    }
                });
        }
        Ok(transpose(&yt, out, p))
    }

    fn dequant_matmul(&self, x: &[f32], p: usize, w: &PackedWeight) -> Result<Vec<f32>> {
        let (out, inn) = check_packed(x, p, w)?;
        // One weight row at a time is dequantized into a scratch row.
        let mut yt = vec![0.0f32; out * p];
        if inn > 0 {
            yt.par_chunks_mut(p.max(1)).enumerate().for_each_init(
                || vec![0.0f32; inn],
                |row, (o, col)| {
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = w.value(o, k);
                    }
                    for (i, y) in col.iter_mut().enumerate() {
                        *y = dot(&x[i * inn..(i + 1) * inn], row);
                    }
                },
            );
        }
        Ok(transpose(&yt, out, p))
    }
}

/// Y [p, out] from Yᵀ [out, p].
fn transpose(yt: &[f32], out: usize, p: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; p * out];
    for o in 0..out {
        for i in 0..p {
            y[i * out + o] = yt[o * p + i];
        }
    }
    y
}

/// Dot product with 8 independent accumulators (vectorises).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for j in chunks..a.len() {
        s += a[j] * b[j];
    }
    s
}
