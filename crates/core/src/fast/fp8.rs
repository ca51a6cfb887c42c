//! Fast CPU path of the FP8 schemes: scales and codes row-parallel with the
//! reference's per-element functions, so the bytes are the reference's.

use rayon::prelude::*;

use crate::reference::fp8::{fp8_code, fp8_scale, Fp8};
use crate::reference::quant::Rounding;
use crate::DType;

/// [`crate::reference::fp8::quantize_fp8`], rows in parallel.
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
    if rows == 0 || cols == 0 {
        return q;
    }
    let amax = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    q.scales = match block {
        None => x
            .par_chunks(cols)
            .map(|row| fp8_scale(amax(row), dtype))
            .collect(),
        Some(b) => {
            let bc = cols.div_ceil(b);
            x.par_chunks(b * cols)
                .flat_map_iter(|band| {
                    (0..bc).map(move |j| {
                        let m = band
                            .chunks(cols)
                            .map(|row| amax(&row[j * b..((j + 1) * b).min(cols)]))
                            .fold(0.0f32, f32::max);
                        fp8_scale(m, dtype)
                    })
                })
                .collect()
        }
    };
    let scales = &q.scales;
    q.codes
        .par_chunks_mut(cols)
        .zip(x.par_chunks(cols))
        .enumerate()
        .for_each(|(r, (c, row))| {
            for (k, (code, &v)) in c.iter_mut().zip(row).enumerate() {
                let s = match block {
                    None => scales[r],
                    Some(b) => scales[(r / b) * cols.div_ceil(b) + k / b],
                };
                *code = fp8_code(v, s, dtype, rounding);
            }
        });
    q
}
