//! One decoder block's forward and backward pass in f32 on any backend
//! ([`BlockOps`]): the same arithmetic as the f64 specification of
//! [`super::block`], composed from the device's products and block
//! operations, so block-wise distillation trains on the CPU paths and the
//! GPU alike. The seven linear weights and the q/k/v/o biases get
//! gradients.

use super::block::BlockShape;
use super::block_device::{triangle_len, BlockOps};
use crate::model::rope::RopeTable;
use crate::model::LayerWeights;
use crate::reference::forward::AttnShape;
use crate::Result;

/// What stays fixed about a block on the device: norms, biases, the RoPE
/// table.
pub struct DeviceBlock<D: BlockOps> {
    pub shape: BlockShape,
    input_norm: D::Buf,
    post_norm: D::Buf,
    q_norm: Option<D::Buf>,
    k_norm: Option<D::Buf>,
    /// The q, k, v and o biases (block-wise distillation trains them in
    /// place).
    pub(super) biases: [Option<D::Buf>; 4],
    cos: D::Buf,
    sin: D::Buf,
    half: usize,
}

impl<D: BlockOps> DeviceBlock<D> {
    /// The fixed parts of decoder layer `b` on `dev`, with `rope` covering
    /// the sequence.
    pub fn new(dev: &D, shape: BlockShape, b: &LayerWeights, rope: &RopeTable) -> Result<Self> {
        let up = |v: &[f32]| dev.upload(v);
        let opt = |v: Option<&Vec<f32>>| v.map(|v| up(v)).transpose();
        let l = b.linears();
        let half = rope.half;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..shape.seq_len {
            cos.extend_from_slice(rope.cos(pos));
            sin.extend_from_slice(rope.sin(pos));
        }
        Ok(DeviceBlock {
            shape,
            input_norm: up(&b.input_norm)?,
            post_norm: up(&b.post_norm)?,
            q_norm: opt(b.q_norm.as_ref())?,
            k_norm: opt(b.k_norm.as_ref())?,
            biases: [
                opt(l[0].bias.as_ref())?,
                opt(l[1].bias.as_ref())?,
                opt(l[2].bias.as_ref())?,
                opt(l[3].bias.as_ref())?,
            ],
            cos: dev.upload(&cos)?,
            sin: dev.upload(&sin)?,
            half,
        })
    }

    fn attn(&self, tokens: usize) -> AttnShape {
        let s = &self.shape;
        AttnShape {
            seqs: tokens / s.seq_len,
            seq_len: s.seq_len,
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
        }
    }
}

/// What the backward pass keeps of one forward pass, and its output `y`.
pub struct Pass<D: BlockOps> {
    pub tokens: usize,
    hn: D::Buf,
    q_pre: D::Buf,
    k_pre: D::Buf,
    q: D::Buf,
    k: D::Buf,
    v: D::Buf,
    p: D::Buf,
    a: D::Buf,
    x2: D::Buf,
    hn2: D::Buf,
    gate: D::Buf,
    up: D::Buf,
    m: D::Buf,
    pub y: D::Buf,
}

/// Y [p, out] = X [p, in] · Wᵀ (+ b).
fn linear<D: BlockOps>(
    dev: &D,
    x: &D::Buf,
    w: &D::Buf,
    b: Option<&D::Buf>,
    p: usize,
    inn: usize,
    out: usize,
) -> Result<D::Buf> {
    let mut y = dev.zeros(p * out)?;
    dev.matmul(x, w, &mut y, p, inn, out, false, true)?;
    if let Some(b) = b {
        dev.add_bias(&mut y, b, p, out)?;
    }
    Ok(y)
}

/// dX [p, in] = dY [p, out] · W.
fn back_x<D: BlockOps>(
    dev: &D,
    dy: &D::Buf,
    w: &D::Buf,
    p: usize,
    out: usize,
    inn: usize,
) -> Result<D::Buf> {
    let mut dx = dev.zeros(p * inn)?;
    dev.matmul(dy, w, &mut dx, p, out, inn, false, false)?;
    Ok(dx)
}

/// dW [out, in] = dYᵀ · X.
fn back_w<D: BlockOps>(
    dev: &D,
    dy: &D::Buf,
    x: &D::Buf,
    p: usize,
    out: usize,
    inn: usize,
) -> Result<D::Buf> {
    let mut dw = dev.zeros(out * inn)?;
    dev.matmul(dy, x, &mut dw, out, p, inn, true, false)?;
    Ok(dw)
}

/// The block's output for `x` ([tokens, hidden], whole sequences) with the
/// linear weights `w` (q, k, v, o, gate, up, down; [out, in] each).
pub fn forward<D: BlockOps>(
    dev: &D,
    b: &DeviceBlock<D>,
    w: [&D::Buf; 7],
    x: &D::Buf,
    tokens: usize,
) -> Result<Pass<D>> {
    let s = &b.shape;
    let (h, d, eps) = (s.hidden, s.head_dim, s.eps as f32);
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let mut hn = dev.zeros(tokens * h)?;
    dev.rms_norm(x, &b.input_norm, &mut hn, tokens, h, eps)?;
    let q_pre = linear(dev, &hn, w[0], b.biases[0].as_ref(), tokens, h, qw)?;
    let k_pre = linear(dev, &hn, w[1], b.biases[1].as_ref(), tokens, h, kw)?;
    let v = linear(dev, &hn, w[2], b.biases[2].as_ref(), tokens, h, kw)?;
    let rotated = |pre: &D::Buf, norm: Option<&D::Buf>, width: usize| -> Result<D::Buf> {
        let mut y = dev.zeros(tokens * width)?;
        let normed;
        let src = match norm {
            Some(n) => {
                let mut t = dev.zeros(tokens * width)?;
                dev.rms_norm(pre, n, &mut t, tokens * width / d, d, eps)?;
                normed = t;
                &normed
            }
            None => pre,
        };
        dev.rope(
            src, &b.cos, &b.sin, &mut y, tokens, width, b.half, s.seq_len, false,
        )?;
        Ok(y)
    };
    let q = rotated(&q_pre, b.q_norm.as_ref(), qw)?;
    let k = rotated(&k_pre, b.k_norm.as_ref(), kw)?;
    let shape = b.attn(tokens);
    let mut p = dev.zeros(triangle_len(&shape))?;
    let mut a = dev.zeros(tokens * qw)?;
    dev.attention(&q, &k, &v, &mut p, &mut a, shape)?;
    let o = linear(dev, &a, w[3], b.biases[3].as_ref(), tokens, qw, h)?;
    let mut x2 = dev.zeros(tokens * h)?;
    dev.add(x, &o, &mut x2, tokens * h)?;
    let mut hn2 = dev.zeros(tokens * h)?;
    dev.rms_norm(&x2, &b.post_norm, &mut hn2, tokens, h, eps)?;
    let gate = linear(dev, &hn2, w[4], None, tokens, h, s.inter)?;
    let up = linear(dev, &hn2, w[5], None, tokens, h, s.inter)?;
    let mut m = dev.zeros(tokens * s.inter)?;
    dev.silu_mul(&gate, &up, &mut m, tokens * s.inter)?;
    let down = linear(dev, &m, w[6], None, tokens, s.inter, h)?;
    let mut y = dev.zeros(tokens * h)?;
    dev.add(&x2, &down, &mut y, tokens * h)?;
    Ok(Pass {
        tokens,
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
        y,
    })
}

/// The gradients of the seven linear weights and of the q, k, v and o
/// biases (those the block has).
pub type Grads<B> = ([B; 7], [Option<B>; 4]);

/// The gradients of the seven linear weights given `dy`, the gradient of
/// the loss with respect to the pass's output, and of the q, k, v and o
/// biases the block has.
pub fn backward<D: BlockOps>(
    dev: &D,
    b: &DeviceBlock<D>,
    w: [&D::Buf; 7],
    c: &Pass<D>,
    dy: &D::Buf,
) -> Result<Grads<D::Buf>> {
    let s = &b.shape;
    let (h, d, eps, t) = (s.hidden, s.head_dim, s.eps as f32, c.tokens);
    let (qw, kw, inter) = (s.heads * d, s.kv_heads * d, s.inter);
    // MLP: y = x2 + down(silu(gate) · up).
    let g_down = back_w(dev, dy, &c.m, t, h, inter)?;
    let dm = back_x(dev, dy, w[6], t, h, inter)?;
    let mut dgate = dev.zeros(t * inter)?;
    let mut dup = dev.zeros(t * inter)?;
    dev.silu_mul_backward(&c.gate, &c.up, &dm, &mut dgate, &mut dup, t * inter)?;
    drop(dm);
    let g_gate = back_w(dev, &dgate, &c.hn2, t, inter, h)?;
    let g_up = back_w(dev, &dup, &c.hn2, t, inter, h)?;
    let from_gate = back_x(dev, &dgate, w[4], t, inter, h)?;
    let from_up = back_x(dev, &dup, w[5], t, inter, h)?;
    let mut dhn2 = dev.zeros(t * h)?;
    dev.add(&from_gate, &from_up, &mut dhn2, t * h)?;
    let mut through = dev.zeros(t * h)?;
    dev.rms_norm_backward(&c.x2, &b.post_norm, &dhn2, &mut through, t, h, eps)?;
    let mut dx2 = dev.zeros(t * h)?;
    dev.add(dy, &through, &mut dx2, t * h)?;
    // Attention: x2 = x + o(attn(q, k, v)).
    let g_o = back_w(dev, &dx2, &c.a, t, h, qw)?;
    let da = back_x(dev, &dx2, w[3], t, h, qw)?;
    let (mut dq, mut dk, mut dv) = (dev.zeros(t * qw)?, dev.zeros(t * kw)?, dev.zeros(t * kw)?);
    dev.attention_backward(
        &c.q,
        &c.k,
        &c.v,
        &c.p,
        &da,
        &mut dq,
        &mut dk,
        &mut dv,
        b.attn(t),
    )?;
    let unrotated =
        |g: &D::Buf, pre: &D::Buf, norm: Option<&D::Buf>, width: usize| -> Result<D::Buf> {
            let mut r = dev.zeros(t * width)?;
            dev.rope(g, &b.cos, &b.sin, &mut r, t, width, b.half, s.seq_len, true)?;
            let Some(n) = norm else { return Ok(r) };
            let mut out = dev.zeros(t * width)?;
            dev.rms_norm_backward(pre, n, &r, &mut out, t * width / d, d, eps)?;
            Ok(out)
        };
    let dq_pre = unrotated(&dq, &c.q_pre, b.q_norm.as_ref(), qw)?;
    let dk_pre = unrotated(&dk, &c.k_pre, b.k_norm.as_ref(), kw)?;
    let g_q = back_w(dev, &dq_pre, &c.hn, t, qw, h)?;
    let g_k = back_w(dev, &dk_pre, &c.hn, t, kw, h)?;
    let g_v = back_w(dev, &dv, &c.hn, t, kw, h)?;
    let outs = [(&dq_pre, qw), (&dk_pre, kw), (&dv, kw), (&dx2, h)];
    let mut biases: [Option<D::Buf>; 4] = Default::default();
    for (i, (g, width)) in outs.into_iter().enumerate() {
        if b.biases[i].is_some() {
            let mut db = dev.zeros(width)?;
            dev.bias_grad(g, &mut db, t, width)?;
            biases[i] = Some(db);
        }
    }
    Ok(([g_q, g_k, g_v, g_o, g_gate, g_up, g_down], biases))
}

#[cfg(test)]
#[path = "block_pass_tests.rs"]
mod tests;
