//! The CPU reference of the block operations ([`BlockOps`] on
//! [`super::Reference`]): plain loops in f32 in the orders the trait
//! documents. The per-row and per-sequence functions are also what the fast
//! CPU path runs on pieces in parallel, so its results are these bit for
//! bit.

use super::forward::{silu, AttnShape};
use crate::train::block_device::{triangle_len, BlockOps};
use crate::Result;

/// 1/√(Σx²/cols + eps) of one row, the sum in increasing column.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut ss = 0.0f32;
    for &v in x {
        ss += v * v;
    }
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

/// [`BlockOps::rms_norm`] of whole rows.
pub(crate) fn rms_rows(x: &[f32], w: &[f32], y: &mut [f32], eps: f32) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let r = inv_rms(xr, eps);
        for k in 0..d {
            yr[k] = w[k] * (xr[k] * r);
        }
    }
}

/// [`BlockOps::rms_norm_backward`] of whole rows.
pub(crate) fn rms_back_rows(x: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], eps: f32) {
    let d = w.len();
    for ((xr, gr), dr) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let r = inv_rms(xr, eps);
        let mut gx = 0.0f32;
        for k in 0..d {
            gx += gr[k] * w[k] * xr[k];
        }
        let c = r * r * r * gx / d as f32;
        for k in 0..d {
            dr[k] = r * (gr[k] * w[k]) - xr[k] * c;
        }
    }
}

/// [`BlockOps::rope`] of whole token rows, the first being row `first`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope_rows(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    y: &mut [f32],
    width: usize,
    half: usize,
    seq_len: usize,
    first: usize,
    inverse: bool,
) {
    for (t, (xr, yr)) in x
        .chunks_exact(width)
        .zip(y.chunks_exact_mut(width))
        .enumerate()
    {
        let pos = (first + t) % seq_len;
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        for (xv, yv) in xr.chunks_exact(2 * half).zip(yr.chunks_exact_mut(2 * half)) {
            for j in 0..half {
                let (a, b) = (xv[j], xv[j + half]);
                let sn = if inverse { -s[j] } else { s[j] };
                yv[j] = a * c[j] - b * sn;
                yv[j + half] = b * c[j] + a * sn;
            }
        }
    }
}

/// Values of one sequence's attention weights (all heads).
pub(crate) fn seq_triangle(s: &AttnShape) -> usize {
    s.heads * s.seq_len * (s.seq_len + 1) / 2
}

/// [`BlockOps::attention`] of one sequence: q, k, v, a are its token rows,
/// p its heads' triangles.
pub(crate) fn attention_seq(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &mut [f32],
    a: &mut [f32],
    s: &AttnShape,
) {
    let (d, l) = (s.head_dim, s.seq_len);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let tri = l * (l + 1) / 2;
    a.fill(0.0);
    for h in 0..s.heads {
        let kh = h / group;
        for i in 0..l {
            let row = &mut p[h * tri + i * (i + 1) / 2..][..i + 1];
            let qi = &q[i * qw + h * d..][..d];
            let mut max = f32::NEG_INFINITY;
            for (j, pj) in row.iter_mut().enumerate() {
                let kj = &k[j * kw + kh * d..][..d];
                let mut dot = 0.0f32;
                for c in 0..d {
                    dot += qi[c] * kj[c];
                }
                *pj = dot * scale;
                max = max.max(*pj);
            }
            let mut sum = 0.0f32;
            for pj in row.iter_mut() {
                *pj = (*pj - max).exp();
                sum += *pj;
            }
            let o = &mut a[i * qw + h * d..][..d];
            for (j, pj) in row.iter_mut().enumerate() {
                *pj /= sum;
                let vj = &v[j * kw + kh * d..][..d];
                for c in 0..d {
                    o[c] += *pj * vj[c];
                }
            }
        }
    }
}

/// Shared inputs of [`attention_back_seq`]: one sequence's q, k, v, p, da.
pub(crate) struct AttnSeq<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub p: &'a [f32],
    pub da: &'a [f32],
}

/// [`BlockOps::attention_backward`] of one sequence.
pub(crate) fn attention_back_seq(
    x: &AttnSeq,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    s: &AttnShape,
) {
    let (d, l) = (s.head_dim, s.seq_len);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let tri = l * (l + 1) / 2;
    // dS of every head, same layout as p.
    let mut ds = vec![0.0f32; x.p.len()];
    dq.fill(0.0);
    for h in 0..s.heads {
        let kh = h / group;
        for i in 0..l {
            let off = h * tri + i * (i + 1) / 2;
            let (prow, drow) = (&x.p[off..][..i + 1], &mut ds[off..][..i + 1]);
            let dai = &x.da[i * qw + h * d..][..d];
            let mut mean = 0.0f32;
            for (j, dp) in drow.iter_mut().enumerate() {
                let vj = &x.v[j * kw + kh * d..][..d];
                let mut dot = 0.0f32;
                for c in 0..d {
                    dot += dai[c] * vj[c];
                }
                *dp = dot;
                mean += prow[j] * dot;
            }
            let dqi = &mut dq[i * qw + h * d..][..d];
            for (j, dp) in drow.iter_mut().enumerate() {
                *dp = prow[j] * (*dp - mean) * scale;
                let kj = &x.k[j * kw + kh * d..][..d];
                for c in 0..d {
                    dqi[c] += *dp * kj[c];
                }
            }
        }
    }
    dk.fill(0.0);
    dv.fill(0.0);
    for h in 0..s.heads {
        let kh = h / group;
        for i in 0..l {
            let off = h * tri + i * (i + 1) / 2;
            let qi = &x.q[i * qw + h * d..][..d];
            let dai = &x.da[i * qw + h * d..][..d];
            for j in 0..=i {
                let (g, w) = (ds[off + j], x.p[off + j]);
                let dkj = &mut dk[j * kw + kh * d..][..d];
                for c in 0..d {
                    dkj[c] += g * qi[c];
                }
                let dvj = &mut dv[j * kw + kh * d..][..d];
                for c in 0..d {
                    dvj[c] += w * dai[c];
                }
            }
        }
    }
}

/// [`BlockOps::silu_mul_backward`] on matching slices.
pub(crate) fn silu_mul_back_slice(
    gate: &[f32],
    up: &[f32],
    dm: &[f32],
    dgate: &mut [f32],
    dup: &mut [f32],
) {
    for i in 0..dm.len() {
        let g = gate[i];
        let sg = 1.0 / (1.0 + (-g).exp());
        dgate[i] = dm[i] * up[i] * (sg * (1.0 + g * (1.0 - sg)));
        dup[i] = dm[i] * silu(g);
    }
}

impl BlockOps for super::Reference {
    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        rms_rows(&x[..rows * cols], &w[..cols], &mut y[..rows * cols], eps);
        Ok(())
    }

    fn rms_norm_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        let n = rows * cols;
        rms_back_rows(&x[..n], &w[..cols], &dy[..n], &mut dx[..n], eps);
        Ok(())
    }

    fn rope(
        &self,
        x: &Vec<f32>,
        cos: &Vec<f32>,
        sin: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        width: usize,
        half: usize,
        seq_len: usize,
        inverse: bool,
    ) -> Result<()> {
        let n = rows * width;
        rope_rows(
            &x[..n],
            cos,
            sin,
            &mut y[..n],
            width,
            half,
            seq_len,
            0,
            inverse,
        );
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: &mut Vec<f32>,
        a: &mut Vec<f32>,
        s: AttnShape,
    ) -> Result<()> {
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let (l, tri) = (s.seq_len, seq_triangle(&s));
        for sq in 0..s.seqs {
            attention_seq(
                &q[sq * l * qw..][..l * qw],
                &k[sq * l * kw..][..l * kw],
                &v[sq * l * kw..][..l * kw],
                &mut p[sq * tri..][..tri],
                &mut a[sq * l * qw..][..l * qw],
                &s,
            );
        }
        debug_assert!(p.len() >= triangle_len(&s));
        Ok(())
    }

    fn attention_backward(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: &Vec<f32>,
        da: &Vec<f32>,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
        s: AttnShape,
    ) -> Result<()> {
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let (l, tri) = (s.seq_len, seq_triangle(&s));
        for sq in 0..s.seqs {
            let x = AttnSeq {
                q: &q[sq * l * qw..][..l * qw],
                k: &k[sq * l * kw..][..l * kw],
                v: &v[sq * l * kw..][..l * kw],
                p: &p[sq * tri..][..tri],
                da: &da[sq * l * qw..][..l * qw],
            };
            attention_back_seq(
                &x,
                &mut dq[sq * l * qw..][..l * qw],
                &mut dk[sq * l * kw..][..l * kw],
                &mut dv[sq * l * kw..][..l * kw],
                &s,
            );
        }
        Ok(())
    }

    fn silu_mul(&self, gate: &Vec<f32>, up: &Vec<f32>, m: &mut Vec<f32>, n: usize) -> Result<()> {
        for i in 0..n {
            m[i] = silu(gate[i]) * up[i];
        }
        Ok(())
    }

    fn silu_mul_backward(
        &self,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        dm: &Vec<f32>,
        dgate: &mut Vec<f32>,
        dup: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        silu_mul_back_slice(
            &gate[..n],
            &up[..n],
            &dm[..n],
            &mut dgate[..n],
            &mut dup[..n],
        );
        Ok(())
    }

    fn add(&self, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>, n: usize) -> Result<()> {
        for i in 0..n {
            c[i] = a[i] + b[i];
        }
        Ok(())
    }
}
