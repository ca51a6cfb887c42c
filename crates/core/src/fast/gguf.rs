//! Fast CPU path of GGUF's Q8_0 and Q4_0 blocks: the reference's
//! arithmetic ([`crate::reference::gguf`], ggml's `quantize_row_*_ref`)
//! written over fixed blocks of 32 so the compiler keeps every step in
//! vector registers. Byte for byte the reference:
//!
//! * the block maximum is order-free (max is exact), and Q4_0's signed
//!   extreme is the first value whose magnitude equals it, as the
//!   reference's strict `<` scan keeps;
//! * `roundf` (halves away from zero) is a truncation plus one step away
//!   from zero when the dropped part is at least a half — `v − trunc(v)`
//!   is exact, so this is roundf itself;
//! * the reference's saturating `as i8` casts as a clamp to [−128, 127]
//!   (reached only when 1/d is infinite, on blocks of subnormals) with NaN
//!   as 0, then an unchecked conversion.

use crate::reference::gguf::QK;
use half::f16;

/// roundf(v), vectorizable.
#[inline(always)]
fn round_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + 1.0f32.copysign(v)
    } else {
        t
    }
}

/// `v as i8` for an integral `v` (or ±inf, NaN): saturated, NaN as 0,
/// without the scalar checks of a saturating conversion.
#[inline(always)]
fn to_i8(v: f32) -> i8 {
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-128.0, 127.0)
    };
    // SAFETY: v is finite and within i32's range.
    unsafe { v.to_int_unchecked::<i32>() as i8 }
}

/// One Q8_0 block (34 bytes) of 32 values.
#[inline(always)]
pub fn q8_0_block(x: &[f32; QK], out: &mut [u8]) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let mut q = [0i8; QK];
    for (c, &v) in q.iter_mut().zip(x) {
        // Saturating as the reference's `as i8` (an infinite 1/d on a
        // block of subnormals saturates there too).
        *c = to_i8(round_away(v * id));
    }
    for (o, c) in out[2..2 + QK].iter_mut().zip(q) {
        *o = c as u8;
    }
}

/// One Q4_0 block (18 bytes) of 32 values.
#[inline(always)]
pub fn q4_0_block(x: &[f32; QK], out: &mut [u8]) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    // The reference starts from +0 and replaces it only on a strictly
    // larger magnitude: an all-zero block keeps +0 whatever its signs.
    let max = match amax > 0.0 {
        true => x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0),
        false => 0.0,
    };
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let mut q = [0u8; QK];
    for (c, &v) in q.iter_mut().zip(x) {
        // Truncation toward zero, saturating as the reference's `as i8`
        // (only an infinite 1/d leaves [0.5, 16.5]), capped at 15.
        *c = to_i8((v * id + 8.5).trunc()).min(15) as u8;
    }
    for j in 0..QK / 2 {
        out[2 + j] = q[j] | (q[j + QK / 2] << 4);
    }
}

/// The blocks of one row (its length a multiple of the block) into `out`:
/// Q8_0 and Q4_0 with AVX2 where the CPU has it, the K-quants through
/// [`super::kquants`] (sub-blocks in vector lanes), Q5_0 and Q5_1 through
/// the reference's block quantizer.
pub fn row(kind: crate::reference::gguf::GgufType, x: &[f32], out: &mut [u8]) {
    use crate::reference::gguf::GgufType;
    if matches!(kind, GgufType::Q4_K | GgufType::Q5_K | GgufType::Q6_K) {
        return super::kquants::row(kind, x, None, out);
    }
    if !matches!(kind, GgufType::Q8_0 | GgufType::Q4_0) {
        let (n, size, block) = (kind.block_elems(), kind.block_bytes(), kind.block_fn());
        for (b, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(size)) {
            block(b, o);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { row_avx2(kind, x, out) };
    }
    row_plain(kind, x, out)
}

/// [`row`] compiled for AVX2 (truncation and the block loops in vector
/// registers; the same IEEE operations).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(kind: crate::reference::gguf::GgufType, x: &[f32], out: &mut [u8]) {
    row_plain(kind, x, out)
}

#[inline(always)]
fn row_plain(kind: crate::reference::gguf::GgufType, x: &[f32], out: &mut [u8]) {
    use crate::reference::gguf::GgufType;
    let bb = kind.block_bytes();
    for (b, o) in x.chunks_exact(QK).zip(out.chunks_exact_mut(bb)) {
        let b: &[f32; QK] = b.try_into().expect("whole blocks");
        match kind {
            GgufType::Q8_0 => q8_0_block(b, o),
            _ => q4_0_block(b, o),
        }
    }
}

/// A float tensor's rows, whole blocks of `block_elems` values, each
/// decoded to f32 and turned into its blocks' bytes by `row` (rows in
/// parallel, one reused buffer per thread).
pub fn quantize_rows(
    w: &crate::TensorView,
    block_elems: usize,
    block_bytes: usize,
    row: impl Fn(&[f32], &mut [u8]) + Sync,
) -> crate::Result<Vec<u8>> {
    use rayon::prelude::*;
    let (rows, cols) = w.matrix_dims();
    if !cols.is_multiple_of(block_elems) {
        return Err(crate::Error::Invalid(format!(
            "GGUF blocks need rows of whole blocks of {block_elems}; rows hold {cols}"
        )));
    }
    let row_bytes = cols / block_elems * block_bytes;
    let mut out = vec![0u8; rows * row_bytes];
    if cols == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(row_bytes)
        .enumerate()
        .try_for_each_init(
            || vec![0.0f32; cols],
            |x, (r, o)| {
                w.decode_into(r * cols..(r + 1) * cols, x)?;
                row(x, o);
                Ok::<_, crate::Error>(())
            },
        )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gguf::GgufType;
    use rand::{Rng, SeedableRng};

    /// Blocks meant to hit every branch: halves at every scale, ties of
    /// the extreme with opposite signs, zeros, subnormals, huge values.
    fn blocks() -> Vec<[f32; QK]> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut v = Vec::new();
        for k in 0..400 {
            let mut b = [0.0f32; QK];
            let scale = 10f32.powi(rng.random_range(-40..38));
            for (j, x) in b.iter_mut().enumerate() {
                *x = match k % 8 {
                    // Exact halves of the Q8_0 step (amax 127 → d = 1).
                    0 => (j as f32 - 16.0) + 0.5,
                    // Q4_0 steps: multiples of d/2 with d = 1.
                    1 => (j as f32 - 16.0) * 0.5,
                    2 => 0.0,
                    3 => rng.random_range(-1.0f32..1.0) * f32::MIN_POSITIVE,
                    _ => rng.random_range(-1.0f32..1.0) * scale,
                };
            }
            match k % 8 {
                0 => b[31] = 127.0,
                1 => {
                    b[3] = 8.0;
                    b[9] = -8.0;
                }
                5 => {
                    let m = b.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                    b[20] = m;
                    b[4] = -m;
                }
                _ => {}
            }
            v.push(b);
        }
        v
    }

    #[test]
    fn blocks_equal_the_reference() {
        for kind in [GgufType::Q8_0, GgufType::Q4_0] {
            for b in blocks() {
                let mut got = vec![0u8; kind.block_bytes()];
                row(kind, &b, &mut got);
                assert_eq!(got, kind.quantize(&b), "{kind:?} {b:?}");
            }
        }
    }

    #[test]
    fn rounding_is_roundf() {
        for v in [
            0.5f32, -0.5, 1.5, -2.5, 0.49999997, 126.5, -126.5, 3.0, 0.0, -0.0,
        ] {
            assert_eq!(round_away(v), v.round(), "{v}");
        }
    }
}
