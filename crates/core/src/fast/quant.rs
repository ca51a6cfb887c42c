//! Fast CPU path of the `quant` family: rows in parallel, each decoded
//! straight from the tensor's bytes, with the reference's per-group and
//! per-element functions, so results are identical to
//! `reference::quant::quantize_matrix`.

use rayon::prelude::*;

use crate::reference::quant::{qparams, quantize, QParams, QuantSpec, Quantized, Rounding};
use crate::{Result, TensorView};

/// One row: parameters and codes of each group.
#[inline(always)]
fn quantize_row(
    spec: &QuantSpec,
    x: &[f32],
    c: &mut [i8],
    p: &mut [QParams],
    group: usize,
    rounding: Rounding,
    dtype: crate::DType,
) {
    let cols = x.len();
    for (g, pg) in p.iter_mut().enumerate() {
        let span = g * group..((g + 1) * group).min(cols);
        let qp = qparams(spec, &x[span.clone()], dtype);
        for (ci, &xi) in c[span.clone()].iter_mut().zip(&x[span]) {
            *ci = quantize(spec, xi, qp, rounding, dtype) as i8;
        }
        *pg = qp;
    }
}

/// [`quantize_row`] compiled for AVX2 (which brings SSE4.1's rounding
/// instruction: the baseline x86-64 target calls a library function for
/// every round-half-even).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_row_avx2(
    spec: &QuantSpec,
    x: &[f32],
    c: &mut [i8],
    p: &mut [QParams],
    group: usize,
    rounding: Rounding,
    dtype: crate::DType,
) {
    quantize_row(spec, x, c, p, group, rounding, dtype)
}

/// [`quantize_row`] with the best instructions this CPU has.
fn quantize_row_any(
    spec: &QuantSpec,
    x: &[f32],
    c: &mut [i8],
    p: &mut [QParams],
    group: usize,
    rounding: Rounding,
    dtype: crate::DType,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { quantize_row_avx2(spec, x, c, p, group, rounding, dtype) };
        return;
    }
    quantize_row(spec, x, c, p, group, rounding, dtype)
}

/// Quantizes a [rows, cols] float tensor.
pub fn quantize_view(spec: &QuantSpec, w: &TensorView, rounding: Rounding) -> Result<Quantized> {
    let (rows, cols) = w.matrix_dims();
    let dtype = w.dtype();
    let size = w.float_size()?;
    let group = spec.group_len(cols);
    let groups = cols.div_ceil(group);
    let mut codes = vec![0i8; rows * cols];
    let mut params = vec![
        QParams {
            scale: 0.0,
            zero_point: 0
        };
        rows * groups
    ];
    if cols > 0 {
        codes
            .par_chunks_mut(cols)
            .zip(params.par_chunks_mut(groups))
            .enumerate()
            .try_for_each_init(
                || vec![0.0f32; cols],
                |x, (r, (c, p))| {
                    w.decode_into(r * cols..(r + 1) * cols, x)?;
                    quantize_row_any(spec, x, c, p, group, rounding, dtype);
                    Ok::<_, crate::Error>(())
                },
            )?;
    }
    w.release(0..rows * cols * size);
    Ok(Quantized {
        rows,
        cols,
        group,
        codes,
        params,
    })
}
