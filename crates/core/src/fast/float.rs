//! Fast CPU path of the float schemes (FP8 and FP4): scales and codes
//! row-parallel with branch-free encoders equal to the reference's, so the
//! bytes are the reference's.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

use super::wide;
use crate::reference::fp4::Fp4;
use crate::reference::fp8::{fp8_code, fp8_scale, Fp8};
use crate::reference::quant::Rounding;
use crate::DType;

/// Where a float weight's values come from: f32 values already decoded
/// (and, for a pruned layer, zeroed), or a tensor's bytes decoded row by
/// row into a reused buffer, so a whole tensor is never held as f32.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Values(&'a [f32]),
    View(&'a crate::TensorView<'a>),
}

impl Source<'_> {
    /// Elements `elems` (flat) as f32 into `out`.
    fn fill(&self, elems: std::ops::Range<usize>, out: &mut [f32]) {
        match self {
            Source::Values(x) => out.copy_from_slice(&x[elems]),
            // The engine checked the dtype before any float scheme runs.
            Source::View(w) => {
                let size = w.float_size().expect("a float weight (f32, f16 or bf16)");
                let bytes = &w.bytes()[elems.start * size..elems.end * size];
                #[cfg(target_arch = "x86_64")]
                if avx2::available() {
                    // SAFETY: the CPU has AVX2 and F16C.
                    return unsafe { crate::fast::quant::avx2::decode(w.dtype(), bytes, out) };
                }
                crate::tensor::decode_f32(w.dtype(), bytes, out)
            }
        }
    }
}

/// The largest |x| (NaN skipped, as the reference's `f32::max`), in eight
/// lanes the compiler vectorizes.
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// [`crate::reference::fp8::quantize_fp8`], rows in parallel.
pub fn quantize_fp8(
    x: &[f32],
    rows: usize,
    cols: usize,
    block: Option<usize>,
    dtype: DType,
    rounding: Rounding,
) -> Fp8 {
    let mut q = Fp8::default();
    quantize_fp8_into(
        Source::Values(x),
        rows,
        cols,
        block,
        dtype,
        rounding,
        &mut q,
    );
    q
}

/// [`crate::reference::fp8::quantize_fp8`] of `src` into `q` (its buffers
/// reused): per row (per channel) or per band of `block` rows, the maxima
/// and the codes of each tile while it is in cache — in AVX2 straight from
/// a bf16 weight's bytes where the CPU has it, else decoded into a
/// per-thread buffer.
pub fn quantize_fp8_into(
    src: Source,
    rows: usize,
    cols: usize,
    block: Option<usize>,
    dtype: DType,
    rounding: Rounding,
    q: &mut Fp8,
) {
    q.rows = rows;
    q.cols = cols;
    q.block = block;
    q.codes.resize(rows * cols, 0);
    let [sr, sc] = q.scale_shape();
    q.scales.clear();
    q.scales.resize(sr * sc, 0.0);
    if rows == 0 || cols == 0 {
        return;
    }
    // Bands of `b` rows (one row per channel), each with its scales.
    let b = block.unwrap_or(1).max(1);
    // Whether the AVX2 kernel runs, and whether its quotients round to
    // bf16 (compressed-tensors' division of a bf16 weight); other
    // combinations take the scalar encoder.
    #[cfg(target_arch = "x86_64")]
    let simd = match (rounding, dtype) {
        (Rounding::Nearest, _) | (Rounding::CompressedTensors, DType::F32) => Some(false),
        (Rounding::CompressedTensors, DType::BF16) => Some(true),
        _ => None,
    }
    .filter(|_| avx2::available());
    let span = block.unwrap_or(cols).max(1);
    q.codes
        .par_chunks_mut(b * cols)
        .zip(q.scales.par_chunks_mut(sc))
        .enumerate()
        .for_each_init(Vec::new, |buf, (i, (codes, scales))| {
            let elems = i * b * cols..i * b * cols + codes.len();
            #[cfg(target_arch = "x86_64")]
            if let Some(bf16) = simd {
                // AVX2 straight from the values or a bf16 weight's bytes.
                let x = match src {
                    Source::View(w) if w.dtype() == DType::BF16 => {
                        avx2::Lanes::Bf16(&w.bytes()[2 * elems.start..2 * elems.end])
                    }
                    Source::Values(v) => avx2::Lanes::F32(&v[elems.clone()]),
                    Source::View(_) => {
                        buf.resize(codes.len(), 0.0);
                        src.fill(elems, buf);
                        avx2::Lanes::F32(buf)
                    }
                };
                let scale = |m| fp8_scale(m, dtype);
                let lane = |v: f32, s: f32| match bf16 {
                    true => e4m3_lane(bf16_round(v / s)),
                    false => e4m3_lane(v / s),
                };
                // SAFETY: the CPU has AVX2, FMA and F16C.
                return unsafe { avx2::fp8_band(x, cols, span, bf16, scale, lane, codes, scales) };
            }
            buf.resize(codes.len(), 0.0);
            src.fill(elems, buf);
            let band = Band {
                x: buf,
                cols,
                span,
                dtype,
                rounding,
            };
            wide(|| band.encode(codes, scales));
        });
}

/// One band of an FP8 weight (a row per channel, `block` rows per block)
/// decoded to f32.
struct Band<'a> {
    x: &'a [f32],
    cols: usize,
    span: usize,
    dtype: DType,
    rounding: Rounding,
}

impl Band<'_> {
    /// The band's scales (one per span of columns) and codes.
    #[inline(always)]
    fn encode(&self, codes: &mut [u8], scales: &mut [f32]) {
        let (cols, span) = (self.cols, self.span);
        for (j, s) in scales.iter_mut().enumerate() {
            let m = self
                .x
                .chunks(cols)
                .map(|row| amax(&row[j * span..((j + 1) * span).min(cols)]))
                .fold(0.0f32, f32::max);
            *s = fp8_scale(m, self.dtype);
        }
        for (cs, xs) in codes.chunks_mut(cols).zip(self.x.chunks(cols)) {
            for ((c, x), &s) in cs.chunks_mut(span).zip(xs.chunks(span)).zip(&*scales) {
                encode_span(x, s, self.dtype, self.rounding, c);
            }
        }
    }
}

/// Codes of `xs` under one scale: a branch-free loop the compiler
/// vectorizes for the common cases (f32 quotient, or rounded to bf16),
/// the reference's function otherwise. Equal to
/// [`crate::reference::fp8::fp8_code`] element by element.
#[inline(always)]
fn encode_span(xs: &[f32], s: f32, dtype: DType, rounding: Rounding, out: &mut [u8]) {
    let bf16 = match (rounding, dtype) {
        (Rounding::Nearest, _) | (Rounding::CompressedTensors, DType::F32) => false,
        (Rounding::CompressedTensors, DType::BF16) => true,
        _ => {
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = fp8_code(v, s, dtype, rounding);
            }
            return;
        }
    };
    for (o, &v) in out.iter_mut().zip(xs) {
        *o = match bf16 {
            true => e4m3_lane(bf16_round(v / s)),
            false => e4m3_lane(v / s),
        };
    }
}

/// An f32 rounded to bf16 (nearest, ties to even) and back, by bits; NaN
/// stays NaN.
#[inline(always)]
fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    let r = f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000);
    if x.is_nan() {
        x
    } else {
        r
    }
}

/// [`crate::reference::fp8::e4m3`] of `x` clamped to ±448, without
/// branches: with e the exponent of |x| (at least −6) and steps = |x|/2^(e−3)
/// rounded to even (an integer ≤ 16), the code is 8·(e+7) + steps − 8,
/// which also covers subnormals (e = −6) and a carry into the next
/// exponent (steps = 16).
#[inline(always)]
fn e4m3_lane(x: f32) -> u8 {
    const ROUND: f32 = 12_582_912.0;
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as i32;
    let a = f32::from_bits(bits & 0x7fff_ffff).min(448.0);
    let e = ((a.to_bits() >> 23) as i32 - 127).max(-6);
    let unit = f32::from_bits(((130 - e) as u32) << 23);
    // SAFETY: a is at most 448 and never NaN (min drops it), so the
    // rounded a·unit is an integer in 0..=16.
    let steps = unsafe { ((a * unit + ROUND) - ROUND).to_int_unchecked::<i32>() };
    let code = (((e + 7) << 3) + steps - 8).min(0x7e);
    let code = if x.is_nan() { 0x7f } else { code };
    (sign | code) as u8
}

/// The dense values of an FP8 weight, rows in parallel (the reference's
/// per-element product).
pub fn dequantize_fp8(q: &Fp8) -> Vec<f32> {
    let mut out = vec![0.0f32; q.rows * q.cols];
    if q.cols == 0 {
        return out;
    }
    out.par_chunks_mut(q.cols).enumerate().for_each(|(r, row)| {
        for (c, v) in row.iter_mut().enumerate() {
            let code = q.codes[r * q.cols + c];
            *v = crate::reference::fp8::e4m3_value(code) * q.scale_of(r, c);
        }
    });
    out
}

/// [`crate::reference::fp4::quantize_mxfp4`] (no global scale) or
/// [`crate::reference::fp4::quantize_nvfp4`] (with one), rows in parallel.
pub fn quantize_fp4(
    x: &[f32],
    rows: usize,
    cols: usize,
    global_scale: Option<f32>,
    dtype: DType,
) -> Fp4 {
    let mut q = Fp4::default();
    quantize_fp4_into(Source::Values(x), rows, cols, global_scale, dtype, &mut q);
    q
}

/// [`quantize_fp4`] of `src` into `q` (its buffers reused), each row
/// decoded into a per-thread buffer and encoded while in cache.
pub fn quantize_fp4_into(
    src: Source,
    rows: usize,
    cols: usize,
    global_scale: Option<f32>,
    dtype: DType,
    q: &mut Fp4,
) {
    use crate::reference::fp4::mx_group;
    let group = if global_scale.is_some() { 16 } else { 32 };
    let groups = cols.div_ceil(group);
    q.rows = rows;
    q.cols = cols;
    q.group = group;
    q.global_scale = global_scale;
    q.codes.resize(rows * cols, 0);
    q.scales.clear();
    q.scales.resize(rows * groups, 0);
    if rows == 0 || cols == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let simd = avx2::available()
        .then_some(match global_scale {
            Some(gs) => avx2::Fp4Mode::Nv { gs, dtype },
            None => avx2::Fp4Mode::Mx {
                bf16: dtype == DType::BF16,
            },
        })
        .filter(|m| {
            matches!(m, avx2::Fp4Mode::Nv { .. }) || matches!(dtype, DType::BF16 | DType::F32)
        });
    q.codes
        .par_chunks_mut(cols)
        .zip(q.scales.par_chunks_mut(groups))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; cols],
            |row, (r, (codes, scales))| {
                // Eight groups at a time in AVX2 where the CPU has it
                // (straight from a bf16 weight's bytes), the rest (and every
                // group elsewhere) one by one from f32 values.
                let mut done = 0;
                #[cfg(target_arch = "x86_64")]
                if let Some(mode) = simd {
                    let span = 8 * group;
                    done = cols / span * 8;
                    let whole = done * group;
                    let lanes = match src {
                        Source::View(w) if w.dtype() == DType::BF16 => {
                            avx2::Lanes::Bf16(&w.bytes()[2 * r * cols..2 * (r * cols + whole)])
                        }
                        _ => {
                            src.fill(r * cols..r * cols + whole, &mut row[..whole]);
                            avx2::Lanes::F32(&row[..whole])
                        }
                    };
                    for (k, (c, s)) in codes[..whole]
                        .chunks_exact_mut(span)
                        .zip(scales.chunks_exact_mut(8))
                        .enumerate()
                    {
                        let x = match lanes {
                            avx2::Lanes::F32(v) => avx2::Lanes::F32(&v[k * span..(k + 1) * span]),
                            avx2::Lanes::Bf16(b) => {
                                avx2::Lanes::Bf16(&b[2 * k * span..2 * (k + 1) * span])
                            }
                        };
                        // SAFETY: the CPU has AVX2, FMA and F16C.
                        unsafe { avx2::fp4_groups8(x, mode, c, s) };
                    }
                }
                let first = done * group;
                src.fill(r * cols + first..(r + 1) * cols, &mut row[first..]);
                wide(|| {
                    let rest = row[done * group..]
                        .chunks(group)
                        .zip(codes[done * group..].chunks_mut(group))
                        .zip(&mut scales[done..]);
                    for ((chunk, c), s) in rest {
                        *s = match (global_scale, dtype) {
                            (Some(gs), _) => nv_group_fast(chunk, gs, dtype, c),
                            (None, DType::BF16 | DType::F32) => mx_group_fast(chunk, dtype, c),
                            (None, _) => mx_group(chunk, dtype, c),
                        };
                    }
                })
            },
        );
}

/// [`crate::reference::fp4::e2m1`] without branches: the code is the number
/// of rounding thresholds |x| passes (ties going to the even code).
#[inline(always)]
fn e2m1_lane(x: f32) -> u8 {
    let a = x.abs();
    let m = (a > 0.25) as u8
        + (a >= 0.75) as u8
        + (a > 1.25) as u8
        + (a >= 1.75) as u8
        + (a > 2.5) as u8
        + (a >= 3.5) as u8
        + (a > 5.0) as u8;
    let m = if a.is_nan() { 7 } else { m };
    m | (((x < 0.0) as u8) << 3)
}

/// [`crate::reference::fp4::mx_group`] for bf16 and f32 weights, its
/// element loop vectorizable.
#[inline(always)]
fn mx_group_fast(chunk: &[f32], dtype: DType, codes: &mut [u8]) -> u8 {
    use crate::reference::fp4::{mx_scale, mx_scale_value};
    let b = mx_scale(amax(chunk));
    let s = mx_scale_value(b);
    if dtype == DType::BF16 {
        for (c, &v) in codes.iter_mut().zip(chunk) {
            *c = e2m1_lane(bf16_round(v / s).clamp(-6.0, 6.0));
        }
    } else {
        for (c, &v) in codes.iter_mut().zip(chunk) {
            *c = e2m1_lane((v / s).clamp(-6.0, 6.0));
        }
    }
    b
}

/// [`crate::reference::fp4::nv_group`], its element loop vectorizable.
#[inline(always)]
fn nv_group_fast(chunk: &[f32], gs: f32, dtype: DType, codes: &mut [u8]) -> u8 {
    use crate::reference::fp8::{e4m3, e4m3_value};
    use crate::reference::quant::round_to;
    let mut b = e4m3((gs * round_to(dtype, amax(chunk) / 6.0)).clamp(-448.0, 448.0));
    if b & 0x7f == 0 {
        b = e4m3(0.125);
    }
    let s = e4m3_value(b) / gs;
    for (c, &v) in codes.iter_mut().zip(chunk) {
        *c = e2m1_lane((v / s).clamp(-6.0, 6.0));
    }
    b
}

/// The dense values of an FP4 weight, rows in parallel.
pub fn dequantize_fp4(q: &Fp4) -> Vec<f32> {
    let mut out = vec![0.0f32; q.rows * q.cols];
    if q.cols == 0 {
        return out;
    }
    out.par_chunks_mut(q.cols).enumerate().for_each(|(r, row)| {
        for (c, v) in row.iter_mut().enumerate() {
            let code = q.codes[r * q.cols + c];
            *v = crate::reference::fp4::e2m1_value(code) * q.scale(r, c / q.group);
        }
    });
    out
}

impl crate::ops::float::FloatQuant for super::FastCpu {
    fn backend(&self) -> &'static str {
        "cpu-fast"
    }

    fn fp8(
        &self,
        w: &crate::TensorView,
        block: Option<usize>,
        rounding: Rounding,
    ) -> crate::Result<Fp8> {
        let mut q = Fp8::default();
        self.fp8_into(w, block, rounding, &mut q)?;
        Ok(q)
    }

    fn fp4(&self, w: &crate::TensorView, global_scale: Option<f32>) -> crate::Result<Fp4> {
        let mut q = Fp4::default();
        self.fp4_into(w, global_scale, &mut q)?;
        Ok(q)
    }

    fn fp8_into(
        &self,
        w: &crate::TensorView,
        block: Option<usize>,
        rounding: Rounding,
        q: &mut Fp8,
    ) -> crate::Result<()> {
        w.float_size()?;
        let (rows, cols) = w.matrix_dims();
        quantize_fp8_into(Source::View(w), rows, cols, block, w.dtype(), rounding, q);
        Ok(())
    }

    fn fp4_into(
        &self,
        w: &crate::TensorView,
        global_scale: Option<f32>,
        q: &mut Fp4,
    ) -> crate::Result<()> {
        w.float_size()?;
        let (rows, cols) = w.matrix_dims();
        quantize_fp4_into(Source::View(w), rows, cols, global_scale, w.dtype(), q);
        Ok(())
    }
}

/// The largest |x| of a float tensor, rows decoded into per-thread
/// buffers (no f32 copy of the tensor; NaN skipped).
pub fn amax_view(w: &crate::TensorView) -> crate::Result<f32> {
    let size = w.float_size()?;
    let (_, cols) = w.matrix_dims();
    let per = (1usize << 16).div_ceil(cols.max(1)) * cols.max(1);
    Ok(w.bytes()
        .par_chunks(per * size)
        .enumerate()
        .map_init(Vec::new, |buf, (i, bytes)| {
            let n = bytes.len() / size;
            buf.resize(n, 0.0);
            Source::View(w).fill(i * per..i * per + n, buf);
            amax(buf)
        })
        .reduce(|| 0.0, f32::max))
}

/// What quantization lost on a float layer (max |x − x̂|, Σ(x − x̂)², Σx²,
/// f64 per row), from the weight `w` and `deq_row(r, out)`, the dequantized
/// row r, rows in parallel with per-thread buffers: no dense copy of either.
pub fn error_stats_rows(
    w: &crate::TensorView,
    deq_row: impl Fn(usize, &mut [f32]) + Sync,
) -> crate::Result<crate::ops::quant::ErrorStats> {
    use crate::ops::quant::ErrorStats;
    w.float_size()?;
    let (rows, cols) = w.matrix_dims();
    Ok((0..rows)
        .into_par_iter()
        .map_init(
            || (vec![0.0f32; cols], vec![0.0f32; cols]),
            |(x, d), r| {
                Source::View(w).fill(r * cols..(r + 1) * cols, x);
                deq_row(r, d);
                row_stats(x, d)
            },
        )
        .reduce(ErrorStats::default, ErrorStats::merge))
}

/// What quantization lost on one row (max |x − x̂|, Σ(x − x̂)², Σx²), in
/// eight f64 lanes the compiler vectorizes.
fn row_stats(x: &[f32], d: &[f32]) -> crate::ops::quant::ErrorStats {
    wide(|| {
        let (mut mx, mut e2, mut x2) = ([0.0f64; 8], [0.0f64; 8], [0.0f64; 8]);
        let (xs, ds) = (x.chunks_exact(8), d.chunks_exact(8));
        let (xt, dt) = (xs.remainder(), ds.remainder());
        for (a, b) in xs.zip(ds) {
            for l in 0..8 {
                let e = (a[l] - b[l]) as f64;
                let ae = e.abs();
                mx[l] = if ae > mx[l] { ae } else { mx[l] };
                e2[l] += e * e;
                x2[l] += a[l] as f64 * a[l] as f64;
            }
        }
        let mut s = crate::ops::quant::ErrorStats {
            max_abs: mx.iter().fold(0.0f64, |m, &v| m.max(v)),
            sum_sq_err: e2.iter().sum(),
            sum_sq: x2.iter().sum(),
        };
        for (&a, &b) in xt.iter().zip(dt) {
            let e = (a - b) as f64;
            s.max_abs = s.max_abs.max(e.abs());
            s.sum_sq_err += e * e;
            s.sum_sq += (a as f64) * (a as f64);
        }
        s
    })
}

/// Row r of an FP8 weight's dense values into `out` (code × scale).
pub fn fp8_row(q: &Fp8, table: &[f32; 256], r: usize, out: &mut [f32]) {
    let codes = &q.codes[r * q.cols..(r + 1) * q.cols];
    let span = q.block.unwrap_or(q.cols).max(1);
    for (j, (o, c)) in out.chunks_mut(span).zip(codes.chunks(span)).enumerate() {
        let s = q.scale_of(r, j * span);
        for (o, &c) in o.iter_mut().zip(c) {
            *o = table[c as usize] * s;
        }
    }
}

/// Row r of an FP4 weight's dense values into `out`.
pub fn fp4_row(q: &Fp4, r: usize, out: &mut [f32]) {
    let table: [f32; 16] = std::array::from_fn(|c| crate::reference::fp4::e2m1_value(c as u8));
    let codes = &q.codes[r * q.cols..(r + 1) * q.cols];
    for (g, (o, c)) in out
        .chunks_mut(q.group)
        .zip(codes.chunks(q.group))
        .enumerate()
    {
        let s = q.scale(r, g);
        for (o, &c) in o.iter_mut().zip(c) {
            *o = table[(c & 15) as usize] * s;
        }
    }
}

/// The E4M3 values by byte, for [`fp8_row`].
pub fn e4m3_table() -> [f32; 256] {
    std::array::from_fn(|b| crate::reference::fp8::e4m3_value(b as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::fp8::e4m3;

    /// The branch-free FP4 encoder equals the reference on every bf16 value.
    #[test]
    fn fp4_lanes_equal_the_reference() {
        for h in 0..=u16::MAX {
            let x = f32::from_bits((h as u32) << 16);
            let want = crate::reference::fp4::e2m1(x);
            assert_eq!(e2m1_lane(x), want, "{x} ({h:#06x})");
        }
    }

    /// The branch-free encoder equals the reference on every bf16 value
    /// (all exponents, both signs, NaN, ±inf, subnormals) and on f32 values
    /// around every E4M3 rounding boundary.
    #[test]
    fn lanes_equal_the_reference() {
        for h in 0..=u16::MAX {
            let x = f32::from_bits((h as u32) << 16);
            let want = e4m3(x.clamp(-448.0, 448.0));
            assert_eq!(e4m3_lane(x), want, "{x} ({h:#06x})");
        }
        for b in 0..=0x7eu8 {
            let v = crate::reference::fp8::e4m3_value(b);
            for d in [-2i32, -1, 0, 1, 2] {
                let x = f32::from_bits((v.to_bits() as i32 + d).max(0) as u32);
                let mid = f32::from_bits((v * 1.03125).to_bits());
                for y in [x, -x, mid, -mid] {
                    assert_eq!(e4m3_lane(y), e4m3(y.clamp(-448.0, 448.0)), "{y}");
                }
            }
        }
    }
}
