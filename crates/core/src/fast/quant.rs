//! Fast CPU path of the `quant` family: rows in parallel, each decoded
//! straight from the tensor's bytes, with the reference's per-group and
//! per-element functions, so results are identical to
//! `reference::quant::quantize_matrix`.

use rayon::prelude::*;

use crate::reference::quant::{qparams, quantize, QParams, QuantSpec, Quantized, Rounding};
use crate::{Result, TensorView};

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
                    for (g, pg) in p.iter_mut().enumerate() {
                        let span = g * group..((g + 1) * group).min(cols);
                        let qp = qparams(spec, &x[span.clone()], dtype);
                        for (ci, &xi) in c[span.clone()].iter_mut().zip(&x[span]) {
                            *ci = quantize(spec, xi, qp, rounding, dtype) as i8;
                        }
                        *pg = qp;
                    }
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
