//! Fast CPU path of the `forward` family: products through the
//! `matrixmultiply` crate's blocked SGEMM (one call per block of rows, the
//! blocks in parallel on rayon), attention per (sequence, head) in
//! parallel with both of its products as SGEMMs, and the elementwise
//! operations row-parallel. Agrees with the reference within
//! [`crate::reference::forward::FORWARD_RTOL`] (sums in other orders).

use rayon::prelude::*;

use crate::model::rope::RopeTable;
use crate::reference::forward::{rotate, silu, AttnShape, Forward};
use crate::reference::Reference;
use crate::Result;

pub use super::FastCpu;

/// Rows per parallel block of a product.
const ROW_BLOCK: usize = 64;

/// C [m, n] = A · B for strided row-major views (see matrixmultiply).
///
/// # Safety
/// `a` holds m×k elements at (i·rsa + j·csa), `b` k×n at (i·rsb + j·csb),
/// `c` m×n at (i·n + j) with c.len() ≥ m·n.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    c: &mut [f32],
) {
    debug_assert!(c.len() >= m * n);
    matrixmultiply::sgemm(
        m,
        k,
        n,
        1.0,
        a,
        rsa as isize,
        csa as isize,
        b,
        rsb as isize,
        csb as isize,
        0.0,
        c.as_mut_ptr(),
        n as isize,
        1,
    );
}

impl Forward for FastCpu {
    fn backend(&self) -> &'static str {
        "cpu"
    }

    fn linear(
        &self,
        x: &[f32],
        p: usize,
        w: &[f32],
        out: usize,
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        let inn = x.len().checked_div(p).unwrap_or(0);
        assert_eq!(w.len(), out * inn, "weight is [out, in]");
        let mut y = vec![0.0f32; p * out];
        if p == 0 || out == 0 {
            return Ok(y);
        }
        y.par_chunks_mut(ROW_BLOCK * out)
            .zip(x.par_chunks(ROW_BLOCK * inn))
            .for_each(|(yc, xc)| {
                let m = xc.len() / inn.max(1);
                // SAFETY: xc is [m, inn] row-major; w is [out, inn], read
                // as Wᵀ [inn, out] (row stride 1, column stride inn); yc is
                // [m, out].
                unsafe { gemm(m, inn, out, xc.as_ptr(), inn, 1, w.as_ptr(), 1, inn, yc) };
                if let Some(b) = bias {
                    for row in yc.chunks_exact_mut(out) {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    }
                }
            });
        Ok(y)
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>> {
        let d = w.len();
        let mut y = vec![0.0f32; x.len()];
        y.par_chunks_mut(d * 64)
            .zip(x.par_chunks(d * 64))
            .try_for_each(|(yc, xc)| {
                yc.copy_from_slice(&Reference.rms_norm(xc, w, eps)?);
                Ok::<_, crate::Error>(())
            })?;
        Ok(y)
    }

    fn rope(
        &self,
        x: &mut [f32],
        _seqs: usize,
        seq_len: usize,
        heads: usize,
        t: &RopeTable,
    ) -> Result<()> {
        let width = heads * 2 * t.half;
        if width > 0 {
            x.par_chunks_mut(width).enumerate().for_each(|(tok, row)| {
                let pos = tok % seq_len;
                rotate(row, t.cos(pos), t.sin(pos));
            });
        }
        Ok(())
    }

    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Result<Vec<f32>> {
        let (d, l) = (s.head_dim, s.seq_len);
        let (qw, kw) = (s.heads * d, s.kv_heads * d);
        let group = s.heads / s.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let blocks: Vec<(usize, usize, Vec<f32>)> = (0..s.seqs * s.heads)
            .into_par_iter()
            .map(|job| {
                let (sq, h) = (job / s.heads, job % s.heads);
                let kh = h / group;
                let base = sq * l;
                let mut scores = vec![0.0f32; l * l];
                // SAFETY: head h of q is [l, d] at stride qw; head kh of k,
                // read as Kᵀ [d, l], has row stride 1 and column stride kw;
                // scores is [l, l].
                unsafe {
                    gemm(
                        l,
                        d,
                        l,
                        q[base * qw + h * d..].as_ptr(),
                        qw,
                        1,
                        k[base * kw + kh * d..].as_ptr(),
                        1,
                        kw,
                        &mut scores,
                    )
                };
                for (i, row) in scores.chunks_exact_mut(l).enumerate() {
                    let live = &mut row[..=i];
                    let mut max = f32::NEG_INFINITY;
                    for x in live.iter_mut() {
                        *x *= scale;
                        max = max.max(*x);
                    }
                    let mut sum = 0.0f32;
                    for x in live.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    live.iter_mut().for_each(|x| *x /= sum);
                    row[i + 1..].fill(0.0);
                }
                let mut o = vec![0.0f32; l * d];
                // SAFETY: scores is [l, l]; head kh of v is [l, d] at
                // stride kw; o is [l, d].
                unsafe {
                    gemm(
                        l,
                        l,
                        d,
                        scores.as_ptr(),
                        l,
                        1,
                        v[base * kw + kh * d..].as_ptr(),
                        kw,
                        1,
                        &mut o,
                    )
                };
                (sq, h, o)
            })
            .collect();
        let mut out = vec![0.0f32; s.seqs * l * qw];
        for (sq, h, o) in blocks {
            for (i, row) in o.chunks_exact(d).enumerate() {
                out[(sq * l + i) * qw + h * d..][..d].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    fn silu_mul(&self, gate: &[f32], up: &[f32]) -> Result<Vec<f32>> {
        Ok(gate
            .par_iter()
            .zip(up.par_iter())
            .map(|(&g, &u)| silu(g) * u)
            .collect())
    }

    fn nll(&self, logits: &[f32], vocab: usize, targets: &[u32]) -> Result<Vec<f32>> {
        logits
            .par_chunks_exact(vocab)
            .zip(targets.par_iter())
            .map(|(row, &t)| Ok(Reference.nll(row, vocab, &[t])?[0]))
            .collect()
    }
}
