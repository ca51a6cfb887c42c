//! GGUF blocks weighted by an importance matrix, as ggml computes them when
//! `llama-quantize --imatrix` hands it one (`quantize_q4_K(…,
//! quant_weights)` and its siblings), bit for bit.
//!
//! The importance of input column j is the mean square of that input over
//! the calibration tokens (llama.cpp's imatrix; shears' `input_norm`² / tokens).
//! It changes the searches, not the formats: a block weights its values
//! by importance · √(σ² + x²) (σ² from the row, or twice the super-block's
//! mean square for the K-quants) instead of the unweighted rules, and the
//! K-quants choose their 6-bit scale steps by a weighted search
//! ([`make_qp_quants`]) instead of rounding. Q6_K weights its sub-blocks by
//! the importance alone; Q8_0 ignores it.
//!
//! Rows are the unit: the Q4_0/Q5_0/Q5_1 weights use the whole row's σ².

use half::f16;

use super::gguf::{pack_q5, GgufType, QK};
use super::kquants::{
    make_qkx_quants, make_qx_quants, nearest_int, pack_scale_mins, q6_k_weighted,
    requantize_affine, write_q4_k, write_q5_k, Affine, GROUP_MAX_EPS, QK_K,
};

/// The search every weighted affine grid uses: 37 grids from −0.9 in
/// steps of 0.05.
pub(crate) const SEARCH: (f32, f32, i32) = (-0.9, 0.05, 36);

/// ggml's `make_qp_quants`: steps in [0, nmax] of the non-negative values
/// `x` (a super-block's sub-block scales or mins) on one grid, chosen for
/// the least `w`-weighted squared error (9 grids, then up to 5 rounds of
/// moving single steps); returns the grid's unit (0 when every value is
/// below ggml's epsilon). The steps live in bytes
/// as ggml's do (a negative code wraps).
pub fn make_qp_quants(x: &[f32], nmax: i32, l: &mut [u8], w: &[f32]) -> f32 {
    let max = x.iter().fold(0.0f32, |m, &v| if m > v { m } else { v });
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (c, &v) in l.iter_mut().zip(x) {
        *c = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * l[i] as f32;
        best += w[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..x.len() {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += w[i] * diff * diff;
        }
        if mse < best {
            best = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        sumlx += w[i] * x[i] * q as f32;
        suml2 += w[i] * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let li = l[i] as f32;
            let mut slx = sumlx - w[i] * x[i] * li;
            let mut sl2 = suml2 - w[i] * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    let nl = new_l as f32;
                    slx += w[i] * x[i] * nl;
                    sl2 += w[i] * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Importance · √(σ² + x²) for each value of `x`.
fn weights(x: &[f32], qw: &[f32], sigma2: f32, w: &mut [f32]) {
    for ((w, &v), &q) in w.iter_mut().zip(x).zip(qw) {
        *w = q * (sigma2 + v * v).sqrt();
    }
}

/// A weighted Q4_K (`nmax` 15, steps not capped) or Q5_K (31, capped at
/// 63) super-block (`quantize_row_q{4,5}_K_impl`).
fn affine_weighted(x: &[f32], qw: &[f32], nmax: i32, cap: bool) -> Affine {
    let mut sum_x2 = 0.0f32;
    for &v in &x[..QK_K] {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let mut w = [0.0f32; 32];
    for j in 0..QK_K / 32 {
        let span = 32 * j..32 * j + 32;
        weights(&x[span.clone()], &qw[span.clone()], sigma2, &mut w);
        sw[j] = w.iter().fold(0.0f32, |s, &v| s + v);
        (scales[j], mins[j]) = make_qkx_quants(&x[span.clone()], &w, nmax, SEARCH, &mut l[span]);
    }
    finish_affine_weighted(x, nmax, cap, (&scales, &mins, &sw), l)
}

/// A weighted affine super-block from its sub-blocks' searched scales,
/// mins and weight sums: the 6-bit steps by [`make_qp_quants`], then the
/// codes again on the stored grid.
pub(crate) fn finish_affine_weighted(
    x: &[f32],
    nmax: i32,
    cap: bool,
    (scales, mins, sw): (&[f32; 8], &[f32; 8], &[f32; 8]),
    l: [u8; QK_K],
) -> Affine {
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d = make_qp_quants(scales, 63, &mut ls, sw);
    let m = make_qp_quants(mins, 63, &mut lm, sw);
    if cap {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    let sc = pack_scale_mins(&ls, &lm);
    requantize_affine(x, nmax, f16::from_f32(d), f16::from_f32(m), sc, l)
}

/// One row of `kind` blocks of `x` weighted by the importances `qw` (one
/// per value of the row) into `out` (the row's bytes).
pub fn quantize_row(kind: GgufType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    assert_eq!(x.len(), qw.len(), "one importance per column");
    let (n, size) = (kind.block_elems(), kind.block_bytes());
    let mut sum_x2 = 0.0f32;
    if matches!(kind, GgufType::Q4_0 | GgufType::Q5_0 | GgufType::Q5_1) {
        for &v in x {
            sum_x2 += v * v;
        }
    }
    let sigma2 = sum_x2 / x.len() as f32;
    let mut w = [0.0f32; QK];
    let mut codes = [0i8; QK];
    for ((xb, qb), o) in x
        .chunks_exact(n)
        .zip(qw.chunks_exact(n))
        .zip(out.chunks_exact_mut(size))
    {
        match kind {
            GgufType::Q8_0 => o.copy_from_slice(&super::gguf::quantize_q8_0(xb)),
            GgufType::Q4_K => write_q4_k(affine_weighted(xb, qb, 15, false), o),
            GgufType::Q5_K => write_q5_k(affine_weighted(xb, qb, 31, true), o),
            GgufType::Q6_K => q6_k_weighted(xb, Some(qb), o),
            GgufType::Q4_0 | GgufType::Q5_0 => {
                weights(xb, qb, sigma2, &mut w);
                let nmax = if kind == GgufType::Q4_0 { 8 } else { 16 };
                let d = make_qx_quants(xb, nmax, &mut codes, Some(&w));
                o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                let l = codes.map(|c| c as u8);
                if kind == GgufType::Q4_0 {
                    for j in 0..QK / 2 {
                        o[2 + j] = l[j] | (l[j + QK / 2] << 4);
                    }
                } else {
                    let (qh, qs) = o[2..22].split_at_mut(4);
                    pack_q5(&l, qs, qh);
                }
            }
            GgufType::Q5_1 => {
                weights(xb, qb, sigma2, &mut w);
                let mut l = [0u8; QK];
                let (d, the_min) = make_qkx_quants(xb, &w, 31, SEARCH, &mut l);
                o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                o[2..4].copy_from_slice(&f16::from_f32(-the_min).to_le_bytes());
                let (qh, qs) = o[4..24].split_at_mut(4);
                pack_q5(&l, qs, qh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_steps_fit_their_values() {
        let x = [0.5f32, 1.0, 0.25, 0.75, 0.0, 0.9, 0.1, 0.6];
        let w = [1.0f32; 8];
        let mut l = [0u8; 8];
        let d = make_qp_quants(&x, 63, &mut l, &w);
        for (v, q) in x.iter().zip(l) {
            assert!(q <= 63);
            assert!((v - d * q as f32).abs() <= d, "{v} vs {q}·{d}");
        }
        let mut z = [9u8; 8];
        assert_eq!(make_qp_quants(&[0.0; 8], 63, &mut z, &w), 0.0);
        assert_eq!(z, [0; 8]);
    }

    #[test]
    fn uniform_importance_keeps_blocks_close_to_unweighted() {
        // Equal importances still change the searches, but both grids must
        // describe the values to within their steps.
        let x: Vec<f32> = (0..2 * QK_K)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let qw = vec![1.0f32; x.len()];
        for kind in GgufType::ALL {
            let mut out = vec![0u8; x.len() / kind.block_elems() * kind.block_bytes()];
            quantize_row(kind, &x, &qw, &mut out);
            let ty = crate::formats::gguf::GgmlType::ALL
                .into_iter()
                .find(|t| t.blocks() == Some(kind))
                .unwrap();
            let back = ty.dequantize(&out);
            let worst = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 0.2, "{kind:?}: {worst}");
        }
    }
}
