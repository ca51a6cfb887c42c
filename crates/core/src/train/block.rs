//! One Llama-family decoder block, forward and backward, in f64: the
//! specification of block-wise distillation (every linear layer of a block
//! trained together against the teacher block's output). Written as plainly
//! as the arithmetic, like `reference::forward`, whose f32 operations the
//! forward pass follows: RMSNorm, q/k/v (with their biases), Qwen3's per-head
//! q/k RMSNorm, RoPE (`rotate_half` pairing), causal grouped-query attention
//! scaled by 1/√d, o, the residual, RMSNorm, SwiGLU and down, the residual.
//!
//! The backward pass gives the gradient of a loss with respect to the seven
//! linear weights only (norm weights, biases and the block's input are held
//! fixed), which is what distillation trains.

use super::block_ops::{rms_back, rms_rows, rotate_back, silu, silu_grad};
use crate::model::rope::RopeTable;
use crate::model::LayerWeights;

/// What the block's shape is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockShape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub inter: usize,
    pub seq_len: usize,
    pub eps: f64,
}

impl BlockShape {
    /// The block of a decoder layer of `cfg` over sequences of `seq_len`.
    pub fn new(cfg: &crate::model::ModelConfig, seq_len: usize) -> Self {
        BlockShape {
            hidden: cfg.hidden,
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            inter: cfg.intermediate,
            seq_len,
            eps: cfg.rms_eps as f64,
        }
    }
}

/// The block's weights in f64: the seven linears in `LayerWeights::linears`
/// order (q, k, v, o, gate, up, down), each [out, in] row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub input_norm: Vec<f64>,
    pub post_norm: Vec<f64>,
    pub q_norm: Option<Vec<f64>>,
    pub k_norm: Option<Vec<f64>>,
    pub linears: [Vec<f64>; 7],
    /// Biases of q, k, v and o, where the family has them.
    pub biases: [Option<Vec<f64>>; 4],
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

impl Block {
    /// The block of a decoder layer as the forward pass reads it.
    pub fn from_layer(lw: &LayerWeights) -> Self {
        let l = lw.linears();
        Block {
            input_norm: wide(&lw.input_norm),
            post_norm: wide(&lw.post_norm),
            q_norm: lw.q_norm.as_deref().map(wide),
            k_norm: lw.k_norm.as_deref().map(wide),
            linears: l.map(|x| wide(&x.w)),
            biases: [0, 1, 2, 3].map(|i| l[i].bias.as_deref().map(wide)),
        }
    }
}

/// What the backward pass needs of one forward pass.
pub struct Cache {
    hn: Vec<f64>,
    q_pre: Vec<f64>,
    k_pre: Vec<f64>,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    /// Attention weights per sequence, head and query: row i holds i + 1.
    p: Vec<f64>,
    a: Vec<f64>,
    x2: Vec<f64>,
    hn2: Vec<f64>,
    gate: Vec<f64>,
    up: Vec<f64>,
    m: Vec<f64>,
}

/// C [m, n] = A · B with A and B given by their row and column strides,
/// on the `matrixmultiply` crate's f64 GEMM (all cores' worth of one).
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f64], isize, isize),
    b: (&[f64], isize, isize),
) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    if m * k * n == 0 {
        return c;
    }
    // SAFETY: a holds m×k and b k×n elements at the given strides (the
    // callers' shapes), c is m×n row-major.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.0.as_ptr(),
            a.1,
            a.2,
            b.0.as_ptr(),
            b.1,
            b.2,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

/// Y [p, out] = X [p, in] · Wᵀ (+ b).
fn linear(x: &[f64], w: &[f64], out: usize, b: Option<&[f64]>) -> Vec<f64> {
    let inn = w.len() / out;
    let p = x.len() / inn;
    let mut y = gemm(p, inn, out, (x, inn as isize, 1), (w, 1, inn as isize));
    if let Some(b) = b {
        for r in y.chunks_exact_mut(out) {
            r.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    }
    y
}

/// dX [p, in] = dY [p, out] · W.
fn linear_back_x(dy: &[f64], w: &[f64], out: usize) -> Vec<f64> {
    let inn = w.len() / out;
    let p = dy.len() / out;
    gemm(p, out, inn, (dy, out as isize, 1), (w, inn as isize, 1))
}

/// dW [out, in] = dYᵀ · X.
fn linear_back_w(dy: &[f64], x: &[f64], out: usize, inn: usize) -> Vec<f64> {
    let p = dy.len() / out;
    gemm(out, p, inn, (dy, 1, out as isize), (x, inn as isize, 1))
}

/// Rotates every head of every token by its position (forward RoPE).
fn rope(x: &mut [f64], width: usize, s: &BlockShape, t: &RopeTable) {
    for (tok, row) in x.chunks_exact_mut(width).enumerate() {
        let pos = tok % s.seq_len;
        let (cos, sin) = (t.cos(pos), t.sin(pos));
        let half = cos.len();
        for v in row.chunks_exact_mut(2 * half) {
            for j in 0..half {
                let (a, b) = (v[j], v[j + half]);
                let (c, sn) = (cos[j] as f64, sin[j] as f64);
                v[j] = a * c - b * sn;
                v[j + half] = b * c + a * sn;
            }
        }
    }
}

/// The block's output for the states `x` ([tokens, hidden], whole
/// sequences), and what the backward pass needs.
pub fn forward(s: &BlockShape, b: &Block, t: &RopeTable, x: &[f64]) -> (Vec<f64>, Cache) {
    let (h, d) = (s.hidden, s.head_dim);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let hn = rms_rows(x, &b.input_norm, s.eps);
    let lin = |i: usize, x: &[f64], out: usize| {
        let bias = b.biases.get(i).and_then(|x| x.as_deref());
        linear(x, &b.linears[i], out, bias)
    };
    let q_pre = lin(0, &hn, qw);
    let k_pre = lin(1, &hn, kw);
    let v = lin(2, &hn, kw);
    let mut q = match &b.q_norm {
        Some(n) => rms_rows(&q_pre, n, s.eps),
        None => q_pre.clone(),
    };
    let mut k = match &b.k_norm {
        Some(n) => rms_rows(&k_pre, n, s.eps),
        None => k_pre.clone(),
    };
    rope(&mut q, qw, s, t);
    rope(&mut k, kw, s, t);
    let tokens = x.len() / h;
    let (seqs, l) = (tokens / s.seq_len, s.seq_len);
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let tri = l * (l + 1) / 2;
    let mut p = vec![0.0; seqs * s.heads * tri];
    let mut a = vec![0.0; tokens * qw];
    for sq in 0..seqs {
        for hd in 0..s.heads {
            let kh = hd / group;
            for i in 0..l {
                let row = &mut p[(sq * s.heads + hd) * tri + i * (i + 1) / 2..][..i + 1];
                let qi = &q[(sq * l + i) * qw + hd * d..][..d];
                for (j, pj) in row.iter_mut().enumerate() {
                    let kj = &k[(sq * l + j) * kw + kh * d..][..d];
                    *pj = qi.iter().zip(kj).map(|(x, y)| x * y).sum::<f64>() * scale;
                }
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
                let sum: f64 = row
                    .iter_mut()
                    .map(|x| {
                        *x = (*x - max).exp();
                        *x
                    })
                    .sum();
                row.iter_mut().for_each(|x| *x /= sum);
                let o = &mut a[(sq * l + i) * qw + hd * d..][..d];
                for (j, &pj) in row.iter().enumerate() {
                    let vj = &v[(sq * l + j) * kw + kh * d..][..d];
                    for (oc, &vc) in o.iter_mut().zip(vj) {
                        *oc += pj * vc;
                    }
                }
            }
        }
    }
    let o = lin(3, &a, h);
    let x2: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
    let hn2 = rms_rows(&x2, &b.post_norm, s.eps);
    let gate = lin(4, &hn2, s.inter);
    let up = lin(5, &hn2, s.inter);
    let m: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect();
    let down = lin(6, &m, h);
    let y = x2.iter().zip(&down).map(|(a, b)| a + b).collect();
    let cache = Cache {
        hn,
        q_pre,
        k_pre,
        q,
        k,
        v,
        p,
        a,
        x2,
        hn2,
        gate,
        up,
        m,
    };
    (y, cache)
}

/// The gradients of a loss with respect to the seven linear weights, given
/// its gradient `dy` with respect to the block's output.
pub fn backward(s: &BlockShape, b: &Block, t: &RopeTable, c: &Cache, dy: &[f64]) -> [Vec<f64>; 7] {
    backward_with_biases(s, b, t, c, dy).0
}

/// Σ over rows of a [rows, width] gradient: its bias's gradient.
fn column_sums(g: &[f64], width: usize) -> Vec<f64> {
    let mut out = vec![0.0; width];
    for row in g.chunks(width) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// [`backward`] and the gradients of the q, k, v and o biases the block
/// has (the column sums of those projections' output gradients).
pub fn backward_with_biases(
    s: &BlockShape,
    b: &Block,
    t: &RopeTable,
    c: &Cache,
    dy: &[f64],
) -> ([Vec<f64>; 7], [Option<Vec<f64>>; 4]) {
    let (h, d) = (s.hidden, s.head_dim);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let w = &b.linears;
    // MLP: y = x2 + down(silu(gate) · up).
    let g_down = linear_back_w(dy, &c.m, h, s.inter);
    let dm = linear_back_x(dy, &w[6], h);
    let mut dgate = vec![0.0; dm.len()];
    let mut dup = vec![0.0; dm.len()];
    for i in 0..dm.len() {
        dgate[i] = dm[i] * c.up[i] * silu_grad(c.gate[i]);
        dup[i] = dm[i] * silu(c.gate[i]);
    }
    let g_gate = linear_back_w(&dgate, &c.hn2, s.inter, h);
    let g_up = linear_back_w(&dup, &c.hn2, s.inter, h);
    let mut dhn2 = linear_back_x(&dgate, &w[4], s.inter);
    for (a, b) in dhn2.iter_mut().zip(linear_back_x(&dup, &w[5], s.inter)) {
        *a += b;
    }
    let mut dx2 = dy.to_vec();
    for (a, b) in dx2
        .iter_mut()
        .zip(rms_back(&c.x2, &b.post_norm, s.eps, &dhn2))
    {
        *a += b;
    }
    // Attention: x2 = x + o(attn(q, k, v)).
    let g_o = linear_back_w(&dx2, &c.a, h, qw);
    let da = linear_back_x(&dx2, &w[3], h);
    let tokens = dy.len() / h;
    let (seqs, l) = (tokens / s.seq_len, s.seq_len);
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let tri = l * (l + 1) / 2;
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; tokens * qw],
        vec![0.0; tokens * kw],
        vec![0.0; tokens * kw],
    );
    let mut dp = vec![0.0; l];
    for sq in 0..seqs {
        for hd in 0..s.heads {
            let kh = hd / group;
            for i in 0..l {
                let row = &c.p[(sq * s.heads + hd) * tri + i * (i + 1) / 2..][..i + 1];
                let dai = &da[(sq * l + i) * qw + hd * d..][..d];
                for (j, &pj) in row.iter().enumerate() {
                    let vj = &c.v[(sq * l + j) * kw + kh * d..][..d];
                    dp[j] = dai.iter().zip(vj).map(|(x, y)| x * y).sum();
                    let dvj = &mut dv[(sq * l + j) * kw + kh * d..][..d];
                    for (dvc, &dac) in dvj.iter_mut().zip(dai) {
                        *dvc += pj * dac;
                    }
                }
                let mean: f64 = row.iter().zip(&dp).map(|(p, g)| p * g).sum();
                let qi = c.q[(sq * l + i) * qw + hd * d..][..d].to_vec();
                for (j, &pj) in row.iter().enumerate() {
                    let ds = pj * (dp[j] - mean) * scale;
                    let kj = &c.k[(sq * l + j) * kw + kh * d..][..d];
                    let dqi = &mut dq[(sq * l + i) * qw + hd * d..][..d];
                    for (dqc, &kc) in dqi.iter_mut().zip(kj) {
                        *dqc += ds * kc;
                    }
                    let dkj = &mut dk[(sq * l + j) * kw + kh * d..][..d];
                    for (dkc, &qc) in dkj.iter_mut().zip(&qi) {
                        *dkc += ds * qc;
                    }
                }
            }
        }
    }
    rotate_back(&mut dq, qw, s.seq_len, t);
    rotate_back(&mut dk, kw, s.seq_len, t);
    let dq_pre = match &b.q_norm {
        Some(n) => rms_back(&c.q_pre, n, s.eps, &dq),
        None => dq,
    };
    let dk_pre = match &b.k_norm {
        Some(n) => rms_back(&c.k_pre, n, s.eps, &dk),
        None => dk,
    };
    let g_q = linear_back_w(&dq_pre, &c.hn, qw, h);
    let g_k = linear_back_w(&dk_pre, &c.hn, kw, h);
    let g_v = linear_back_w(&dv, &c.hn, kw, h);
    let outs = [(&dq_pre, qw), (&dk_pre, kw), (&dv, kw), (&dx2, h)];
    let biases = std::array::from_fn(|i| {
        b.biases[i]
            .as_ref()
            .map(|_| column_sums(outs[i].0, outs[i].1))
    });
    ([g_q, g_k, g_v, g_o, g_gate, g_up, g_down], biases)
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
