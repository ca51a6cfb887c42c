//! The CPU reference of the block operations ([`BlockOps`] on
//! [`super::Reference`]): plain loops in f32 in the orders the trait
//! documents. The per-row and per-sequence functions are also what the fast
//! CPU path runs on pieces in parallel, so its results are these bit for
//! bit.

use super::forward::{silu, AttnShape};
use crate::train::block_device::{triangle_len, BlockOps};
use crate::Result;

/// Σ a·b in increasing index, f32: the reference's dot product (the fast
/// path passes its own to the attention functions below).
pub(crate) fn dot_in_order(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

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

/// [`BlockOps::attention`] of head `h` of one sequence (q, k, v its token
/// rows): the head's triangle of weights into `p`, its output [seq_len,
/// head_dim] into `o`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_head(
    dot: impl Fn(&[f32], &[f32]) -> f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    h: usize,
    p: &mut [f32],
    o: &mut [f32],
    s: &AttnShape,
) {
    let (d, l) = (s.head_dim, s.seq_len);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let kh = h / (s.heads / s.kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    o.fill(0.0);
    for i in 0..l {
        let row = &mut p[i * (i + 1) / 2..][..i + 1];
        let qi = &q[i * qw + h * d..][..d];
        let mut max = f32::NEG_INFINITY;
        for (j, pj) in row.iter_mut().enumerate() {
            *pj = dot(qi, &k[j * kw + kh * d..][..d]) * scale;
            max = max.max(*pj);
        }
        let mut sum = 0.0f32;
        for pj in row.iter_mut() {
            *pj = (*pj - max).exp();
            sum += *pj;
        }
        let oi = &mut o[i * d..][..d];
        for (j, pj) in row.iter_mut().enumerate() {
            *pj /= sum;
            let vj = &v[j * kw + kh * d..][..d];
            for c in 0..d {
                oi[c] += *pj * vj[c];
            }
        }
    }
}

/// Shared inputs of the attention's backward pass: one sequence's q, k, v,
/// p (all heads' triangles), da.
pub(crate) struct AttnSeq<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub p: &'a [f32],
    pub da: &'a [f32],
}

/// Head `h`'s dS (its triangle, into `ds`) and dq ([seq_len, head_dim],
/// into `dq`).
pub(crate) fn attention_ds_head(
    dot: impl Fn(&[f32], &[f32]) -> f32,
    x: &AttnSeq,
    h: usize,
    ds: &mut [f32],
    dq: &mut [f32],
    s: &AttnShape,
) {
    let (d, l) = (s.head_dim, s.seq_len);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let kh = h / (s.heads / s.kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    let tri = l * (l + 1) / 2;
    let p = &x.p[h * tri..][..tri];
    dq.fill(0.0);
    for i in 0..l {
        let off = i * (i + 1) / 2;
        let (prow, drow) = (&p[off..][..i + 1], &mut ds[off..][..i + 1]);
        let dai = &x.da[i * qw + h * d..][..d];
        let mut mean = 0.0f32;
        for (j, dp) in drow.iter_mut().enumerate() {
            *dp = dot(dai, &x.v[j * kw + kh * d..][..d]);
            mean += prow[j] * *dp;
        }
        let dqi = &mut dq[i * d..][..d];
        for (j, dp) in drow.iter_mut().enumerate() {
            *dp = prow[j] * (*dp - mean) * scale;
            let kj = &x.k[j * kw + kh * d..][..d];
            for c in 0..d {
                dqi[c] += *dp * kj[c];
            }
        }
    }
}

/// KV head `kh`'s dk and dv ([seq_len, head_dim] each) from the dS of all
/// heads (`ds`, laid out as p).
pub(crate) fn attention_dkv_head(
    x: &AttnSeq,
    ds: &[f32],
    kh: usize,
    dk: &mut [f32],
    dv: &mut [f32],
    s: &AttnShape,
) {
    let (d, l) = (s.head_dim, s.seq_len);
    let qw = s.heads * d;
    let group = s.heads / s.kv_heads;
    let tri = l * (l + 1) / 2;
    dk.fill(0.0);
    dv.fill(0.0);
    for h in kh * group..(kh + 1) * group {
        for i in 0..l {
            let off = h * tri + i * (i + 1) / 2;
            let qi = &x.q[i * qw + h * d..][..d];
            let dai = &x.da[i * qw + h * d..][..d];
            for j in 0..=i {
                let (g, w) = (ds[off + j], x.p[off + j]);
                let dkj = &mut dk[j * d..][..d];
                for c in 0..d {
                    dkj[c] += g * qi[c];
                }
                let dvj = &mut dv[j * d..][..d];
                for c in 0..d {
                    dvj[c] += w * dai[c];
                }
            }
        }
    }
}

/// Copies per-head blocks [heads][rows, d] into token rows [rows, heads·d].
pub(crate) fn scatter_heads(heads: &[f32], rows: usize, d: usize, out: &mut [f32]) {
    let n = heads.len() / (rows * d).max(1);
    for (h, block) in heads.chunks_exact(rows * d).enumerate() {
        for (r, v) in block.chunks_exact(d).enumerate() {
            out[r * n * d + h * d..][..d].copy_from_slice(v);
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
        let (d, l) = (s.head_dim, s.seq_len);
        let (qw, kw) = (s.heads * d, s.kv_heads * d);
        let tri = l * (l + 1) / 2;
        let mut o = vec![0.0f32; s.heads * l * d];
        for sq in 0..s.seqs {
            let (qs, ks, vs) = (
                &q[sq * l * qw..][..l * qw],
                &k[sq * l * kw..][..l * kw],
                &v[sq * l * kw..][..l * kw],
            );
            for h in 0..s.heads {
                let ph = &mut p[(sq * s.heads + h) * tri..][..tri];
                attention_head(
                    dot_in_order,
                    qs,
                    ks,
                    vs,
                    h,
                    ph,
                    &mut o[h * l * d..][..l * d],
                    &s,
                );
            }
            scatter_heads(&o, l, d, &mut a[sq * l * qw..][..l * qw]);
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
        let (d, l) = (s.head_dim, s.seq_len);
        let (qw, kw) = (s.heads * d, s.kv_heads * d);
        let tri = seq_triangle(&s);
        let mut ds = vec![0.0f32; tri];
        let mut gq = vec![0.0f32; s.heads * l * d];
        let (mut gk, mut gv) = (
            vec![0.0f32; s.kv_heads * l * d],
            vec![0.0f32; s.kv_heads * l * d],
        );
        for sq in 0..s.seqs {
            let x = AttnSeq {
                q: &q[sq * l * qw..][..l * qw],
                k: &k[sq * l * kw..][..l * kw],
                v: &v[sq * l * kw..][..l * kw],
                p: &p[sq * tri..][..tri],
                da: &da[sq * l * qw..][..l * qw],
            };
            let head_tri = tri / s.heads;
            for h in 0..s.heads {
                let dsh = &mut ds[h * head_tri..][..head_tri];
                attention_ds_head(dot_in_order, &x, h, dsh, &mut gq[h * l * d..][..l * d], &s);
            }
            for kh in 0..s.kv_heads {
                let (dkh, dvh) = (
                    &mut gk[kh * l * d..][..l * d],
                    &mut gv[kh * l * d..][..l * d],
                );
                attention_dkv_head(&x, &ds, kh, dkh, dvh, &s);
            }
            scatter_heads(&gq, l, d, &mut dq[sq * l * qw..][..l * qw]);
            scatter_heads(&gk, l, d, &mut dk[sq * l * kw..][..l * kw]);
            scatter_heads(&gv, l, d, &mut dv[sq * l * kw..][..l * kw]);
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
