//! The float-quant family's trait (FP8 E4M3 per channel or block, NVFP4,
//! MXFP4): one implementation per backend — the CPU reference, the fast
//! CPU path and the GPU in shears-kernels — each giving the reference's
//! codes and scales byte for byte (FP8 and FP4 codes are integers in
//! disguise).

use crate::reference::fp4::{quantize_mxfp4, quantize_nvfp4, Fp4};
use crate::reference::fp8::{quantize_fp8, Fp8};
use crate::reference::quant::Rounding;
use crate::{Result, TensorView};

/// Float quantization on one backend. The weight's dtype (f32, f16, bf16)
/// comes from the view; its values are taken as they are (callers zero
/// pruned weights first: zero is exact in every dtype).
pub trait FloatQuant {
    /// Short name of the backend, for reports.
    fn backend(&self) -> &'static str;

    /// FP8 E4M3 codes of a [rows, cols] weight, a scale per row
    /// (`block` = None) or per `block × block` tile.
    fn fp8(&self, w: &TensorView, block: Option<usize>, rounding: Rounding) -> Result<Fp8>;

    /// FP4 E2M1 codes (unpacked, one per byte) of a [rows, cols] weight:
    /// NVFP4 (groups of 16, E4M3 scales) under `global_scale`, or MXFP4
    /// (groups of 32, E8M0 scales) without one.
    fn fp4(&self, w: &TensorView, global_scale: Option<f32>) -> Result<Fp4>;

    /// [`FloatQuant::fp8`] into `out`, reusing its buffers where the
    /// backend can.
    fn fp8_into(
        &self,
        w: &TensorView,
        block: Option<usize>,
        rounding: Rounding,
        out: &mut Fp8,
    ) -> Result<()> {
        *out = self.fp8(w, block, rounding)?;
        Ok(())
    }

    /// [`FloatQuant::fp4`] into `out`, reusing its buffers where the
    /// backend can.
    fn fp4_into(&self, w: &TensorView, global_scale: Option<f32>, out: &mut Fp4) -> Result<()> {
        *out = self.fp4(w, global_scale)?;
        Ok(())
    }
}

impl FloatQuant for crate::reference::Reference {
    fn backend(&self) -> &'static str {
        "cpu-reference"
    }

    fn fp8(&self, w: &TensorView, block: Option<usize>, rounding: Rounding) -> Result<Fp8> {
        let (rows, cols) = w.matrix_dims();
        let x = w.to_f32()?;
        Ok(quantize_fp8(&x, rows, cols, block, w.dtype(), rounding))
    }

    fn fp4(&self, w: &TensorView, global_scale: Option<f32>) -> Result<Fp4> {
        let (rows, cols) = w.matrix_dims();
        let x = w.to_f32()?;
        Ok(match global_scale {
            Some(gs) => quantize_nvfp4(&x, rows, cols, gs, w.dtype()),
            None => quantize_mxfp4(&x, rows, cols, w.dtype()),
        })
    }
}
