//! AVX2 + F16C row kernel: decodes the row's bytes, finds each group's range
//! and writes its codes eight lanes at a time, with the same operations as the
//! reference (a correctly rounded `vdivps`, separate add, clamp, round half
//! even; NaN gives code 0), so its codes are identical.

use std::arch::x86_64::*;

use crate::reference::quant::{qparams_of_range, quantize, QParams, QuantSpec, Rounding};
use crate::DType;

/// Whether this CPU can run [`quantize_row`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
}

/// Decodes `bytes` (a row of `dtype`) into `x`.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn decode(dtype: DType, bytes: &[u8], x: &mut [f32]) {
    let n = x.len();
    let body = n - n % 8;
    let src = bytes.as_ptr();
    let dst = x.as_mut_ptr();
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 <= n elements of `bytes` and `x`; unaligned loads.
        let v = match dtype {
            DType::BF16 => {
                let h = _mm_loadu_si128(src.add(2 * i) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            }
            DType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(src.add(2 * i) as *const __m128i)),
            _ => _mm256_loadu_ps(src.add(4 * i) as *const f32),
        };
        _mm256_storeu_ps(dst.add(i), v);
    }
    let size = dtype.bits() / 8;
    crate::tensor::decode_f32(dtype, &bytes[body * size..], &mut x[body..]);
}

/// Smallest and largest value of `x` and 0, NaN ignored.
#[target_feature(enable = "avx2")]
unsafe fn range(x: &[f32]) -> (f32, f32) {
    let body = x.len() - x.len() % 8;
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in (0..body).step_by(8) {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        // min/max return the second operand when either is NaN.
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut lo, mut hi) = (
        fold(lo, |a, b| _mm_min_ps(a, b)),
        fold(hi, |a, b| _mm_max_ps(a, b)),
    );
    for &v in &x[body..] {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// The eight lanes of `v` combined by `op` (min, max or add) in three
/// shuffle steps instead of a store and a scalar loop.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fold(v: __m256, op: impl Fn(__m128, __m128) -> __m128) -> f32 {
    let m = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = op(m, _mm_movehl_ps(m, m));
    let m = op(m, _mm_shuffle_ps(m, m, 1));
    _mm_cvtss_f32(m)
}

/// Rounds each lane to bf16 (half to even) and back.
#[target_feature(enable = "avx2")]
unsafe fn round_bf16(v: __m256) -> __m256 {
    let b = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    let b = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb);
    _mm256_castsi256_ps(_mm256_and_si256(
        b,
        _mm256_set1_epi32(0xffff_0000u32 as i32),
    ))
}

/// Rounds each lane to `dtype` (half to even) and back.
#[target_feature(enable = "avx2,f16c")]
unsafe fn round_to(dtype: DType, v: __m256) -> __m256 {
    match dtype {
        DType::BF16 => round_bf16(v),
        DType::F16 => _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)),
        _ => v,
    }
}

/// Codes of eight lanes under (scale, zero point).
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn codes8(
    x: __m256,
    s: __m256,
    inv: __m256,
    zp: __m256,
    lo: __m256,
    hi: __m256,
    rounding: Rounding,
    dtype: DType,
) -> __m256i {
    let t = match rounding {
        // x·fl(1/s) is within |x/s|·2⁻²³ of the quotient, so it rounds
        // to the same code unless it lies near a half-integer (|x/s| is
        // at most a few hundred inside the clamp range): only vectors
        // with a lane within 2⁻¹⁰ of one pay for the correctly rounded
        // division. NaN lanes compare false and stay NaN; ±inf too.
        Rounding::Nearest => {
            let approx = _mm256_mul_ps(x, inv);
            let nearest = _mm256_round_ps(approx, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            let dist = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(approx, nearest));
            let near = _mm256_cmp_ps(dist, _mm256_set1_ps(0.5 - 1.0 / 1024.0), _CMP_GE_OQ);
            if _mm256_movemask_ps(near) != 0 {
                _mm256_div_ps(x, s)
            } else {
                approx
            }
        }
        // The dtype rounding of the quotient has boundaries everywhere;
        // always divide.
        Rounding::CompressedTensors => _mm256_div_ps(x, s),
    };
    // NaN x, or ±inf over an infinite scale; the quotient's NaN would
    // not survive the integer bf16 rounding below, so it is noted here.
    let nan = _mm256_cmp_ps(t, t, _CMP_UNORD_Q);
    let y = match rounding {
        Rounding::Nearest => _mm256_add_ps(t, zp),
        Rounding::CompressedTensors => round_to(dtype, _mm256_add_ps(round_to(dtype, t), zp)),
    };
    let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
    let y = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_cvtps_epi32(_mm256_andnot_ps(nan, y))
}

/// One row: decode, then per group range, parameters and codes.
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize_row(
    spec: &QuantSpec,
    bytes: &[u8],
    dtype: DType,
    x: &mut [f32],
    c: &mut [i8],
    p: &mut [QParams],
    group: usize,
    rounding: Rounding,
    stats: Option<&mut super::ErrorStats>,
    keep: super::RowKeep,
) {
    let want_stats = stats.is_some();
    decode(dtype, bytes, x);
    keep.apply(x);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let cols = x.len();
    let lo = _mm256_set1_ps(spec.qmin() as f32);
    let hi = _mm256_set1_ps(spec.qmax() as f32);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // What the row loses, in eight f32 lanes: max |x − x̂| (NaN skipped:
    // max returns its second operand), Σe², Σx²; group tails in scalars.
    let (mut mx, mut e2, mut x2) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let (mut tail_max, mut tail_e2, mut tail_x2) = (0.0f32, 0.0f32, 0.0f32);
    for (g, pg) in p.iter_mut().enumerate() {
        let start = g * group;
        let end = ((g + 1) * group).min(cols);
        let (l, h) = range(&x[start..end]);
        let qp = qparams_of_range(spec, l, h, dtype);
        *pg = qp;
        let s = _mm256_set1_ps(qp.scale);
        let inv = _mm256_set1_ps(1.0 / qp.scale);
        let zp = _mm256_set1_ps(qp.zero_point as f32);
        let zpi = _mm256_set1_epi32(qp.zero_point);
        // A macro, not a closure: closures do not inherit AVX2.
        macro_rules! account {
            ($xv:expr, $q:expr) => {
                if want_stats {
                    let (xv, q) = ($xv, $q);
                    let deq = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zpi)), s);
                    let e = _mm256_sub_ps(xv, deq);
                    mx = _mm256_max_ps(_mm256_and_ps(e, abs), mx);
                    e2 = _mm256_add_ps(e2, _mm256_mul_ps(e, e));
                    x2 = _mm256_add_ps(x2, _mm256_mul_ps(xv, xv));
                }
            };
        }
        let mut i = start;
        while i + 32 <= end {
            let xp = x.as_ptr().add(i);
            let (x0, x1, x2v, x3) = (
                _mm256_loadu_ps(xp),
                _mm256_loadu_ps(xp.add(8)),
                _mm256_loadu_ps(xp.add(16)),
                _mm256_loadu_ps(xp.add(24)),
            );
            let q0 = codes8(x0, s, inv, zp, lo, hi, rounding, dtype);
            let q1 = codes8(x1, s, inv, zp, lo, hi, rounding, dtype);
            let q2 = codes8(x2v, s, inv, zp, lo, hi, rounding, dtype);
            let q3 = codes8(x3, s, inv, zp, lo, hi, rounding, dtype);
            account!(x0, q0);
            account!(x1, q1);
            account!(x2v, q2);
            account!(x3, q3);
            // The packs work per 128-bit half: dwords come out as
            // q0[0..4] q1[0..4] q2[0..4] q3[0..4] q0[4..8] ...; `order`
            // puts them back in sequence.
            let w = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            let w = _mm256_permutevar8x32_epi32(w, order);
            _mm256_storeu_si256(c.as_mut_ptr().add(i) as *mut __m256i, w);
            i += 32;
        }
        for k in i..end {
            c[k] = quantize(spec, x[k], qp, rounding, dtype) as i8;
        }
        if want_stats && i < end {
            let (tm, te, tx) = super::group_errors(&x[i..end], &c[i..end], qp);
            tail_max = tail_max.max(tm);
            tail_e2 += te;
            tail_x2 += tx;
        }
    }
    if let Some(stats) = stats {
        let max = fold(mx, |a, b| _mm_max_ps(a, b)).max(tail_max);
        stats.max_abs = stats.max_abs.max(max as f64);
        stats.sum_sq_err += (fold(e2, |a, b| _mm_add_ps(a, b)) + tail_e2) as f64;
        stats.sum_sq += (fold(x2, |a, b| _mm_add_ps(a, b)) + tail_x2) as f64;
    }
}
