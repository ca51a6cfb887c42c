//! The block operations on the fast CPU path: the reference's own per-row
//! and per-sequence functions run on pieces in parallel, so the results are
//! the reference's bit for bit.

use rayon::prelude::*;

use crate::reference::block_train::{
    attention_back_seq, attention_seq, rms_back_rows, rms_rows, rope_rows, seq_triangle,
    silu_mul_back_slice, AttnSeq,
};
use crate::reference::forward::{silu, AttnShape};
use crate::train::block_device::BlockOps;
use crate::Result;

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
        let l = s.seq_len;
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let tri = seq_triangle(&s);
        p[..s.seqs * tri]
            .par_chunks_mut(tri)
            .zip(a[..s.seqs * l * qw].par_chunks_mut(l * qw))
            .enumerate()
            .for_each(|(sq, (p, a))| {
                attention_seq(
                    &q[sq * l * qw..][..l * qw],
                    &k[sq * l * kw..][..l * kw],
                    &v[sq * l * kw..][..l * kw],
                    p,
                    a,
                    &s,
                )
            });
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
        let l = s.seq_len;
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let tri = seq_triangle(&s);
        dq[..s.seqs * l * qw]
            .par_chunks_mut(l * qw)
            .zip(dk[..s.seqs * l * kw].par_chunks_mut(l * kw))
            .zip(dv[..s.seqs * l * kw].par_chunks_mut(l * kw))
            .enumerate()
            .for_each(|(sq, ((dq, dk), dv))| {
                let x = AttnSeq {
                    q: &q[sq * l * qw..][..l * qw],
                    k: &k[sq * l * kw..][..l * kw],
                    v: &v[sq * l * kw..][..l * kw],
                    p: &p[sq * tri..][..tri],
                    da: &da[sq * l * qw..][..l * qw],
                };
                attention_back_seq(&x, dq, dk, dv, &s)
            });
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
