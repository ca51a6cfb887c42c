//! The elementwise pieces of [`super::block`] and their derivatives, in f64.

use crate::model::rope::RopeTable;

/// Each row of `x` (rows of `w.len()`) over its root mean square (+ eps
/// under the root), times `w`.
pub fn rms_rows(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut y = Vec::with_capacity(x.len());
    for r in x.chunks_exact(d) {
        let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
        y.extend(r.iter().zip(w).map(|(v, g)| g * v * inv));
    }
    y
}

/// The gradient with respect to `x` of [`rms_rows`], given `dy`: with
/// g = dy ⊙ w and r = 1/rms, dx = r·g − x·r³·(g·x)/d.
pub fn rms_back(x: &[f64], w: &[f64], eps: f64, dy: &[f64]) -> Vec<f64> {
    let d = w.len();
    let mut dx = Vec::with_capacity(x.len());
    for (r, dr) in x.chunks_exact(d).zip(dy.chunks_exact(d)) {
        let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
        let gx: f64 = r.iter().zip(dr).zip(w).map(|((v, g), s)| v * g * s).sum();
        let k = inv * inv * inv * gx / d as f64;
        dx.extend(
            r.iter()
                .zip(dr)
                .zip(w)
                .map(|((v, g), s)| inv * g * s - v * k),
        );
    }
    dx
}

/// The gradient through RoPE: each pair rotated back by its angle (the
/// rotation's transpose).
pub fn rotate_back(dx: &mut [f64], width: usize, seq_len: usize, t: &RopeTable) {
    for (tok, row) in dx.chunks_exact_mut(width).enumerate() {
        let pos = tok % seq_len;
        let (cos, sin) = (t.cos(pos), t.sin(pos));
        let half = cos.len();
        for v in row.chunks_exact_mut(2 * half) {
            for j in 0..half {
                let (da, db) = (v[j], v[j + half]);
                let (c, s) = (cos[j] as f64, sin[j] as f64);
                v[j] = da * c + db * s;
                v[j + half] = db * c - da * s;
            }
        }
    }
}

/// x·σ(x).
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// d silu / dx = σ(x)·(1 + x·(1 − σ(x))).
pub fn silu_grad(x: f64) -> f64 {
    let s = 1.0 / (1.0 + (-x).exp());
    s * (1.0 + x * (1.0 - s))
}
