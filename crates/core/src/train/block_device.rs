//! The operations of a decoder block's forward and backward pass beyond
//! [`Device`]'s products and losses, so block-wise distillation runs on
//! every backend: RMSNorm, RoPE, causal grouped-query attention and SwiGLU's
//! product, each with its gradient, and the residual sum. The CPU reference
//! (`reference::block_train`, plain loops in f32) specifies them; the fast
//! CPU path runs the same functions, the GPU (`shaders/block.wgsl`) the
//! same formulas in the same summation orders, so GPU and CPU differ only
//! by FMA contraction and the accuracy of exp and sqrt. The f64 block of
//! [`super::block`] is what the composed pass is checked against.
//!
//! Conventions as [`Device`]: row-major f32, an op writes its whole output.

use super::device::Device;
use crate::reference::forward::AttnShape;
use crate::Result;

/// Values of the attention weights of `s`: for every sequence and head,
/// row i of the causal triangle holds i + 1 weights (rows one after another).
pub fn triangle_len(s: &AttnShape) -> usize {
    s.seqs * s.heads * s.seq_len * (s.seq_len + 1) / 2
}

/// A backend's block operations.
pub trait BlockOps: Device {
    /// y = w ⊙ (x · r) per row of `cols`, r = 1/√(Σx²/cols + eps), the sum
    /// of squares in f32 in increasing column.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        y: &mut Self::Buf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()>;

    /// The gradient of [`BlockOps::rms_norm`] with respect to x given dy:
    /// g = dy ⊙ w, dx = r·g − x·(r³·Σ g·x / cols), sums in increasing column.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_backward(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()>;

    /// Rotates each head (pairs j, j + half of `2·half` values) of each
    /// token row of `width` by its position in its sequence of `seq_len`
    /// (`cos`, `sin`: [seq_len, half]); `inverse` rotates by minus the
    /// angle (the rotation's transpose: RoPE's backward pass).
    /// Forward: (a, b) → (a·c − b·s, b·c + a·s).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &Self::Buf,
        cos: &Self::Buf,
        sin: &Self::Buf,
        y: &mut Self::Buf,
        rows: usize,
        width: usize,
        half: usize,
        seq_len: usize,
        inverse: bool,
    ) -> Result<()>;

    /// Causal attention with grouped KV heads: q [tokens, heads·d], k and v
    /// [tokens, kv_heads·d]. Writes the attention weights `p` (layout of
    /// [`triangle_len`]: score s_j = fl32(q_i·k_j) · (1/√d), p = exp(s −
    /// max s) / Σ, sums in increasing j) and the output a [tokens, heads·d],
    /// a_i = Σ_j p_j·v_j in increasing j.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: &mut Self::Buf,
        a: &mut Self::Buf,
        s: AttnShape,
    ) -> Result<()>;

    /// The gradients of [`BlockOps::attention`]'s output with respect to q,
    /// k and v given `da`: dP_ij = da_i·v_j, dS_ij = p_ij·(dP_ij − Σ_j
    /// p_ij·dP_ij)/√d, dq_i = Σ_j dS_ij·k_j (increasing j), dk_j and dv_j
    /// the sums over the group's heads (increasing head) and the queries
    /// i ≥ j (increasing i) of dS_ij·q_i and p_ij·da_i.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: &Self::Buf,
        da: &Self::Buf,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
        s: AttnShape,
    ) -> Result<()>;

    /// m = silu(gate) · up over `n` values, silu(x) = x / (1 + exp(−x)).
    fn silu_mul(&self, gate: &Self::Buf, up: &Self::Buf, m: &mut Self::Buf, n: usize)
        -> Result<()>;

    /// The gradients of [`BlockOps::silu_mul`] given dm: with σ = 1/(1 +
    /// exp(−g)), dgate = dm·up·σ·(1 + g·(1 − σ)), dup = dm·silu(g).
    #[allow(clippy::too_many_arguments)]
    fn silu_mul_backward(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        dm: &Self::Buf,
        dgate: &mut Self::Buf,
        dup: &mut Self::Buf,
        n: usize,
    ) -> Result<()>;

    /// c = a + b over `n` values.
    fn add(&self, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf, n: usize) -> Result<()>;
}
