//! GGUF's K-quant super-blocks (part of the `quant` family), as ggml's
//! reference quantizers `quantize_row_q{4,5,6}_K_ref`
//! compute them (what `llama-quantize` runs without an importance matrix),
//! bit for bit: every float operation in ggml's order, f32 throughout, no
//! fused multiply-adds (ggml's reference is compiled without them on
//! x86-64), `nearest_int` rounding halves to even.
//!
//! * Q6_K: 256 values = 16 sub-blocks of 16. Each sub-block's scale from
//!   [`make_qx_quants`] (the value of largest magnitude maps to −32, then
//!   18 nearby grids are tried, weighting each value by its square, and the
//!   one with the best weighted fit kept); the scales as int8 steps of
//!   d = max_scale / −128 (f16); codes round(x / (d·scale)) in [−32, 31],
//!   stored +32 as 4 low bits (`ql`) and 2 high bits (`qh`). 210 bytes.
//! * Q4_K: 256 values = 8 sub-blocks of 32, each an affine grid of 16
//!   levels, scale and min searched by [`make_qkx_quants`] (weights
//!   √mean(x²) + |x|, 21 grids) and stored as 6-bit steps of d and dmin
//!   (f16); codes round((x + min)/scale) in [0, 15]. 144 bytes.
//! * Q5_K: as Q4_K with 32 levels (16 grids from −0.5), the fifth bits
//!   apart. 176 bytes.

use half::f16;

/// Values per super-block.
pub const QK_K: usize = 256;

/// A super-block quantizer: 256 values into its bytes.
pub type BlockFn = fn(&[f32], &mut [u8]);

/// ggml's `GROUP_MAX_EPS`: a group below it is all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the f32 adder trick
/// (|v| ≤ 4194303).
pub fn nearest_int(v: f32) -> i32 {
    let t = v + 12_582_912.0;
    (t.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `make_qx_quants` with `rmse_type` 1: the scale of a symmetric
/// grid of `nmax` levels each side, codes (offset by `nmax`) in `l`; each
/// value weighted by `qw` (an importance matrix) or, without, its square.
pub fn make_qx_quants(x: &[f32], nmax: i32, l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let fit = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for (i, &v) in x.iter().enumerate() {
            let q = code(iscale, v) as f32;
            let w = qw.map_or(v * v, |w| w[i]);
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (c, &v) in l.iter_mut().zip(x) {
        *c = (code(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = fit(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (c, &v) in l.iter_mut().zip(x) {
                *c = (code(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_qkx2_quants` and `make_qkx3_quants` with squared error
/// (given weights they compute the same): scale and −min of an affine grid
/// of `nmax` + 1 levels, codes in `l`, searched over nstep + 1 grids from
/// `rmin` in steps of `rdelta`. The reference Q4_K calls it with (−1, 0.1,
/// 20), Q5_K with (−0.5, 0.1, 15), the importance-weighted ones with
/// (−0.9, 0.05, 36).
pub fn make_qkx_quants(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    (rmin, rdelta, nstep): (f32, f32, i32),
    l: &mut [u8],
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..x.len() {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nm = nmax as f32;
    let mut iscale = nm / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..x.len() {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nm) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..x.len() {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let qf = q as f32;
            sum_l += w[i] * qf;
            sum_l2 += w[i] * qf * qf;
            sum_xl += w[i] * qf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..x.len() {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..x.len()].copy_from_slice(&aux[..x.len()]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// One Q6_K super-block (210 bytes) of 256 values.
pub fn q6_k_block(x: &[f32], out: &mut [u8]) {
    q6_k_weighted(x, None, out);
}

/// A Q6_K super-block whose sub-block searches weight each value by `qw`
/// (ggml's `quantize_row_q6_K_impl`) or, without, by its square.
pub(crate) fn q6_k_weighted(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    for ib in 0..QK_K / 16 {
        let xs = &x[16 * ib..16 * ib + 16];
        scales[ib] = make_qx_quants(
            xs,
            32,
            &mut l[16 * ib..16 * ib + 16],
            qw.map(|w| &w[16 * ib..16 * ib + 16]),
        );
    }
    finish_q6_k(x, &scales, l, out);
}

/// The Q6_K bytes of `x` from its 16 sub-block scales and the searches'
/// codes `l` (kept where a sub-block's step is zero).
pub(crate) fn finish_q6_k(x: &[f32], scales: &[f32; QK_K / 16], mut l: [i8; QK_K], out: &mut [u8]) {
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for &s in scales {
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    out[..210].fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0f32 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    out[208..210].copy_from_slice(&d.to_le_bytes());
    let mut sc = [0i8; QK_K / 16];
    for (s, &v) in sc.iter_mut().zip(scales) {
        *s = nearest_int(iscale * v).min(127) as i8;
    }
    for (j, &s) in sc.iter().enumerate() {
        out[192 + j] = s as u8;
        let dd = d.to_f32() * s as f32;
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / dd).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let l: [u8; QK_K] = l.map(|v| v as u8);
    for (h, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, qh) = (h * 64, 128 + h * 32);
        for i in 0..32 {
            let q = |k: usize| l[j + i + 32 * k];
            out[ql + i] = (q(0) & 0xf) | ((q(2) & 0xf) << 4);
            out[ql + 32 + i] = (q(1) & 0xf) | ((q(3) & 0xf) << 4);
            out[qh + i] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

/// Values of Q6_K super-blocks.
pub fn dequantize_q6_k(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / 210 * QK_K);
    for b in blocks.chunks_exact(210) {
        let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
        let mut y = [0.0f32; QK_K];
        for h in 0..2 {
            let (ql, qh, sc) = (&b[h * 64..], &b[128 + h * 32..], &b[192 + h * 8..]);
            for i in 0..32 {
                let is = i / 16;
                let q = [
                    (ql[i] & 0xf) | ((qh[i] & 3) << 4),
                    (ql[i + 32] & 0xf) | (((qh[i] >> 2) & 3) << 4),
                    (ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4),
                    (ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    y[h * 128 + i + 32 * k] =
                        d * (sc[is + 2 * k] as i8) as f32 * (qk as i32 - 32) as f32;
                }
            }
        }
        out.extend_from_slice(&y);
    }
    out
}

/// Scale and min steps of sub-block `j` from Q4_K's 12 packed bytes.
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// An affine super-block: d, dmin, the packed scale and min steps, codes.
pub(crate) type Affine = (f16, f16, [u8; 12], [u8; QK_K]);

/// The affine super-block both Q4_K and Q5_K store: 8 sub-blocks of 32
/// with 6-bit steps of d and dmin (packed in 12 bytes) and codes in
/// [0, nmax]. Returns (d, dmin, packed scales, codes).
fn affine_super_block(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> Affine {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    let mut w = [0.0f32; 32];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (wi, &v) in w.iter_mut().zip(xs) {
            *wi = av_x + v.abs();
        }
        let (s, m) = make_qkx_quants(
            xs,
            &w,
            nmax,
            (rmin, 0.1, nstep),
            &mut l[32 * j..32 * j + 32],
        );
        scales[j] = s;
        mins[j] = m;
    }
    finish_affine(x, nmax, &scales, &mins, l)
}

/// An affine super-block from its 8 sub-blocks' searched scales and mins
/// and the searches' codes `l`: the 6-bit steps of the largest of each,
/// then the codes again on the stored grid.
pub(crate) fn finish_affine(
    x: &[f32],
    nmax: i32,
    scales: &[f32; 8],
    mins: &[f32; 8],
    l: [u8; QK_K],
) -> Affine {
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // ggml stores nearest_int's result in a uint8 before the cap.
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    requantize_affine(x, nmax, d, dmin, pack_scale_mins(&ls, &lm), l)
}

/// The 12 bytes holding 8 six-bit scale steps `ls` and min steps `lm`
/// (bits above the sixth, where ggml leaves them, are cut as its uint8
/// stores cut them).
pub(crate) fn pack_scale_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    sc
}

/// The codes of an affine super-block from its stored steps: each
/// sub-block whose step is not zero is rounded again on the grid the
/// bytes hold (the others keep the search's codes in `l`).
pub(crate) fn requantize_affine(
    x: &[f32],
    nmax: i32,
    d: f16,
    dmin: f16,
    sc: [u8; 12],
    mut l: [u8; QK_K],
) -> Affine {
    for j in 0..8 {
        let (s, m) = scale_min(j, &sc);
        let dd = d.to_f32() * s as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, sc, l)
}

/// One Q4_K super-block (144 bytes: d, dmin, 12 bytes of scales, 128 of
/// codes) of 256 values.
pub fn q4_k_block(x: &[f32], out: &mut [u8]) {
    write_q4_k(affine_super_block(x, 15, -1.0, 20), out);
}

/// A Q4_K super-block's bytes from its steps and codes.
pub(crate) fn write_q4_k((d, dmin, sc, l): Affine, out: &mut [u8]) {
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    out[4..16].copy_from_slice(&sc);
    for (h, j) in (0..QK_K).step_by(64).enumerate() {
        for i in 0..32 {
            out[16 + 32 * h + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

/// One Q5_K super-block (176 bytes: d, dmin, 12 bytes of scales, 32 of
/// fifth bits, 128 of low nibbles) of 256 values.
pub fn q5_k_block(x: &[f32], out: &mut [u8]) {
    write_q5_k(affine_super_block(x, 31, -0.5, 15), out);
}

/// A Q5_K super-block's bytes from its steps and codes.
pub(crate) fn write_q5_k((d, dmin, sc, l): Affine, out: &mut [u8]) {
    out[0..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    out[4..16].copy_from_slice(&sc);
    let (qh, ql) = out[16..176].split_at_mut(32);
    qh.fill(0);
    for (h, n) in (0..QK_K).step_by(64).enumerate() {
        let (m1, m2) = (1u8 << (2 * h), 2u8 << (2 * h));
        for j in 0..32 {
            let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * h + j] = l1 | (l2 << 4);
        }
    }
}

/// Values of Q5_K super-blocks.
pub fn dequantize_q5_k(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / 176 * QK_K);
    for b in blocks.chunks_exact(176) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let (qh, ql) = (&b[16..48], &b[48..176]);
        for h in 0..4 {
            let q = &ql[32 * h..32 * h + 32];
            for (k, shift) in [(2 * h, 0), (2 * h + 1, 4)] {
                let (s, m) = scale_min(k, &b[4..16]);
                let (d1, m1) = (d * s as f32, dmin * m as f32);
                let bit = 1u8 << k;
                out.extend(q.iter().zip(qh).map(|(&v, &hb)| {
                    let hi = if hb & bit != 0 { 16 } else { 0 };
                    d1 * (((v >> shift) & 0xf) + hi) as f32 - m1
                }));
            }
        }
    }
    out
}

/// Values of Q4_K super-blocks.
pub fn dequantize_q4_k(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / 144 * QK_K);
    for b in blocks.chunks_exact(144) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
        for h in 0..4 {
            let q = &b[16 + 32 * h..16 + 32 * h + 32];
            for (k, shift) in [(2 * h, 0), (2 * h + 1, 4)] {
                let (s, m) = scale_min(k, &b[4..16]);
                let (d1, m1) = (d * s as f32, dmin * m as f32);
                out.extend(q.iter().map(|&v| d1 * ((v >> shift) & 0xf) as f32 - m1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_halves_to_even() {
        for (v, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.6, -8),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn super_blocks_round_trip_within_their_steps() {
        let x: Vec<f32> = (0..QK_K * 3)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        for (bytes, size, deq) in [
            (
                210,
                q6_k_block as fn(&[f32], &mut [u8]),
                dequantize_q6_k as fn(&[u8]) -> Vec<f32>,
            ),
            (144, q4_k_block, dequantize_q4_k),
        ] {
            let mut out = vec![0u8; x.len() / QK_K * bytes];
            for (b, o) in x.chunks(QK_K).zip(out.chunks_mut(bytes)) {
                size(b, o);
            }
            let back = deq(&out);
            let worst = x
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // 6 bits: steps of about 2/63; 4 bits with a min: 2/15.
            let step = if bytes == 210 { 2.0 / 63.0 } else { 2.0 / 15.0 };
            assert!(worst <= step, "{bytes}: {worst}");
        }
        // All zero: zero bytes.
        let mut z = vec![1u8; 210];
        q6_k_block(&[0.0; QK_K], &mut z);
        assert!(z.iter().all(|&b| b == 0));
    }
}
