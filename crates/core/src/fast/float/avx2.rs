//! AVX2 kernels of the float schemes: E4M3 and E2M1 codes eight lanes at a
//! time with the same IEEE operations as the scalar encoders (a correctly
//! rounded `vdivps`, round half to even by the default MXCSR mode, the
//! same thresholds), so the bytes are the reference's. The callers check
//! [`available`] first.

use std::arch::x86_64::*;

use crate::reference::fp8::e4m3;
use crate::DType;

/// Whether this CPU can run these kernels.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The running lane maxima `m` raised by |x| over x's whole vectors, and
/// the maximum of its tail.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn amax_into(x: Lanes, mut m: __m256) -> (__m256, f32) {
    let n = x.len();
    let body = n - n % 8;
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for i in (0..body).step_by(8) {
        m = _mm256_max_ps(_mm256_and_ps(x.load(i), abs), m);
    }
    (m, (body..n).fold(0.0f32, |a, i| a.max(x.get(i).abs())))
}

/// E4M3 codes (in the low byte of each lane) of `q` clamped to ±448: with e
/// the exponent of |q| (at least −6) and steps = |q|/2^(e−3) rounded to
/// even, 8·(e+7) + steps − 8; NaN is 0x7f; the sign bit on top.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn e4m3_8(q: __m256) -> __m256i {
    let bits = _mm256_castps_si256(q);
    let sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), _mm256_set1_epi32(0x80));
    let nan = _mm256_castps_si256(_mm256_cmp_ps(q, q, _CMP_UNORD_Q));
    let a = _mm256_and_ps(q, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let a = _mm256_min_ps(a, _mm256_set1_ps(448.0));
    let e = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_castps_si256(a), 23),
        _mm256_set1_epi32(127),
    );
    let e = _mm256_max_epi32(e, _mm256_set1_epi32(-6));
    let unit = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(130), e), 23);
    let steps = _mm256_cvtps_epi32(_mm256_mul_ps(a, _mm256_castsi256_ps(unit)));
    let code = _mm256_add_epi32(
        _mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(7)), 3),
        _mm256_sub_epi32(steps, _mm256_set1_epi32(8)),
    );
    let code = _mm256_min_epi32(code, _mm256_set1_epi32(0x7e));
    let code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7f), nan);
    _mm256_or_si256(code, sign)
}

/// E2M1 codes of `q` (before clamping; NaN is 7), as an E4M3-like
/// encoder with one mantissa bit: with a = min(|q|, 6), e the exponent of a
/// (at least 0) and steps = a/2^(e−1) rounded to even, the magnitude code
/// is 2e + steps (a carry into the next exponent included); the sign bit
/// when q < 0 (so −0 keeps code 0, as the reference's `x < 0`).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn e2m1_8(q: __m256) -> __m256i {
    let nan = _mm256_castps_si256(_mm256_cmp_ps(q, q, _CMP_UNORD_Q));
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let a = _mm256_min_ps(_mm256_and_ps(q, abs), _mm256_set1_ps(6.0));
    let e = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_castps_si256(a), 23),
        _mm256_set1_epi32(127),
    );
    let e = _mm256_max_epi32(e, _mm256_setzero_si256());
    let unit = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(128), e), 23);
    let steps = _mm256_cvtps_epi32(_mm256_mul_ps(a, _mm256_castsi256_ps(unit)));
    let m = _mm256_add_epi32(_mm256_add_epi32(e, e), steps);
    let neg = _mm256_castps_si256(_mm256_cmp_ps(q, _mm256_setzero_ps(), _CMP_LT_OQ));
    let m = _mm256_or_si256(m, _mm256_and_si256(neg, _mm256_set1_epi32(8)));
    _mm256_blendv_epi8(m, _mm256_set1_epi32(7), nan)
}

/// Stores the low byte of each lane of `codes` at `out` (8 bytes).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store8(codes: __m256i, out: *mut u8) {
    // Bytes 0, 4, 8, 12 of each 128-bit half, then the two halves' dwords
    // side by side.
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let b = _mm256_shuffle_epi8(codes, pick);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64(out as *mut __m128i, _mm256_castsi256_si128(b));
}

/// The quotient x / s, rounded to bf16 when `bf16` (by bits, NaN kept).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn quotient(x: __m256, s: __m256, bf16: bool) -> __m256 {
    let q = _mm256_div_ps(x, s);
    if bf16 {
        round_bf16(q)
    } else {
        q
    }
}

/// E4M3 codes of `xs / s` (rounded to bf16 first when `bf16`) into `out`;
/// the tail through `lane`, the scalar encoder.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fp8_span(xs: Lanes, s: f32, bf16: bool, out: &mut [u8], lane: impl Fn(f32) -> u8) {
    let n = xs.len();
    let body = n - n % 32;
    let sv = _mm256_set1_ps(s);
    for i in (0..body).step_by(32) {
        let c = [0, 8, 16, 24].map(|k| e4m3_8(quotient(xs.load(i + k), sv, bf16)));
        // SAFETY: i + 32 <= len of out.
        store32(c, out.as_mut_ptr().add(i));
    }
    for (i, o) in out.iter_mut().enumerate().take(n).skip(body) {
        *o = lane(xs.get(i));
    }
}

/// One band of an FP8 weight (`codes.len() / cols` rows of `x`): the scale
/// of each span of `span` columns, with `scale` the reference's rule for a
/// maximum, then the codes (`lane` for tails).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fp8_band(
    x: Lanes,
    cols: usize,
    span: usize,
    bf16: bool,
    scale: impl Fn(f32) -> f32,
    lane: impl Fn(f32, f32) -> u8,
    codes: &mut [u8],
    scales: &mut [f32],
) {
    let rows = codes.len() / cols;
    // Two tiles side by side at a time (a row per channel; for blocks, 128
    // rows × 256 columns of bf16, 64 KiB): their maxima in one sweep, then
    // their codes while in cache (measured: 0.8 of memcpy for fp8-block,
    // against 0.55 with eight tiles, 256 KiB, at a time).
    for (t, ss) in scales.chunks_mut(2).enumerate() {
        let first = t * 2;
        let mut m = [(_mm256_setzero_ps(), 0.0f32); 8];
        for r in 0..rows {
            for (k, mk) in m.iter_mut().enumerate().take(ss.len()) {
                let (c0, c1) = ((first + k) * span, ((first + k + 1) * span).min(cols));
                let (v, tail) = amax_into(x.slice(r * cols + c0..r * cols + c1), mk.0);
                *mk = (v, mk.1.max(tail));
            }
        }
        for (s, (v, tail)) in ss.iter_mut().zip(m) {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            *s = scale(lanes.iter().fold(tail, |a, &b| a.max(b)));
        }
        for r in 0..rows {
            for (k, &sk) in ss.iter().enumerate() {
                let (c0, c1) = ((first + k) * span, ((first + k + 1) * span).min(cols));
                let xs = x.slice(r * cols + c0..r * cols + c1);
                let out = &mut codes[r * cols + c0..r * cols + c1];
                fp8_span(xs, sk, bf16, out, |v| lane(v, sk));
            }
        }
    }
}

/// Stores the low bytes of four vectors' lanes (each below 256) at `out`,
/// 32 bytes in lane order.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store32(c: [__m256i; 4], out: *mut u8) {
    let lo = _mm256_packus_epi32(c[0], c[1]);
    let hi = _mm256_packus_epi32(c[2], c[3]);
    let bytes = _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(lo, hi),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    );
    _mm256_storeu_si256(out as *mut __m256i, bytes);
}

/// How an FP4 row's groups are scaled.
#[derive(Debug, Clone, Copy)]
pub enum Fp4Mode {
    /// NVFP4: groups of 16, E4M3 scales under the global scale `gs`, the
    /// group maximum / 6 rounded to the weight's dtype first.
    Nv { gs: f32, dtype: DType },
    /// MXFP4: groups of 32, power-of-two scales; quotients rounded to bf16
    /// when the weight is bf16.
    Mx { bf16: bool },
}

impl Fp4Mode {
    /// Inputs per group.
    pub fn group(self) -> usize {
        match self {
            Fp4Mode::Nv { .. } => 16,
            Fp4Mode::Mx { .. } => 32,
        }
    }
}

/// The maxima of eight vectors' lanes, one per lane of the result
/// (lane k: the largest lane of `v[k]`), in three rounds of pairwise
/// shuffles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lane_maxima(v: [__m256; 8]) -> __m256 {
    // [a0 a2 b0 b2 | a4 a6 b4 b6] against [a1 a3 b1 b3 | a5 a7 b5 b7].
    unsafe fn pair(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(
            _mm256_shuffle_ps::<0b10_00_10_00>(a, b),
            _mm256_shuffle_ps::<0b11_01_11_01>(a, b),
        )
    }
    let (t0, t1) = (pair(v[0], v[1]), pair(v[2], v[3]));
    let (t2, t3) = (pair(v[4], v[5]), pair(v[6], v[7]));
    // Lanes: [v0 v1 v2 v3 (low halves) | v0 v1 v2 v3 (high halves)].
    let (u0, u1) = (pair(t0, t1), pair(t2, t3));
    _mm256_max_ps(
        _mm256_permute2f128_ps::<0x20>(u0, u1),
        _mm256_permute2f128_ps::<0x31>(u0, u1),
    )
}

/// Where a kernel reads eight lanes: f32 values, or the bytes of a bf16
/// weight (widened in the register, no f32 copy).
#[derive(Clone, Copy)]
pub enum Lanes<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u8]),
}

impl Lanes<'_> {
    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            Lanes::F32(x) => x.len(),
            Lanes::Bf16(b) => b.len() / 2,
        }
    }

    /// Elements `r`.
    pub fn slice(&self, r: std::ops::Range<usize>) -> Self {
        match self {
            Lanes::F32(x) => Lanes::F32(&x[r]),
            Lanes::Bf16(b) => Lanes::Bf16(&b[2 * r.start..2 * r.end]),
        }
    }

    /// Element i.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Lanes::F32(x) => x[i],
            Lanes::Bf16(b) => {
                f32::from_bits((u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32) << 16)
            }
        }
    }

    /// Elements i..i + 8 (i + 8 ≤ len).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(&self, i: usize) -> __m256 {
        match self {
            Lanes::F32(x) => _mm256_loadu_ps(x.as_ptr().add(i)),
            Lanes::Bf16(b) => {
                let h = _mm_loadu_si128(b.as_ptr().add(2 * i) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            }
        }
    }
}

/// Eight FP4 groups (`8 × group` inputs of `x`): their codes (one per
/// byte) and scale bytes, as the reference's `nv_group` / `mx_group`, the
/// scales of all eight computed in one vector.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn fp4_groups8(x: Lanes, mode: Fp4Mode, codes: &mut [u8], scales: &mut [u8]) {
    let group = mode.group();
    debug_assert!(x.len() == 8 * group && codes.len() == 8 * group && scales.len() == 8);
    let per = group / 8; // vectors per group
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let zero = _mm256_setzero_ps();
    // Each group's running maximum of |x|, NaN skipped (vmaxps keeps its
    // second operand when the first is NaN).
    let mut m = [zero; 8];
    for (g, mg) in m.iter_mut().enumerate() {
        for k in 0..per {
            let v = _mm256_and_ps(x.load((g * per + k) * 8), abs);
            *mg = _mm256_max_ps(v, *mg);
        }
    }
    let amax = lane_maxima(m);
    debug_assert!(x.len() == 8 * group);
    let one = _mm256_set1_epi32(1);
    // Per group: the scale byte, and the factor codes take the quotient by
    // (divide by s for NVFP4; multiply by the exact power of two 1/s for
    // MXFP4, the same correctly rounded x·2^(127−b)).
    let (b, factor) = match mode {
        Fp4Mode::Nv { gs, dtype } => {
            let t = _mm256_div_ps(amax, _mm256_set1_ps(6.0));
            let t = match dtype {
                DType::BF16 => {
                    let bits = _mm256_castps_si256(t);
                    let odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
                    let r =
                        _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
                    _mm256_castsi256_ps(_mm256_and_si256(
                        r,
                        _mm256_set1_epi32(0xffff_0000u32 as i32),
                    ))
                }
                DType::F16 => _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(t)),
                _ => t,
            };
            let gsv = _mm256_set1_ps(gs);
            let b = e4m3_8(_mm256_min_ps(_mm256_mul_ps(gsv, t), _mm256_set1_ps(448.0)));
            // A zero scale becomes 0.125.
            let zero_code = _mm256_cmpeq_epi32(b, _mm256_setzero_si256());
            let b = _mm256_blendv_epi8(b, _mm256_set1_epi32(e4m3(0.125) as i32), zero_code);
            // E4M3 value of b (positive): subnormal m·2⁻⁹, else the float
            // with exponent e − 7 and mantissa m/8.
            let e = _mm256_and_si256(_mm256_srli_epi32(b, 3), _mm256_set1_epi32(15));
            let mant = _mm256_and_si256(b, _mm256_set1_epi32(7));
            let normal = _mm256_castsi256_ps(_mm256_or_si256(
                _mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(120)), 23),
                _mm256_slli_epi32(mant, 20),
            ));
            let sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mant), _mm256_set1_ps(1.0 / 512.0));
            let is_sub = _mm256_castsi256_ps(_mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
            let value = _mm256_blendv_ps(normal, sub, is_sub);
            (b, _mm256_div_ps(value, gsv))
        }
        Fp4Mode::Mx { .. } => {
            // Exponent byte: amax rounded to a power of two (adding 2^21 to
            // the bits carries exactly from a 0.75 mantissa), biased − 2,
            // 0 for a zero or subnormal maximum.
            let exp = _mm256_and_si256(
                _mm256_srli_epi32(
                    _mm256_add_epi32(_mm256_castps_si256(amax), _mm256_set1_epi32(1 << 21)),
                    23,
                ),
                _mm256_set1_epi32(0xff),
            );
            let b = _mm256_max_epi32(
                _mm256_sub_epi32(exp, _mm256_set1_epi32(2)),
                _mm256_setzero_si256(),
            );
            let b = _mm256_andnot_si256(_mm256_cmpeq_epi32(exp, _mm256_setzero_si256()), b);
            // 1/s = 2^(127 − b): biased exponent 254 − b (b ≤ 253).
            let r = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(254), b), 23);
            (b, _mm256_castsi256_ps(r))
        }
    };
    store8(b, scales.as_mut_ptr());
    match mode {
        Fp4Mode::Nv { .. } => codes_of::<true, false>(x, factor, per, codes),
        Fp4Mode::Mx { bf16: true } => codes_of::<false, true>(x, factor, per, codes),
        Fp4Mode::Mx { bf16: false } => codes_of::<false, false>(x, factor, per, codes),
    }
}

/// The E2M1 codes of eight groups of `8 × per` inputs, 32 at a time: each
/// value divided by its group's factor (`DIV`, NVFP4) or multiplied by it
/// (MXFP4's exact 1/s), rounded to bf16 first when `BF16`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn codes_of<const DIV: bool, const BF16: bool>(
    x: Lanes,
    factor: __m256,
    per: usize,
    codes: &mut [u8],
) {
    for u in 0..2 * per {
        let c = [0, 1, 2, 3].map(|k| {
            let v = 4 * u + k;
            let f = _mm256_permutevar8x32_ps(factor, _mm256_set1_epi32((v / per) as i32));
            let xv = x.load(v * 8);
            let q = if DIV {
                _mm256_div_ps(xv, f)
            } else {
                _mm256_mul_ps(xv, f)
            };
            e2m1_8(if BF16 { round_bf16(q) } else { q })
        });
        // SAFETY: (u + 1)·32 ≤ 8·per·8 = codes.len().
        store32(c, codes.as_mut_ptr().add(u * 32));
    }
}

/// q rounded to bf16 (nearest even, by bits; NaN kept).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn round_bf16(q: __m256) -> __m256 {
    let b = _mm256_castps_si256(q);
    let odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    let r = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
    let r = _mm256_castsi256_ps(_mm256_and_si256(
        r,
        _mm256_set1_epi32(0xffff_0000u32 as i32),
    ));
    _mm256_blendv_ps(r, q, _mm256_cmp_ps(q, q, _CMP_UNORD_Q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::fp4::e2m1;
    use crate::reference::fp8::e4m3_value;

    /// Every bf16 value (all exponents, both signs, NaN, ±inf,
    /// subnormals) and f32 values beside every E4M3 boundary: the 8-lane
    /// encoders equal the scalar reference.
    #[test]
    fn lanes_equal_the_reference_on_every_bf16_value() {
        if !available() {
            return;
        }
        let mut xs: Vec<f32> = (0..=u16::MAX)
            .map(|h| f32::from_bits((h as u32) << 16))
            .collect();
        for b in 0..=0x7eu8 {
            let v = e4m3_value(b);
            for d in [-1i32, 0, 1] {
                let x = f32::from_bits((v.to_bits() as i32 + d).max(0) as u32);
                xs.extend([x, -x, v * 1.0625, -v * 1.0625]);
            }
        }
        xs.truncate(xs.len() / 32 * 32);
        let mut out = vec![0u8; xs.len()];
        // SAFETY: checked available() above.
        unsafe {
            fp8_span(Lanes::F32(&xs), 1.0, false, &mut out, |v| {
                e4m3(v.clamp(-448.0, 448.0))
            })
        };
        for (&x, &o) in xs.iter().zip(&out) {
            assert_eq!(o, e4m3(x.clamp(-448.0, 448.0)), "e4m3 {x}");
        }
        for c in xs.chunks_exact(8) {
            let mut codes = [0u8; 8];
            // SAFETY: as above; 8 lanes in, 8 bytes out.
            unsafe { store8(e2m1_8(_mm256_loadu_ps(c.as_ptr())), codes.as_mut_ptr()) };
            for (&x, &o) in c.iter().zip(&codes) {
                assert_eq!(o, e2m1(x.clamp(-6.0, 6.0)), "e2m1 {x}");
            }
        }
    }
}
