//! Fast CPU path of GGUF's K-quant searches: the reference's
//! [`make_qkx_quants`](crate::reference::kquants::make_qkx_quants) and
//! [`make_qx_quants`](crate::reference::kquants::make_qx_quants) run on all
//! sub-blocks of a super-block at once, one sub-block per vector lane
//! (8 of 32 values for Q4_K / Q5_K, 16 of 16 for Q6_K). Each lane performs
//! exactly the reference's operations in the reference's order — the
//! values are only transposed so that lane j holds sub-block j — and a
//! branch of the reference becomes a per-lane select, so the bytes are the
//! reference's. The tails (scale steps, f16 rounding, requantization,
//! packing) are the reference's own functions.

use crate::reference::gguf::GgufType;
use crate::reference::imatrix::{finish_affine_weighted, SEARCH};
use crate::reference::kquants::{
    finish_affine, finish_q6_k, write_q4_k, write_q5_k, Affine, GROUP_MAX_EPS, QK_K,
};

/// ggml's `nearest_int` (the f32 adder trick), lane-friendly.
#[inline(always)]
fn nearest(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `make_qkx_quants` over 8 sub-blocks of 32: `x[i][j]` is value i of
/// sub-block j, `w` its weight; codes to `l[i][j]`; returns each lane's
/// (scale, −min).
#[inline(always)]
pub(crate) fn qkx_lanes(
    x: &[[f32; 8]; 32],
    w: &[[f32; 8]; 32],
    nmax: i32,
    (rmin, rdelta, nstep): (f32, f32, i32),
    l: &mut [[i32; 8]; 32],
) -> ([f32; 8], [f32; 8]) {
    let (mut min, mut max, mut sum_w) = (x[0], x[0], w[0]);
    let mut sum_x = [0.0f32; 8];
    for j in 0..8 {
        sum_x[j] = sum_w[j] * x[0][j];
    }
    for i in 1..32 {
        for j in 0..8 {
            let v = x[i][j];
            min[j] = if v < min[j] { v } else { min[j] };
            max[j] = if v > max[j] { v } else { max[j] };
            sum_w[j] += w[i][j];
            sum_x[j] += w[i][j] * v;
        }
    }
    let nm = nmax as f32;
    let (mut iscale, mut scale, mut best) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        min[j] = if min[j] > 0.0 { 0.0 } else { min[j] };
        iscale[j] = nm / (max[j] - min[j]);
        scale[j] = 1.0 / iscale[j];
    }
    // Lanes of one value (max == min): all-zero codes, scale 0.
    let flat_min = min;
    for i in 0..32 {
        for j in 0..8 {
            let q = nearest(iscale[j] * (x[i][j] - min[j])).clamp(0, nmax);
            l[i][j] = q;
            let diff = scale[j] * q as f32 + min[j] - x[i][j];
            best[j] += w[i][j] * (diff * diff);
        }
    }
    let mut aux = [[0i32; 8]; 32];
    for is in 0..=nstep {
        let num = rmin + rdelta * is as f32 + nm;
        let (mut sl, mut sl2, mut sxl) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
        for j in 0..8 {
            iscale[j] = num / (max[j] - min[j]);
        }
        for i in 0..32 {
            for j in 0..8 {
                let q = nearest(iscale[j] * (x[i][j] - min[j])).clamp(0, nmax);
                aux[i][j] = q;
                let wq = w[i][j] * q as f32;
                sl[j] += wq;
                sl2[j] += wq * q as f32;
                sxl[j] += wq * x[i][j];
            }
        }
        let (mut ts, mut tm, mut cur, mut take) =
            ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [false; 8]);
        for j in 0..8 {
            let d = sum_w[j] * sl2[j] - sl[j] * sl[j];
            ts[j] = (sum_w[j] * sxl[j] - sum_x[j] * sl[j]) / d;
            tm[j] = (sl2[j] * sum_x[j] - sl[j] * sxl[j]) / d;
            if tm[j] > 0.0 {
                tm[j] = 0.0;
                ts[j] = sxl[j] / sl2[j];
            }
            take[j] = d > 0.0;
        }
        for i in 0..32 {
            for j in 0..8 {
                let diff = ts[j] * aux[i][j] as f32 + tm[j] - x[i][j];
                cur[j] += w[i][j] * (diff * diff);
            }
        }
        for j in 0..8 {
            take[j] = take[j] && cur[j] < best[j];
            if take[j] {
                best[j] = cur[j];
                scale[j] = ts[j];
                min[j] = tm[j];
            }
        }
        if take.iter().any(|&t| t) {
            for i in 0..32 {
                for j in 0..8 {
                    l[i][j] = if take[j] { aux[i][j] } else { l[i][j] };
                }
            }
        }
    }
    let mut the_min = [0.0f32; 8];
    for j in 0..8 {
        if max[j] == flat_min[j] {
            scale[j] = 0.0;
            min[j] = flat_min[j];
            for row in l.iter_mut() {
                row[j] = 0;
            }
        }
        the_min[j] = -min[j];
    }
    (scale, the_min)
}

/// The Q4_K / Q5_K super-block of `x` as the reference computes it.
#[inline(always)]
fn affine(x: &[f32], nmax: i32, search: (f32, f32, i32)) -> Affine {
    let xt = lanes8(x);
    let mut sum_x2 = [0.0f32; 8];
    for row in &xt {
        for j in 0..8 {
            sum_x2[j] += row[j] * row[j];
        }
    }
    let mut av_x = [0.0f32; 8];
    for j in 0..8 {
        av_x[j] = (sum_x2[j] / 32.0).sqrt();
    }
    let mut w = [[0.0f32; 8]; 32];
    for i in 0..32 {
        for j in 0..8 {
            w[i][j] = av_x[j] + xt[i][j].abs();
        }
    }
    let mut lt = [[0i32; 8]; 32];
    let (scales, mins) = qkx_lanes(&xt, &w, nmax, search, &mut lt);
    finish_affine(x, nmax, &scales, &mins, unlane8(&lt))
}

/// The Q4_K / Q5_K super-block of `x` weighted by the importances `qw`,
/// as [`crate::reference::imatrix`] computes it.
#[inline(always)]
fn affine_weighted(x: &[f32], qw: &[f32], nmax: i32, cap: bool) -> Affine {
    // σ² sums the whole super-block in order, as the reference.
    let mut sum_x2 = 0.0f32;
    for &v in &x[..QK_K] {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    let (xt, qt) = (lanes8(x), lanes8(qw));
    let mut w = [[0.0f32; 8]; 32];
    let mut sw = [0.0f32; 8];
    for i in 0..32 {
        for j in 0..8 {
            let v = xt[i][j];
            w[i][j] = qt[i][j] * (sigma2 + v * v).sqrt();
            sw[j] += w[i][j];
        }
    }
    let mut lt = [[0i32; 8]; 32];
    let (scales, mins) = qkx_lanes(&xt, &w, nmax, SEARCH, &mut lt);
    finish_affine_weighted(x, nmax, cap, (&scales, &mins, &sw), unlane8(&lt))
}

/// `make_qx_quants` (rmse_type 1, values weighted by `qw[i][j]` or their
/// squares) over 16 sub-blocks of 16 (`x[i][j]`: value i of sub-block j),
/// `nmax` 32: codes (offset by 32) to `l[i][j]`, returns each lane's scale.
#[inline(always)]
fn qx_lanes(
    x: &[[f32; 16]; 16],
    qw: Option<&[[f32; 16]; 16]>,
    l: &mut [[i8; 16]; 16],
) -> [f32; 16] {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = ([0.0f32; 16], [0.0f32; 16]);
    for row in x {
        for j in 0..16 {
            let a = row[j].abs();
            if a > amax[j] {
                amax[j] = a;
                max[j] = row[j];
            }
        }
    }
    let code = |iscale: f32, v: f32| nearest(iscale * v).clamp(-NMAX, NMAX - 1);
    let fit = |iscale: &[f32; 16]| {
        let (mut sumlx, mut suml2) = ([0.0f32; 16], [0.0f32; 16]);
        for (i, row) in x.iter().enumerate() {
            for j in 0..16 {
                let v = row[j];
                let q = code(iscale[j], v) as f32;
                let w = match qw {
                    Some(qw) => qw[i][j],
                    None => v * v,
                };
                sumlx[j] += w * v * q;
                suml2[j] += w * q * q;
            }
        }
        (sumlx, suml2)
    };
    let mut iscale = [0.0f32; 16];
    for j in 0..16 {
        iscale[j] = -(NMAX as f32) / max[j];
    }
    for (lr, row) in l.iter_mut().zip(x) {
        for j in 0..16 {
            lr[j] = (code(iscale[j], row[j]) + NMAX) as i8;
        }
    }
    let (sumlx, suml2) = fit(&iscale);
    let (mut scale, mut best) = ([0.0f32; 16], [0.0f32; 16]);
    for j in 0..16 {
        scale[j] = if suml2[j] != 0.0 {
            sumlx[j] / suml2[j]
        } else {
            0.0
        };
        best[j] = scale[j] * sumlx[j];
    }
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        for j in 0..16 {
            iscale[j] = -(NMAX as f32 + 0.1 * is as f32) / max[j];
        }
        let (sumlx, suml2) = fit(&iscale);
        let mut take = [false; 16];
        for j in 0..16 {
            take[j] = suml2[j] > 0.0 && sumlx[j] * sumlx[j] > best[j] * suml2[j];
            if take[j] {
                scale[j] = sumlx[j] / suml2[j];
                best[j] = scale[j] * sumlx[j];
            }
        }
        if take.iter().any(|&t| t) {
            for (lr, row) in l.iter_mut().zip(x) {
                for j in 0..16 {
                    if take[j] {
                        lr[j] = (code(iscale[j], row[j]) + NMAX) as i8;
                    }
                }
            }
        }
    }
    for j in 0..16 {
        if amax[j] < GROUP_MAX_EPS {
            scale[j] = 0.0;
            for lr in l.iter_mut() {
                lr[j] = 0;
            }
        }
    }
    scale
}

/// `x` (16 sub-blocks of 16) with sub-block j in lane j.
#[inline(always)]
fn lanes16(x: &[f32]) -> [[f32; 16]; 16] {
    let mut t = [[0.0f32; 16]; 16];
    for j in 0..16 {
        for i in 0..16 {
            t[i][j] = x[16 * j + i];
        }
    }
    t
}

/// `x` (8 sub-blocks of 32) with sub-block j in lane j.
#[inline(always)]
fn lanes8(x: &[f32]) -> [[f32; 8]; 32] {
    let mut t = [[0.0f32; 8]; 32];
    for j in 0..8 {
        for i in 0..32 {
            t[i][j] = x[32 * j + i];
        }
    }
    t
}

/// Codes from lanes back to the row's order.
#[inline(always)]
fn unlane8(lt: &[[i32; 8]; 32]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    for j in 0..8 {
        for i in 0..32 {
            l[32 * j + i] = lt[i][j] as u8;
        }
    }
    l
}

/// One Q6_K super-block, as the reference (weighted by `qw` as
/// `quantize_row_q6_K_impl`, when given).
#[inline(always)]
fn q6_k(x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let xt = lanes16(x);
    let wt = qw.map(lanes16);
    let mut lt = [[0i8; 16]; 16];
    let scales = qx_lanes(&xt, wt.as_ref(), &mut lt);
    let mut l = [0i8; QK_K];
    for j in 0..16 {
        for i in 0..16 {
            l[16 * j + i] = lt[i][j];
        }
    }
    finish_q6_k(x, &scales, l, out);
}

/// The super-blocks of one row of a K-quant `kind` into `out`, weighted
/// by one importance per column when `qw` is given.
#[inline(always)]
fn row_plain(kind: GgufType, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    let size = kind.block_bytes();
    for (k, (b, o)) in x
        .chunks_exact(QK_K)
        .zip(out.chunks_exact_mut(size))
        .enumerate()
    {
        let q = qw.map(|q| &q[k * QK_K..(k + 1) * QK_K]);
        match (kind, q) {
            (GgufType::Q4_K, None) => write_q4_k(affine(b, 15, (-1.0, 0.1, 20)), o),
            (GgufType::Q5_K, None) => write_q5_k(affine(b, 31, (-0.5, 0.1, 15)), o),
            (GgufType::Q4_K, Some(q)) => write_q4_k(affine_weighted(b, q, 15, false), o),
            (GgufType::Q5_K, Some(q)) => write_q5_k(affine_weighted(b, q, 31, true), o),
            _ => q6_k(b, q, o),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(kind: GgufType, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    row_plain(kind, x, qw, out)
}

/// The super-blocks of one row (its length a multiple of 256) of Q4_K,
/// Q5_K or Q6_K, weighted by one importance per column when `qw` is
/// given, with AVX2 where the CPU has it.
pub fn row(kind: GgufType, x: &[f32], qw: Option<&[f32]>, out: &mut [u8]) {
    assert!(matches!(
        kind,
        GgufType::Q4_K | GgufType::Q5_K | GgufType::Q6_K
    ));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { row_avx2(kind, x, qw, out) };
    }
    row_plain(kind, x, qw, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows of every kind of sub-block the searches branch on: Gaussian,
    /// heavy-tailed, one-signed, constant, zero, single spikes, half steps.
    fn rows(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * QK_K);
        for _ in 0..n * QK_K / 16 {
            let kind: u32 = rng.random_range(0..10);
            let scale = 10f32.powi(rng.random_range(-4..3));
            for k in 0..16 {
                let g: f32 = rng.random::<f32>() * 2.0 - 1.0;
                x.push(match kind {
                    0 => 0.0,
                    1 => scale,
                    2 => (g * scale).abs(),
                    3 => -(g * scale).abs(),
                    4 if k == 3 => scale * 7.0,
                    4 => 0.0,
                    5 => (g * 8.0).round() / 2.0,
                    6 => g * scale / (0.05 + g.abs()),
                    _ => g * scale,
                });
            }
        }
        x
    }

    #[test]
    fn lanes_equal_the_reference() {
        let x = rows(400, 7);
        // Importances over six orders of magnitude, some zero.
        let qw: Vec<f32> = rows(400, 8)
            .iter()
            .map(|v| if *v == 0.0 { 0.0 } else { v.abs() * 1e3 })
            .collect();
        for kind in [GgufType::Q4_K, GgufType::Q5_K, GgufType::Q6_K] {
            let size = kind.block_bytes();
            for weighted in [false, true] {
                let mut want = vec![0u8; x.len() / QK_K * size];
                let mut got = want.clone();
                let mut plain = want.clone();
                let q = weighted.then_some(&qw[..]);
                for (k, o) in want.chunks_mut(size).enumerate() {
                    let span = k * QK_K..(k + 1) * QK_K;
                    match q {
                        Some(q) => crate::reference::imatrix::quantize_row(
                            kind,
                            &x[span.clone()],
                            &q[span],
                            o,
                        ),
                        None => kind.block_fn()(&x[span], o),
                    }
                }
                for (k, (g, p)) in got.chunks_mut(size).zip(plain.chunks_mut(size)).enumerate() {
                    let span = k * QK_K..(k + 1) * QK_K;
                    let qs = q.map(|q| &q[span.clone()]);
                    row(kind, &x[span.clone()], qs, g);
                    row_plain(kind, &x[span], qs, p);
                }
                for (b, (g, w)) in got.chunks(size).zip(want.chunks(size)).enumerate() {
                    assert_eq!(g, w, "{kind:?} weighted {weighted} super-block {b}");
                }
                assert_eq!(plain, want, "{kind:?} weighted {weighted} without AVX2");
            }
        }
    }
}
