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
) -> crate::reference::fp4::Fp4 {
    use crate::reference::fp4::{mx_group, nv_group, Fp4};
    let group = if global_scale.is_some() { 16 } else { 32 };
    let groups = cols.div_ceil(group);
    let mut q = Fp4 {
        rows,
        cols,
        group,
        codes: vec![0; rows * cols],
        scales: vec![0; rows * groups],
        global_scale,
    };
    if cols == 0 {
        return q;
    }
    q.codes
        .par_chunks_mut(cols)
        .zip(q.scales.par_chunks_mut(groups))
        .zip(x.par_chunks(cols))
        .for_each(|((codes, scales), row)| {
            for ((chunk, c), s) in row.chunks(group).zip(codes.chunks_mut(group)).zip(scales) {
                *s = match global_scale {
                    Some(gs) => nv_group(chunk, gs, dtype, c),
                    None => mx_group(chunk, dtype, c),
                };
            }
        });
    q
}

/// The dense values of an FP4 weight, rows in parallel.
pub fn dequantize_fp4(q: &crate::reference::fp4::Fp4) -> Vec<f32> {
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

/// What quantization lost: max |x − x̂|, Σ(x − x̂)², Σx² (f64, in
/// parallel blocks).
pub fn error_stats(x: &[f32], deq: &[f32]) -> crate::ops::quant::ErrorStats {
    use crate::ops::quant::ErrorStats;
    x.par_chunks(1 << 16)
        .zip(deq.par_chunks(1 << 16))
        .map(|(a, b)| {
            let mut s = ErrorStats::default();
            for (&a, &b) in a.iter().zip(b) {
                let e = (a - b) as f64;
                s.max_abs = s.max_abs.max(e.abs());
                s.sum_sq_err += e * e;
                s.sum_sq += (a as f64) * (a as f64);
            }
            s
        })
        .reduce(ErrorStats::default, ErrorStats::merge)
}

/// All elements of a float tensor as f32, decoded in parallel blocks.
pub fn decode_parallel(w: &crate::TensorView) -> crate::Result<Vec<f32>> {
    let n = w.numel();
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(1 << 16)
        .enumerate()
        .try_for_each(|(b, chunk)| w.decode_into(b << 16..(b << 16) + chunk.len(), chunk))?;
    Ok(out)
}
