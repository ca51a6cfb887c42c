//! The block operations on the fast CPU path: the reference's own per-row,
//! per-head and elementwise functions run on pieces in parallel, so the
//! results are the reference's bit for bit, except the attention scores'
//! and dS's dot products, summed in eight lanes (AVX2 where the CPU has it)
//! instead of in index order: within the GPU's tolerance of the reference.

use rayon::prelude::*;

use super::matmul::dot;

use crate::reference::block_train::{
    attention_dkv_head, attention_ds_head, attention_head, rms_back_rows, rms_rows, rope_rows,
    scatter_heads, seq_triangle, silu_mul_back_slice, AttnSeq,
};
use crate::reference::forward::{silu, AttnShape};
use crate::train::block_device::BlockOps;
use crate::Result;

/// The matmul family's eight-lane dot product, compiled for AVX2 where the
/// CPU has it.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
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

/// Rows per parallel piece.
const ROWS: usize = 64;
/// Values per parallel piece of an elementwise op.
const PIECE: usize = 1 << 16;

impl BlockOps for super::FastCpu {
    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        let n = rows * cols;
        y[..n]
            .par_chunks_mut(ROWS * cols)
            .zip(x[..n].par_chunks(ROWS * cols))
            .for_each(|(y, x)| rms_rows(x, &w[..cols], y, eps));
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
        let (n, piece) = (rows * cols, ROWS * cols);
        dx[..n]
            .par_chunks_mut(piece)
            .zip(x[..n].par_chunks(piece))
            .zip(dy[..n].par_chunks(piece))
            .for_each(|((dx, x), dy)| rms_back_rows(x, &w[..cols], dy, dx, eps));
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
        y[..n]
            .par_chunks_mut(ROWS * width)
            .zip(x[..n].par_chunks(ROWS * width))
            .enumerate()
            .for_each(|(i, (y, x))| {
                rope_rows(x, cos, sin, y, width, half, seq_len, i * ROWS, inverse)
            });
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
        // Every (sequence, head) in parallel, each head's output in a block
        // of its own, then put in the token rows.
        let mut o = vec![0.0f32; s.seqs * s.heads * l * d];
        p[..s.seqs * s.heads * tri]
            .par_chunks_mut(tri)
            .zip(o.par_chunks_mut(l * d))
            .enumerate()
            .for_each(|(e, (ph, oh))| {
                let (sq, h) = (e / s.heads, e % s.heads);
                let (qs, ks, vs) = (
                    &q[sq * l * qw..][..l * qw],
                    &k[sq * l * kw..][..l * kw],
                    &v[sq * l * kw..][..l * kw],
                );
                attention_head(dot8, qs, ks, vs, h, ph, oh, &s);
            });
        a[..s.seqs * l * qw]
            .par_chunks_mut(l * qw)
            .zip(o.par_chunks(s.heads * l * d))
            .for_each(|(a, o)| scatter_heads(o, l, d, a));
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
        let (tri, head_tri) = (seq_triangle(&s), l * (l + 1) / 2);
        let seq = |sq: usize| AttnSeq {
            q: &q[sq * l * qw..][..l * qw],
            k: &k[sq * l * kw..][..l * kw],
            v: &v[sq * l * kw..][..l * kw],
            p: &p[sq * tri..][..tri],
            da: &da[sq * l * qw..][..l * qw],
        };
        let mut ds = vec![0.0f32; s.seqs * tri];
        let mut gq = vec![0.0f32; s.seqs * s.heads * l * d];
        ds.par_chunks_mut(head_tri)
            .zip(gq.par_chunks_mut(l * d))
            .enumerate()
            .for_each(|(e, (dsh, gh))| {
                let (sq, h) = (e / s.heads, e % s.heads);
                attention_ds_head(dot8, &seq(sq), h, dsh, gh, &s);
            });
        let mut gk = vec![0.0f32; s.seqs * s.kv_heads * l * d];
        let mut gv = vec![0.0f32; gk.len()];
        gk.par_chunks_mut(l * d)
            .zip(gv.par_chunks_mut(l * d))
            .enumerate()
            .for_each(|(e, (dkh, dvh))| {
                let (sq, kh) = (e / s.kv_heads, e % s.kv_heads);
                attention_dkv_head(&seq(sq), &ds[sq * tri..][..tri], kh, dkh, dvh, &s);
            });
        for (out, heads, width, n) in [
            (&mut dq[..], &gq, qw, s.heads),
            (&mut dk[..], &gk, kw, s.kv_heads),
            (&mut dv[..], &gv, kw, s.kv_heads),
        ] {
            out[..s.seqs * l * width]
                .par_chunks_mut(l * width)
                .zip(heads.par_chunks(n * l * d))
                .for_each(|(o, hs)| scatter_heads(hs, l, d, o));
        }
        Ok(())
    }

    fn silu_mul(&self, gate: &Vec<f32>, up: &Vec<f32>, m: &mut Vec<f32>, n: usize) -> Result<()> {
        m[..n].par_chunks_mut(PIECE).enumerate().for_each(|(i, m)| {
            let at = i * PIECE;
            for (j, o) in m.iter_mut().enumerate() {
                *o = silu(gate[at + j]) * up[at + j];
            }
        });
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
        dgate[..n]
            .par_chunks_mut(PIECE)
            .zip(dup[..n].par_chunks_mut(PIECE))
            .enumerate()
            .for_each(|(i, (dg, du))| {
                let r = i * PIECE..i * PIECE + dg.len();
                silu_mul_back_slice(&gate[r.clone()], &up[r.clone()], &dm[r], dg, du)
            });
        Ok(())
    }

    fn add(&self, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>, n: usize) -> Result<()> {
        c[..n].par_chunks_mut(PIECE).enumerate().for_each(|(i, c)| {
            let at = i * PIECE;
            for (j, o) in c.iter_mut().enumerate() {
                *o = a[at + j] + b[at + j];
            }
        });
        Ok(())
    }
}
