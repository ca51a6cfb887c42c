//! CPU reference of the FP4 schemes: weights as FP4 E2M1 (±0, 0.5, 1,
//! 1.5, 2, 3, 4, 6) packed two per byte, as compressed-tensors writes them.
//!
//! - `mxfp4a16` (`mxfp4-pack-quantized`): one power-of-two scale per 32
//!   inputs, stored as its biased exponent (E8M0, uint8). The group's
//!   absolute maximum is rounded to a power of two p (up when its mantissa
//!   is at least 0.75, else down), and the scale is p / 4 (2² being the
//!   largest E2M1 power): exponent byte = 127 + log2(p) − 2, clamped to
//!   0..=255.
//! - `nvfp4a16` (`nvfp4-pack-quantized`): an f32 global scale per weight,
//!   g = 448·6 · (1/amax) (in the weight's dtype), shared by the layers vLLM fuses (q/k/v, gate/up: amax
//!   over all of them), and an FP8 E4M3 scale per 16 inputs,
//!   s = e4m3(g · (amax_group / 6)) with the quotient in the weight's
//!   dtype (a zero becomes 0.125); a weight divides
//!   by s / g in f32.
//!
//! Rounding to E2M1 is to nearest, ties to even, saturating at ±6; a
//! negative value that rounds to zero keeps its sign (code 8), as the
//! library's `sign(x)·|x|` does. Codes are 3 magnitude bits (the index in
//! the value list) and a sign bit; element 2k goes in the low nibble of
//! byte k, 2k+1 in the high one.

use crate::reference::fp8::{e4m3, e4m3_value};
use crate::reference::quant::round_to;
use crate::DType;

/// The E2M1 magnitudes, by code.
pub const E2M1: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// The E2M1 code of `x` (nearest, ties to even, saturating at ±6).
#[inline]
pub fn e2m1(x: f32) -> u8 {
    let a = x.abs();
    // Thresholds between neighbours; a tie goes to the even code.
    let m = if a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    m | (((x < 0.0) as u8) << 3)
}

/// The value of an E2M1 code.
pub fn e2m1_value(code: u8) -> f32 {
    let v = E2M1[(code & 7) as usize];
    if code & 8 != 0 {
        -v
    } else {
        v
    }
}

/// Packs codes two per byte (element 2k in the low nibble).
pub fn pack_e2m1(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(2)
        .map(|p| p[0] | p.get(1).map_or(0, |&h| h << 4))
        .collect()
}

/// An FP4 weight: codes [rows, cols] (one per byte, unpacked), and per
/// group of `group` inputs a scale: the exponent byte (MXFP4) or the E4M3
/// byte (NVFP4), with the global scale of NVFP4.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fp4 {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    pub codes: Vec<u8>,
    pub scales: Vec<u8>,
    pub global_scale: Option<f32>,
}

impl Fp4 {
    /// The divisor of group `g` of row `r` (what codes are multiplied by).
    pub fn scale(&self, r: usize, g: usize) -> f32 {
        let b = self.scales[r * self.cols.div_ceil(self.group) + g];
        match self.global_scale {
            Some(gs) => e4m3_value(b) / gs,
            None => mx_scale_value(b),
        }
    }

    /// The dense values.
    pub fn dequantized(&self) -> Vec<f32> {
        (0..self.rows * self.cols)
            .map(|i| {
                let (r, c) = (i / self.cols, i % self.cols);
                e2m1_value(self.codes[i]) * self.scale(r, c / self.group)
            })
            .collect()
    }

    /// The codes packed two per byte, row by row.
    pub fn packed(&self) -> Vec<u8> {
        pack_e2m1(&self.codes)
    }
}

/// The value of an MXFP4 exponent byte, 2^(b − 127).
pub fn mx_scale_value(b: u8) -> f32 {
    match b {
        0 => f32::from_bits(1 << 22), // 2⁻¹²⁷, a subnormal
        _ => f32::from_bits((b as u32) << 23),
    }
}

/// The MXFP4 exponent byte of a group whose absolute maximum is `amax`:
/// amax rounded to a power of two p (up when its mantissa is at least
/// 0.75, else down; on the exact value, which for an f32 weight is not
/// the bf16-rounded one), then 127 + log2(p) − 2, clamped to 0..=255.
pub fn mx_scale(amax: f32) -> u8 {
    // Adding 2²¹ to the f32 bits carries into the exponent exactly when
    // the 23-bit mantissa is at least 0.75; then the mantissa is dropped.
    let exp = ((amax.to_bits() + (1 << 21)) >> 23) as i32 & 0xff; // biased
    if exp == 0 {
        return 0; // a zero (or subnormal) maximum: the smallest scale
    }
    (exp - 2).clamp(0, 255) as u8
}

/// One MXFP4 group: writes its codes and returns its exponent byte.
pub fn mx_group(chunk: &[f32], dtype: DType, codes: &mut [u8]) -> u8 {
    let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let b = mx_scale(amax);
    let s = mx_scale_value(b);
    for (c, &v) in codes.iter_mut().zip(chunk) {
        *c = e2m1(round_to(dtype, v / s).clamp(-6.0, 6.0));
    }
    b
}

/// Quantizes `x` ([rows, cols], a weight stored in `dtype`) to MXFP4.
pub fn quantize_mxfp4(x: &[f32], rows: usize, cols: usize, dtype: DType) -> Fp4 {
    let group = 32;
    let mut q = Fp4 {
        rows,
        cols,
        group,
        codes: vec![0; rows * cols],
        scales: Vec::with_capacity(rows * cols.div_ceil(group)),
        global_scale: None,
    };
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let codes = &mut q.codes[r * cols..(r + 1) * cols];
        for (chunk, c) in row.chunks(group).zip(codes.chunks_mut(group)) {
            q.scales.push(mx_group(chunk, dtype, c));
        }
    }
    q
}

/// The NVFP4 global scale of weights stored in `dtype` whose absolute
/// maximum (together, for fused layers) is `amax`: 448·6 / amax computed
/// as torch computes `2688.0 / tensor` in the weights' dtype, the
/// reciprocal rounded first and the product rounded again (for bf16:
/// 1/1.7265625 → 0.578125, × 2688 → 1552, where the correctly rounded
/// quotient is 1560); stored as f32.
pub fn nv_global_scale(amax: f32, dtype: DType) -> f32 {
    round_to(dtype, round_to(dtype, 1.0 / amax) * (448.0 * 6.0))
}

/// One NVFP4 group under the global scale `gs`: writes its codes and
/// returns its E4M3 scale byte.
pub fn nv_group(chunk: &[f32], gs: f32, dtype: DType, codes: &mut [u8]) -> u8 {
    let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut b = e4m3((gs * round_to(dtype, amax / 6.0)).clamp(-448.0, 448.0));
    if b & 0x7f == 0 {
        b = e4m3(0.125);
    }
    let s = e4m3_value(b) / gs;
    for (c, &v) in codes.iter_mut().zip(chunk) {
        *c = e2m1((v / s).clamp(-6.0, 6.0));
    }
    b
}

/// Quantizes `x` (a weight stored in `dtype`) to NVFP4 under the global
/// scale `gs`.
pub fn quantize_nvfp4(x: &[f32], rows: usize, cols: usize, gs: f32, dtype: DType) -> Fp4 {
    let group = 16;
    let mut q = Fp4 {
        rows,
        cols,
        group,
        codes: vec![0; rows * cols],
        scales: Vec::with_capacity(rows * cols.div_ceil(group)),
        global_scale: Some(gs),
    };
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let codes = &mut q.codes[r * cols..(r + 1) * cols];
        for (chunk, c) in row.chunks(group).zip(codes.chunks_mut(group)) {
            q.scales.push(nv_group(chunk, gs, dtype, c));
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2m1_rounds_to_nearest_even_and_keeps_the_sign_of_small_negatives() {
        for (code, &v) in E2M1.iter().enumerate() {
            assert_eq!(e2m1(v), code as u8);
            if v > 0.0 {
                assert_eq!(e2m1(-v), code as u8 | 8);
            }
        }
        // Ties: 0.25 → 0, 0.75 → 1.0, 1.25 → 1.0, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4.
        let ties = [
            (0.25, 0),
            (0.75, 2),
            (1.25, 2),
            (1.75, 4),
            (2.5, 4),
            (3.5, 6),
            (5.0, 6),
        ];
        for (x, code) in ties {
            assert_eq!(e2m1(x), code, "{x}");
        }
        assert_eq!(e2m1(100.0), 7);
        assert_eq!(e2m1(-0.1), 8);
        assert_eq!(pack_e2m1(&[1, 2, 3]), vec![0x21, 0x03]);
    }

    #[test]
    fn mx_scales_round_the_group_maximum_to_a_power_of_two() {
        // 6.0 = 1.5·2²: mantissa 0.5 < 0.75, so 4, exponent 129 − 2.
        assert_eq!(mx_scale(6.0), 127);
        // 7.0 = 1.75·2²: rounds up to 8.
        assert_eq!(mx_scale(7.0), 128);
        assert_eq!(mx_scale(0.0), 0);
    }
}
