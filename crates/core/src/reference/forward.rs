//! CPU reference of the `forward` family: the operations of a Llama-family
//! decoder in f32, written as plainly as the arithmetic they specify.
//! Activations are row-major `[tokens, features]`; a batch is `seqs`
//! sequences of `seq_len` tokens each, back to back. Sums run in increasing
//! index order; other backends sum in other orders and agree within
//! [`FORWARD_RTOL`].

use crate::model::rope::RopeTable;
use crate::Result;

/// Relative tolerance between backends on hidden states and logits, scaled
/// by the largest magnitude of the compared tensor.
pub const FORWARD_RTOL: f32 = 1e-4;

/// Shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub seqs: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The forward family on one backend.
pub trait Forward: Sync {
    /// Short name of the backend, for reports.
    fn backend(&self) -> &'static str;

    /// Y [p, out] = X [p, in] · Wᵀ (+ b), W [out, in] row-major.
    fn linear(
        &self,
        x: &[f32],
        p: usize,
        w: &[f32],
        out: usize,
        bias: Option<&[f32]>,
    ) -> Result<Vec<f32>>;

    /// Each row of `x` (rows of `w.len()`) divided by its root mean square
    /// (+ eps under the root) and multiplied by `w`.
    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>>;

    /// Rotates each head of `x` ([seqs·seq_len, heads·head_dim]) by its
    /// token's position in its sequence (0-based): element j pairs with
    /// j + head_dim/2, as transformers' `rotate_half` does.
    fn rope(
        &self,
        x: &mut [f32],
        seqs: usize,
        seq_len: usize,
        heads: usize,
        table: &RopeTable,
    ) -> Result<()>;

    /// Causal attention with grouped KV heads: q [tokens, heads·d], k and v
    /// [tokens, kv_heads·d]; returns [tokens, heads·d]. Scores are scaled
    /// by 1/√d and softmaxed in f32.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Result<Vec<f32>>;

    /// silu(gate) · up, elementwise.
    fn silu_mul(&self, gate: &[f32], up: &[f32]) -> Result<Vec<f32>>;

    /// −log softmax(logits[t])[targets[t]] per row of `vocab` logits.
    fn nll(&self, logits: &[f32], vocab: usize, targets: &[u32]) -> Result<Vec<f32>>;
}

/// The reference backend.
pub use super::Reference;

impl Forward for Reference {
    fn backend(&self) -> &'static str {
        "cpu-reference"
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
        let mut y = vec![0.0f32; p * out];
        for i in 0..p {
            let xr = &x[i * inn..(i + 1) * inn];
            for o in 0..out {
                let wr = &w[o * inn..(o + 1) * inn];
                let mut s = 0.0f32;
                for k in 0..inn {
                    s += xr[k] * wr[k];
                }
                y[i * out + o] = s + bias.map_or(0.0, |b| b[o]);
            }
        }
        Ok(y)
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>> {
        let d = w.len();
        let mut y = vec![0.0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let mut ss = 0.0f32;
            for &v in xr {
                ss += v * v;
            }
            let inv = 1.0 / (ss / d as f32 + eps).sqrt();
            for k in 0..d {
                yr[k] = w[k] * (xr[k] * inv);
            }
        }
        Ok(y)
    }

    fn rope(
        &self,
        x: &mut [f32],
        seqs: usize,
        seq_len: usize,
        heads: usize,
        t: &RopeTable,
    ) -> Result<()> {
        let width = heads * 2 * t.half;
        for tok in 0..seqs * seq_len {
            let pos = tok % seq_len;
            rotate(
                &mut x[tok * width..(tok + 1) * width],
                t.cos(pos),
                t.sin(pos),
            );
        }
        Ok(())
    }

    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Result<Vec<f32>> {
        let d = s.head_dim;
        let (qw, kw) = (s.heads * d, s.kv_heads * d);
        let group = s.heads / s.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0.0f32; s.seqs * s.seq_len * qw];
        let mut p = vec![0.0f32; s.seq_len];
        for sq in 0..s.seqs {
            let base = sq * s.seq_len;
            for h in 0..s.heads {
                let kh = h / group;
                for i in 0..s.seq_len {
                    let qi = &q[(base + i) * qw + h * d..][..d];
                    let mut max = f32::NEG_INFINITY;
                    for (j, pj) in p.iter_mut().enumerate().take(i + 1) {
                        let kj = &k[(base + j) * kw + kh * d..][..d];
                        let mut dot = 0.0f32;
                        for c in 0..d {
                            dot += qi[c] * kj[c];
                        }
                        *pj = dot * scale;
                        max = max.max(*pj);
                    }
                    let mut sum = 0.0f32;
                    for pj in p.iter_mut().take(i + 1) {
                        *pj = (*pj - max).exp();
                        sum += *pj;
                    }
                    let o = &mut out[(base + i) * qw + h * d..][..d];
                    for (j, pj) in p.iter().enumerate().take(i + 1) {
                        let vj = &v[(base + j) * kw + kh * d..][..d];
                        let w = pj / sum;
                        for c in 0..d {
                            o[c] += w * vj[c];
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn silu_mul(&self, gate: &[f32], up: &[f32]) -> Result<Vec<f32>> {
        Ok(gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect())
    }

    fn nll(&self, logits: &[f32], vocab: usize, targets: &[u32]) -> Result<Vec<f32>> {
        Ok(logits
            .chunks_exact(vocab)
            .zip(targets)
            .map(|(row, &t)| {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0.0f32;
                for &x in row {
                    sum += (x - max).exp();
                }
                max + sum.ln() - row[t as usize]
            })
            .collect())
    }
}

/// Rotates every head of one token's row by the angles whose cos and sin
/// are given (head_dim/2 each): element j pairs with j + head_dim/2.
#[inline]
pub fn rotate(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for v in row.chunks_exact_mut(2 * half) {
        for j in 0..half {
            let (a, b) = (v[j], v[j + half]);
            v[j] = a * cos[j] - b * sin[j];
            v[j + half] = b * cos[j] + a * sin[j];
        }
    }
}

/// x·σ(x), as torch computes it: x / (1 + e^(−x)).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}
