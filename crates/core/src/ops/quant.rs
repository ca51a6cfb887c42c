//! The quant family's trait and the types every backend shares: one
//! implementation per backend (the CPU reference, the fast CPU path and the
//! GPU in shears-kernels), so callers ask a trait instead of matching on
//! the backend.

use crate::reference::matmul::PackedWeight;
use crate::reference::quant::{QuantSpec, Quantized, Rounding};
use crate::{DType, Result, TensorView};

/// Integer quantization on one backend. Every implementation gives the
/// reference's codes, scales and zero points byte for byte.
pub trait Quant {
    /// Short name of the backend, for reports.
    fn backend(&self) -> &'static str;

    /// Quantizes `w` into `out` (reusing its buffers), with the elements
    /// where `keep` is 0 taken as zeros (pruned weights stay exactly zero),
    /// and returns what quantization lost against those values.
    fn quantize(
        &self,
        spec: &QuantSpec,
        w: &TensorView,
        keep: Option<&[u8]>,
        rounding: Rounding,
        out: &mut Quantized,
    ) -> Result<ErrorStats>;

    /// Prunes `w` to magnitude N:M and quantizes it in one pass, writing
    /// the keep-mask (1 kept, 0 pruned) into `keep`; the same mask, codes
    /// and statistics as the mask family's `nm` followed by
    /// [`Quant::quantize`]. `None` where this backend has no such pass (the
    /// caller then makes the mask and quantizes separately).
    #[allow(clippy::too_many_arguments)]
    fn quantize_magnitude_nm(
        &self,
        _spec: &QuantSpec,
        _w: &TensorView,
        _n: usize,
        _m: usize,
        _rounding: Rounding,
        _keep: &mut Vec<u8>,
        _out: &mut Quantized,
    ) -> Result<Option<ErrorStats>> {
        Ok(None)
    }

    /// The dense values of a packed compressed-tensors weight, as bytes of
    /// `dtype` (f32, f16 or bf16).
    fn dequantize_packed(&self, w: &PackedWeight, dtype: DType) -> Result<Vec<u8>>;
}

/// What quantization lost on a layer: the largest |x − x̂|, Σ(x − x̂)² and
/// Σx², in f64.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    pub max_abs: f64,
    pub sum_sq_err: f64,
    pub sum_sq: f64,
}

impl ErrorStats {
    /// The statistics of two parts together.
    pub fn merge(self, b: ErrorStats) -> ErrorStats {
        ErrorStats {
            max_abs: self.max_abs.max(b.max_abs),
            sum_sq_err: self.sum_sq_err + b.sum_sq_err,
            sum_sq: self.sum_sq + b.sum_sq,
        }
    }

    /// Whether the sums could be measured (a sum that overflowed or met a
    /// NaN measures nothing, and must not read as a perfect score).
    pub fn measured(&self) -> bool {
        self.sum_sq.is_finite() && self.sum_sq_err.is_finite() && !self.max_abs.is_nan()
    }

    /// ‖x − x̂‖ / ‖x‖ (0 for an all-zero weight; NaN when not measured).
    pub fn relative(&self) -> f64 {
        if !self.measured() {
            f64::NAN
        } else if self.sum_sq > 0.0 {
            (self.sum_sq_err / self.sum_sq).sqrt()
        } else {
            0.0
        }
    }

    /// Signal-to-quantization-noise ratio in dB (infinite without noise;
    /// NaN when not measured).
    pub fn sqnr_db(&self) -> f64 {
        if !self.measured() {
            f64::NAN
        } else if self.sum_sq_err > 0.0 {
            10.0 * (self.sum_sq / self.sum_sq_err).log10()
        } else {
            f64::INFINITY
        }
    }
}
