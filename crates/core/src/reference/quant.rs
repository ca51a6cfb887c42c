//! CPU reference of the `quant` family: int8 / int4 quantization per channel
//! (output row) or per group of input columns, symmetric or asymmetric, with
//! compressed-tensors' arithmetic, and its int32 packing.
//!
//! # Numerics (DESIGN.md)
//!
//! * Range: min and max of the row or group in f32, widened to include 0.
//! * Scale (f32): symmetric amax / ((qmax − qmin) / 2) (int8 amax/127.5,
//!   int4 amax/7.5); asymmetric (max − min) / (qmax − qmin); below f32's
//!   epsilon it becomes the epsilon. Stored rounded to the weight's dtype.
//! * Zero point (asymmetric): round_half_even(clamp(qmin − min / scale))
//!   with the f32 scale; a group whose range is zero gets zero point 0
//!   (what compressed-tensors 0.20 writes: its 0/0 becomes 0).
//! * Codes, [`Rounding::Nearest`]: q = rne(clamp(fl32(fl32(x / s) + zp)))
//!   with s the stored scale: the correctly rounded f32 quotient.
//!   [`Rounding::CompressedTensors`]: the quotient and the sum are rounded
//!   to the weight's dtype first, as that library computes in bf16 / f16.
//! * Dequantization: (q − zp) · s in f32.
//! * Packing: unsigned u = q + 2^(b−1), least significant bits first, 32/b
//!   codes per i32 along the input dimension; zero points packed the same
//!   way along the output dimension.

use half::{bf16, f16};

use crate::DType;

/// How quotients are rounded to codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    /// Round-half-even of the correctly rounded f32 quotient.
    Nearest,
    /// Bit for bit what compressed-tensors writes (dtype-rounded quotient).
    CompressedTensors,
}

/// A weight quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    /// 4 or 8.
    pub bits: u32,
    /// Inputs per group; `None` for one group per output row (channel).
    pub group: Option<usize>,
    pub symmetric: bool,
}

impl QuantSpec {
    /// Smallest code.
    pub fn qmin(&self) -> i32 {
        -(1 << (self.bits - 1))
    }

    /// Largest code.
    pub fn qmax(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }

    /// Inputs per group for rows of `cols`.
    pub fn group_len(&self, cols: usize) -> usize {
        self.group.unwrap_or(cols).min(cols).max(1)
    }
}

/// Quantization parameters of one group.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QParams {
    /// The scale as stored (rounded to the weight's dtype), as f32.
    pub scale: f32,
    pub zero_point: i32,
}

/// Rounds an f32 to `dtype` (F32 unchanged) and back.
#[inline(always)]
pub fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Round half to even.
#[inline(always)]
pub fn rne(x: f32) -> f32 {
    x.round_ties_even()
}

/// The parameters of a group with these f32 values, for a weight of `dtype`.
pub fn qparams(spec: &QuantSpec, values: &[f32], dtype: DType) -> QParams {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    qparams_of_range(spec, lo, hi, dtype)
}

/// From this magnitude (2^126) on, an asymmetric range is halved before its
/// width is taken, so `max − min` cannot overflow; the GPU uses the same
/// bound (`shaders/quant.wgsl`), so both give the same scale.
pub const HALVED_RANGE_FROM: f32 = 8.507_059e37;

/// The parameters of a group whose values span `lo..=hi` (NaN ignored, 0
/// included), for a weight of `dtype`.
#[inline]
pub fn qparams_of_range(spec: &QuantSpec, lo: f32, hi: f32, dtype: DType) -> QParams {
    let (qmin, qmax) = (spec.qmin() as f32, spec.qmax() as f32);
    let (scale, zp) = if spec.symmetric {
        let amax = lo.abs().max(hi.abs());
        (amax / ((qmax - qmin) / 2.0), 0)
    } else {
        // hi − lo overflows f32 when the range spans more than f32::MAX (a
        // row holding ±3e38): both halves are exact there, so halving
        // first gives the same scale without the overflow.
        let s = if lo.abs().max(hi.abs()) >= HALVED_RANGE_FROM {
            (hi * 0.5 - lo * 0.5) / ((qmax - qmin) * 0.5)
        } else {
            (hi - lo) / (qmax - qmin)
        };
        let zp = if s == 0.0 {
            0
        } else {
            rne((qmin - lo / s).clamp(qmin, qmax)) as i32
        };
        (s, zp)
    };
    let scale = scale.max(f32::EPSILON);
    QParams {
        scale: round_to(dtype, scale),
        zero_point: zp,
    }
}

/// The code of `x` under `p`.
#[inline(always)]
pub fn quantize(spec: &QuantSpec, x: f32, p: QParams, rounding: Rounding, dtype: DType) -> i32 {
    let (qmin, qmax) = (spec.qmin() as f32, spec.qmax() as f32);
    let y = match rounding {
        Rounding::Nearest => x / p.scale + p.zero_point as f32,
        Rounding::CompressedTensors => {
            round_to(dtype, round_to(dtype, x / p.scale) + p.zero_point as f32)
        }
    };
    rne(y.clamp(qmin, qmax)) as i32
}

/// The value a code stands for.
#[inline(always)]
pub fn dequantize(q: i32, p: QParams) -> f32 {
    (q - p.zero_point) as f32 * p.scale
}

/// A quantized matrix: codes row-major, parameters [rows, groups].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quantized {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    pub codes: Vec<i8>,
    pub params: Vec<QParams>,
}

impl Quantized {
    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// The parameters that apply to element `i` (flat index).
    pub fn params_at(&self, i: usize) -> QParams {
        self.params[(i / self.cols) * self.groups() + (i % self.cols) / self.group]
    }

    /// Every element's value, (q − zp)·scale.
    pub fn dequantized(&self) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| dequantize(c as i32, self.params_at(i)))
            .collect()
    }
}

/// Quantizes a [rows, cols] matrix of f32 values of a `dtype` weight.
pub fn quantize_matrix(
    spec: &QuantSpec,
    values: &[f32],
    rows: usize,
    cols: usize,
    dtype: DType,
    rounding: Rounding,
) -> Quantized {
    let group = spec.group_len(cols);
    let groups = cols.div_ceil(group);
    let mut codes = vec![0i8; rows * cols];
    let mut params = Vec::with_capacity(rows * groups);
    for r in 0..rows {
        for g in 0..groups {
            let span = r * cols + g * group..r * cols + ((g + 1) * group).min(cols);
            let p = qparams(spec, &values[span.clone()], dtype);
            for i in span {
                codes[i] = quantize(spec, values[i], p, rounding, dtype) as i8;
            }
            params.push(p);
        }
    }
    Quantized {
        rows,
        cols,
        group,
        codes,
        params,
    }
}

/// Packs codes of `bits` bits along rows of `cols`: [rows, ceil(cols·b/32)].
pub fn pack_rows(codes: &[i8], rows: usize, cols: usize, bits: u32) -> Vec<i32> {
    let per = (32 / bits) as usize;
    let words = cols.div_ceil(per);
    let offset = 1i32 << (bits - 1);
    let mask = (1u32 << bits) - 1;
    let mut out = vec![0i32; rows * words];
    for r in 0..rows {
        for c in 0..cols {
            let u = ((codes[r * cols + c] as i32 + offset) as u32) & mask;
            out[r * words + c / per] |= (u << (bits as usize * (c % per))) as i32;
        }
    }
    out
}

/// Packs a [rows, cols] matrix of small integers along dim 0:
/// [ceil(rows·b/32), cols].
pub fn pack_cols(values: &[i32], rows: usize, cols: usize, bits: u32) -> Vec<i32> {
    let per = (32 / bits) as usize;
    let offset = 1i32 << (bits - 1);
    let mask = (1u32 << bits) - 1;
    let mut out = vec![0i32; rows.div_ceil(per) * cols];
    for r in 0..rows {
        for c in 0..cols {
            let u = ((values[r * cols + c] + offset) as u32) & mask;
            out[(r / per) * cols + c] |= (u << (bits as usize * (r % per))) as i32;
        }
    }
    out
}

/// Undoes [`pack_cols`].
pub fn unpack_cols(words: &[i32], rows: usize, cols: usize, bits: u32) -> Vec<i32> {
    let per = (32 / bits) as usize;
    let offset = 1i32 << (bits - 1);
    let mask = (1u32 << bits) - 1;
    let mut out = vec![0i32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let u = ((words[(r / per) * cols + c] as u32) >> (bits as usize * (r % per))) & mask;
            out[r * cols + c] = u as i32 - offset;
        }
    }
    out
}

/// Undoes [`pack_rows`].
pub fn unpack_rows(words: &[i32], rows: usize, cols: usize, bits: u32) -> Vec<i8> {
    let per = (32 / bits) as usize;
    let wpr = cols.div_ceil(per);
    let offset = 1i32 << (bits - 1);
    let mask = (1u32 << bits) - 1;
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let u = ((words[r * wpr + c / per] as u32) >> (bits as usize * (c % per))) & mask;
            out[r * cols + c] = (u as i32 - offset) as i8;
        }
    }
    out
}

/// The specification of the quant family behind its trait: decode, zero
/// the pruned elements, [`quantize_matrix`]; error sums in f64.
impl crate::ops::quant::Quant for super::Reference {
    fn backend(&self) -> &'static str {
        "reference"
    }

    fn quantize(
        &self,
        spec: &QuantSpec,
        w: &crate::TensorView,
        keep: Option<&[u8]>,
        rounding: Rounding,
        out: &mut Quantized,
    ) -> crate::Result<crate::ops::quant::ErrorStats> {
        let (rows, cols) = w.matrix_dims();
        let mut x = w.to_f32()?;
        if let Some(k) = keep {
            if k.len() != x.len() {
                return Err(crate::Error::Invalid(format!(
                    "the mask holds {} entries, the weight {}",
                    k.len(),
                    x.len()
                )));
            }
            x.iter_mut()
                .zip(k)
                .filter(|(_, &k)| k == 0)
                .for_each(|(v, _)| *v = 0.0);
        }
        *out = quantize_matrix(spec, &x, rows, cols, w.dtype(), rounding);
        let mut stats = crate::ops::quant::ErrorStats::default();
        for (i, &v) in x.iter().enumerate() {
            let e = (v - dequantize(out.codes[i] as i32, out.params_at(i))) as f64;
            stats.max_abs = stats.max_abs.max(e.abs());
            stats.sum_sq_err += e * e;
            stats.sum_sq += v as f64 * v as f64;
        }
        Ok(stats)
    }

    fn dequantize_packed(
        &self,
        w: &super::matmul::PackedWeight,
        dtype: DType,
    ) -> crate::Result<Vec<u8>> {
        w.check()?;
        let codes = unpack_rows(w.words, w.rows, w.cols, w.bits);
        let groups = w.groups();
        let mut values = vec![0.0f32; codes.len()];
        for (i, v) in values.iter_mut().enumerate() {
            let (r, c) = (i / w.cols, i % w.cols);
            let g = r * groups + c / w.group;
            let p = QParams {
                scale: w.scales[g],
                zero_point: w.zero_points.map_or(0, |z| z[g]),
            };
            *v = dequantize(codes[i] as i32, p);
        }
        let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
        crate::encode_f32(dtype, &values, &mut bytes);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let codes: Vec<i8> = (0..3 * 13).map(|i| ((i * 5) % 16) as i8 - 8).collect();
        let w = pack_rows(&codes, 3, 13, 4);
        assert_eq!(w.len(), 3 * 2);
        assert_eq!(unpack_rows(&w, 3, 13, 4), codes);
        let c8: Vec<i8> = (0..2 * 5).map(|i| (i * 37 % 256) as u8 as i8).collect();
        assert_eq!(unpack_rows(&pack_rows(&c8, 2, 5, 8), 2, 5, 8), c8);
        let zps: Vec<i32> = (0..13 * 3).map(|i| (i * 3 % 16) - 8).collect();
        assert_eq!(unpack_cols(&pack_cols(&zps, 13, 3, 4), 13, 3, 4), zps);
    }

    #[test]
    fn zero_rows_get_epsilon_and_zero_point_zero() {
        let spec = QuantSpec {
            bits: 4,
            group: None,
            symmetric: false,
        };
        let p = qparams(&spec, &[0.0; 8], DType::BF16);
        assert_eq!(
            (p.scale, p.zero_point),
            (round_to(DType::BF16, f32::EPSILON), 0)
        );
    }
}
