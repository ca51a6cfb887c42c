//! CPU reference of the FP8 schemes: weights as FP8 E4M3 (the `fn`
//! variant: no infinities, largest finite ±448, NaN = 0x7f/0xff) with one
//! scale per output channel (`fp8`) or per 128×128 block (`fp8-block`),
//! as compressed-tensors writes them (`float-quantized`).
//!
//! Arithmetic (compressed-tensors 0.20, what llm-compressor's
//! `model_free_ptq` runs): the range of each channel or block is widened
//! to include 0; `scale = amax / 448` (f32, rounded to the weight's dtype,
//! floored at f32 epsilon; the dtype's epsilon for an all-zero channel);
//! a weight becomes `x / scale`, computed in the
//! weight's dtype (for bf16 the quotient is rounded to bf16 first, as
//! torch does; `Rounding::Nearest` keeps the f32 quotient), clamped to
//! ±448 and rounded to E4M3, nearest even. The stored value dequantizes as
//! `e4m3 · scale`.

use crate::reference::quant::{round_to, Rounding};
use crate::DType;

/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// The E4M3 byte nearest `x` (ties to even); values beyond ±448 saturate to
/// ±448 (callers clamp first, as compressed-tensors does); NaN is 0x7f
/// with the sign of `x`.
#[inline]
pub fn e4m3(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 31) as u8) << 7;
    if x.is_nan() {
        return sign | 0x7f;
    }
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | 0x7e;
    }
    // The exponent of a, at least the smallest normal's (−6): below it the
    // spacing stays 2⁻⁹ (subnormals).
    let e = if a == 0.0 {
        -6
    } else {
        (a.to_bits() >> 23) as i32 - 127
    }
    .max(-6);
    // Multiples of the spacing 2^(e−3) at this exponent: exact in f32.
    let unit = f32::from_bits(((127 + 3 - e) as u32) << 23);
    // a·unit < 16: adding and removing 1.5·2²³ rounds it to an integer,
    // ties to even, in the FPU's default mode (no libcall).
    const ROUND: f32 = 12_582_912.0;
    let steps = ((a * unit + ROUND) - ROUND) as u32;
    let (e, steps) = if steps == 16 { (e + 1, 8) } else { (e, steps) };
    let bits = if steps < 8 {
        steps as u8 // subnormal (e is −6 here) or zero
    } else {
        (((e + 7) as u8) << 3) | (steps as u8 - 8)
    };
    sign | bits.min(0x7e)
}

/// The value of an E4M3 byte (from a table built once).
pub fn e4m3_value(b: u8) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| e4m3_decode(i as u8)))[b as usize]
}

/// The value of an E4M3 byte, computed.
fn e4m3_decode(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 3) & 0xf, b & 7);
    if e == 0xf && m == 7 {
        return f32::NAN;
    }
    let v = if e == 0 {
        m as f32 * f32::powi(2.0, -9)
    } else {
        (8 + m) as f32 * f32::powi(2.0, e as i32 - 10)
    };
    sign * v
}

/// The scale of a channel or block whose values reach `amax` (≥ 0), as
/// stored in `dtype`. An all-zero channel gets the machine epsilon of the
/// weight's dtype (2⁻⁷ for bf16, 2⁻¹⁰ for f16, 2⁻²³ for f32), as
/// llm-compressor's `model_free_ptq` writes it (the golden files show it;
/// compressed-tensors' own `calculate_qparams` floors at the f32 epsilon);
/// its codes are 0 either way.
pub fn fp8_scale(amax: f32, dtype: DType) -> f32 {
    if amax == 0.0 {
        return match dtype {
            DType::BF16 => f32::powi(2.0, -7),
            DType::F16 => f32::powi(2.0, -10),
            _ => f32::EPSILON,
        };
    }
    round_to(dtype, amax / E4M3_MAX).max(f32::EPSILON)
}

/// The E4M3 code of `x` under `scale`: the f32 quotient rounded to E4M3
/// (`Nearest`), or, as compressed-tensors divides, the quotient first
/// rounded to the weight's `dtype` (`CompressedTensors`: for bf16 a second
/// rounding; byte for byte what the library writes).
#[inline]
pub fn fp8_code(x: f32, scale: f32, dtype: DType, rounding: Rounding) -> u8 {
    let q = match rounding {
        Rounding::Nearest => x / scale,
        Rounding::CompressedTensors => round_to(dtype, x / scale),
    };
    e4m3(q.clamp(-E4M3_MAX, E4M3_MAX))
}

/// An FP8 weight: E4M3 codes [rows, cols] and scales, one per row
/// (`block` = None) or per `block × block` tile ([⌈rows/b⌉, ⌈cols/b⌉],
/// edge tiles ragged), stored in the weight's dtype.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fp8 {
    pub rows: usize,
    pub cols: usize,
    pub block: Option<usize>,
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

impl Fp8 {
    /// Shape of the scale tensor.
    pub fn scale_shape(&self) -> [usize; 2] {
        match self.block {
            None => [self.rows, 1],
            Some(b) => [self.rows.div_ceil(b), self.cols.div_ceil(b)],
        }
    }

    /// The scale of element (r, c).
    pub fn scale_of(&self, r: usize, c: usize) -> f32 {
        match self.block {
            None => self.scales[r],
            Some(b) => self.scales[(r / b) * self.cols.div_ceil(b) + c / b],
        }
    }

    /// The dense values, code × scale.
    pub fn dequantized(&self) -> Vec<f32> {
        (0..self.rows * self.cols)
            .map(|i| e4m3_value(self.codes[i]) * self.scale_of(i / self.cols, i % self.cols))
            .collect()
    }
}

/// Quantizes `x` ([rows, cols] values of a weight stored in `dtype`) to
/// FP8, per row or per `block` tile.
pub fn quantize_fp8(
    x: &[f32],
    rows: usize,
    cols: usize,
    block: Option<usize>,
    dtype: DType,
    rounding: Rounding,
) -> Fp8 {
    let mut q = Fp8 {
        rows,
        cols,
        block,
        codes: vec![0; rows * cols],
        scales: Vec::new(),
    };
    let [sr, sc] = q.scale_shape();
    let (tr, tc) = match block {
        None => (1, cols),
        Some(b) => (b, b),
    };
    for br in 0..sr {
        for bc in 0..sc {
            let (r0, c0) = (br * tr, bc * tc);
            let (r1, c1) = ((r0 + tr).min(rows), (c0 + tc).min(cols));
            // max(|min|, |max|) with 0 in the range; NaN is skipped.
            let mut amax = 0.0f32;
            for r in r0..r1 {
                for &v in &x[r * cols + c0..r * cols + c1] {
                    amax = amax.max(v.abs());
                }
            }
            q.scales.push(fp8_scale(amax, dtype));
        }
    }
    for r in 0..rows {
        for c in 0..cols {
            let s = q.scale_of(r, c);
            q.codes[r * cols + c] = fp8_code(x[r * cols + c], s, dtype, rounding);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_e4m3_value_round_trips_and_halfway_points_go_to_even() {
        for b in 0..=255u8 {
            let v = e4m3_value(b);
            if v.is_nan() {
                assert_eq!(b & 0x7f, 0x7f);
                continue;
            }
            let back = e4m3(v);
            // ±0 both map to themselves.
            assert_eq!(back, b, "{b:#04x} = {v}");
        }
        // Between 1.0 (0x38) and 1.125 (0x39) the midpoint goes to 1.0
        // (even mantissa); between 1.125 and 1.25 (0x3a) to 1.25.
        assert_eq!(e4m3(1.0625), 0x38);
        assert_eq!(e4m3(1.1875), 0x3a);
        // Subnormals: 2⁻⁹ steps; half of the smallest goes to 0.
        assert_eq!(e4m3(f32::powi(2.0, -10)), 0);
        assert_eq!(e4m3(3.0 * f32::powi(2.0, -10)), 2);
        // Saturation and NaN.
        assert_eq!(e4m3(1e9), 0x7e);
        assert_eq!(e4m3(-1e9), 0xfe);
        assert_eq!(e4m3(f32::NAN) & 0x7f, 0x7f);
        assert_eq!(e4m3(447.0), 0x7e);
        assert_eq!(e4m3(432.0), 0x7e); // the tie between 416 and 448 goes to 448 (even)
    }
}
