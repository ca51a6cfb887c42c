//! Fast CPU path of the `quant` family: rows in parallel, each decoded
//! straight from the tensor's bytes, with the reference's per-group and
//! per-element functions, so results are identical to
//! `reference::quant::quantize_matrix`.

use rayon::iter::Either;
use rayon::prelude::*;

use crate::reference::matmul::PackedWeight;
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
mod keep;

pub use keep::Keep;
use keep::RowKeep;

/// Quantizes a [rows, cols] float tensor.
pub fn quantize_view(spec: &QuantSpec, w: &TensorView, rounding: Rounding) -> Result<Quantized> {
    let mut q = Quantized::default();
    quantize_view_into(spec, w, rounding, false, &mut q)?;
    Ok(q)
}

/// Quantizes into `out`, reusing its buffers (a loop over tensors then
/// allocates, and page-faults in, its code buffer once instead of once per
/// tensor); returns the error statistics when `want_stats` (else zeros).
pub fn quantize_view_into(
    spec: &QuantSpec,
    w: &TensorView,
    rounding: Rounding,
    want_stats: bool,
    out: &mut Quantized,
) -> Result<ErrorStats> {
    quantize_masked_into(spec, w, None, rounding, want_stats, out)
}

/// [`quantize_view_into`] of the weight with the elements whose `keep`
/// byte is 0 set to zero first (pruning's mask, one byte per element), as
/// if the pruned tensor had been written out and read back, without that
/// copy.
pub fn quantize_masked_into(
    spec: &QuantSpec,
    w: &TensorView,
    keep: Option<&[u8]>,
    rounding: Rounding,
    want_stats: bool,
    out: &mut Quantized,
) -> Result<ErrorStats> {
    let keep = keep.map_or(Keep::All, Keep::Given);
    quantize_keep_into(spec, w, keep, rounding, want_stats, out)
}

/// [`quantize_view_into`] after the pruning `keep` says, applied to each
/// row as it is decoded (one pass over the weight, also when the pruning
/// makes its mask here).
pub fn quantize_keep_into(
    spec: &QuantSpec,
    w: &TensorView,
    keep: Keep,
    rounding: Rounding,
    want_stats: bool,
    out: &mut Quantized,
) -> Result<ErrorStats> {
    let (rows, cols) = w.matrix_dims();
    let mask_len = match &keep {
        Keep::All => None,
        Keep::Given(k) => Some(k.len()),
        Keep::MagnitudeNm { n, m, out } => {
            crate::reference::mask::check_nm(*n, *m, cols)?;
            Some(out.len())
        }
    };
    if let Some(len) = mask_len.filter(|&l| l != rows * cols) {
        return Err(crate::Error::Invalid(format!(
            "the mask holds {len} entries, the weight {}",
            rows * cols
        )));
    }
    let dtype = w.dtype();
    let size = w.float_size()?;
    let group = spec.group_len(cols);
    let groups = cols.div_ceil(group);
    // Every code and parameter is written below; old contents may stay.
    out.codes.resize(rows * cols, 0);
    out.params.resize(
        rows * groups,
        QParams {
            scale: 0.0,
            zero_point: 0,
        },
    );
    (out.rows, out.cols, out.group) = (rows, cols, group);
    let (codes, params) = (&mut out.codes, &mut out.params);
    #[cfg(target_arch = "x86_64")]
    let simd = avx2::available()
        && matches!(
            dtype,
            crate::DType::BF16 | crate::DType::F16 | crate::DType::F32
        );
    // Each row's share of the pruning: a slice of the given mask, or of the
    // mask being made.
    let (given, nm) = match keep {
        Keep::All => (None, None),
        Keep::Given(k) => (Some(k), None),
        Keep::MagnitudeNm { n, m, out } => (None, Some((n, m, out))),
    };
    let made = match nm {
        Some((n, m, o)) => {
            Either::Left(o.par_chunks_mut(cols.max(1)).map(move |o| Some((n, m, o))))
        }
        None => Either::Right((0..rows).into_par_iter().map(|_| None)),
    };
    let mut stats = ErrorStats::default();
    if cols > 0 {
        stats = codes
            .par_chunks_mut(cols)
            .zip(params.par_chunks_mut(groups))
            .zip(made)
            .enumerate()
            .map_init(
                || vec![0.0f32; cols],
                |x, (r, ((c, p), made))| -> Result<ErrorStats> {
                    let row_keep = match (given, made) {
                        (Some(k), _) => RowKeep::Given(&k[r * cols..(r + 1) * cols]),
                        (None, Some((n, m, out))) => RowKeep::Nm { n, m, out },
                        (None, None) => RowKeep::All,
                    };
                    let mut st = ErrorStats::default();
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        let bytes = &w.bytes()[r * cols * size..(r + 1) * cols * size];
                        // SAFETY: the CPU has AVX2 and F16C (checked once
                        // above); `bytes` holds `cols` values of `dtype`.
                        unsafe {
                            avx2::quantize_row(
                                spec,
                                bytes,
                                dtype,
                                x,
                                c,
                                p,
                                group,
                                rounding,
                                want_stats.then_some(&mut st),
                                row_keep,
                            )
                        };
                        return Ok(st);
                    }
                    w.decode_into(r * cols..(r + 1) * cols, x)?;
                    row_keep.apply(x);
                    quantize_row(spec, x, c, p, group, rounding, dtype);
                    if !want_stats {
                        return Ok(st);
                    }
                    for (g, &qp) in p.iter().enumerate() {
                        let span = g * group..((g + 1) * group).min(cols);
                        let (m, e2, x2) = group_errors_any(&x[span.clone()], &c[span], qp);
                        st.max_abs = st.max_abs.max(m as f64);
                        st.sum_sq_err += e2 as f64;
                        st.sum_sq += x2 as f64;
                    }
                    Ok(st)
                },
            )
            .try_reduce(ErrorStats::default, |a, b| Ok(a.merge(b)))?;
    }
    w.release(0..rows * cols * size);
    Ok(stats)
}

/// Codes of `bits` bits packed along rows as compressed-tensors stores
/// them, as little-endian bytes: equal to the bytes of
/// [`crate::reference::quant::pack_rows`], rows in parallel. Within a
/// little-endian word of 32/b codes, code c of a row lands in byte c·b/8.
pub fn pack_rows_le(codes: &[i8], rows: usize, cols: usize, bits: u32) -> Vec<u8> {
    let per = (32 / bits) as usize;
    let row_bytes = cols.div_ceil(per) * 4;
    let mut out = vec![0u8; rows * row_bytes];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(row_bytes)
        .zip(codes.par_chunks(cols))
        .for_each(|(o, c)| match bits {
            8 => {
                for (b, &q) in o.iter_mut().zip(c) {
                    *b = (q as u8) ^ 0x80;
                }
            }
            _ => {
                // A code q in -8..=7 is stored as q + 8; whole pairs first,
                // branch-free so the compiler vectorizes the loop.
                // Adding 8 modulo 16 flips bit 3, so a pair read as one
                // little-endian u16 gets both offsets in one xor (no carry
                // between them); its two nibbles then fold into one byte.
                let nibble = |q: i8| (q as u8 & 0xf) ^ 8;
                let pairs = c.chunks_exact(2);
                let odd = pairs.remainder().first().copied();
                for (b, pair) in o.iter_mut().zip(pairs) {
                    let v = u16::from_le_bytes([pair[0] as u8, pair[1] as u8]);
                    let v = (v & 0x0f0f) ^ 0x0808;
                    *b = (v | v >> 4) as u8;
                }
                if let Some(q) = odd {
                    o[cols / 2] = nibble(q);
                }
            }
        });
    out
}

pub use crate::ops::quant::ErrorStats;

/// [`ErrorStats`] of `q` against the weight it came from, rows in
/// parallel, each group's parameters looked up once.
pub fn error_stats(w: &TensorView, q: &Quantized) -> Result<ErrorStats> {
    let cols = q.cols;
    if cols == 0 || q.rows == 0 {
        return Ok(ErrorStats::default());
    }
    let groups = q.groups();
    let per_row = (0..q.rows).into_par_iter().map_init(
        || vec![0.0f32; cols],
        |x, r| -> Result<ErrorStats> {
            w.decode_into(r * cols..(r + 1) * cols, x)?;
            let mut s = ErrorStats::default();
            for g in 0..groups {
                let p = q.params[r * groups + g];
                let span = g * q.group..((g + 1) * q.group).min(cols);
                let codes = &q.codes[r * cols + span.start..r * cols + span.end];
                let (max, e2, x2) = group_errors_any(&x[span], codes, p);
                s.max_abs = s.max_abs.max(max as f64);
                s.sum_sq_err += e2 as f64;
                s.sum_sq += x2 as f64;
            }
            Ok(s)
        },
    );
    per_row.try_reduce(ErrorStats::default, |a, b| Ok(a.merge(b)))
}

/// Largest |x − x̂|, Σ(x − x̂)² and Σx² of one group, in eight f32 lanes
/// (f32 within a group of at most a row, f64 across groups). NaN inputs
/// are skipped by the max, as `f32::max` would.
#[inline(always)]
fn group_errors(x: &[f32], codes: &[i8], p: QParams) -> (f32, f32, f32) {
    let (mut mx, mut e2, mut x2) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let body = x.len() / 8 * 8;
    for (xs, cs) in x[..body].chunks_exact(8).zip(codes[..body].chunks_exact(8)) {
        for l in 0..8 {
            let e = xs[l] - (cs[l] as i32 - p.zero_point) as f32 * p.scale;
            let a = e.abs();
            mx[l] = if a > mx[l] { a } else { mx[l] };
            e2[l] += e * e;
            x2[l] += xs[l] * xs[l];
        }
    }
    for (k, (&v, &c)) in x[body..].iter().zip(&codes[body..]).enumerate() {
        let e = v - (c as i32 - p.zero_point) as f32 * p.scale;
        let a = e.abs();
        let l = k % 8;
        mx[l] = if a > mx[l] { a } else { mx[l] };
        e2[l] += e * e;
        x2[l] += v * v;
    }
    let max = mx.iter().fold(0.0f32, |m, &v| m.max(v));
    (max, e2.iter().sum(), x2.iter().sum())
}

/// [`group_errors`] compiled for AVX2 where the CPU has it.
fn group_errors_any(x: &[f32], codes: &[i8], p: QParams) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn wide(x: &[f32], codes: &[i8], p: QParams) -> (f32, f32, f32) {
            group_errors(x, codes, p)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { wide(x, codes, p) };
    }
    group_errors(x, codes, p)
}

/// The dense values, as bytes of `dtype` (f32, f16 or bf16), of a packed
/// compressed-tensors weight: (q − zp)·scale in f32, rounded to the dtype
/// half to even; rows in parallel, each group's parameters looked up once.
/// Equal to encoding the reference's dequantized values.
pub fn dequantize_packed(w: &PackedWeight, dtype: crate::DType) -> Result<Vec<u8>> {
    w.check()?;
    let esize = match dtype {
        crate::DType::F32 => 4,
        crate::DType::F16 | crate::DType::BF16 => 2,
        other => {
            return Err(crate::Error::Invalid(format!(
                "dequantization to {other}: only f32, f16 and bf16"
            )))
        }
    };
    let (rows, cols) = (w.rows, w.cols);
    let mut out = vec![0u8; rows * cols * esize];
    if cols == 0 {
        return Ok(out);
    }
    let (groups, wpr) = (w.groups(), w.words_per_row());
    out.par_chunks_mut(cols * esize).enumerate().for_each_init(
        || (vec![0.0f32; cols], vec![0u8; wpr * 4]),
        |(vals, raw), (r, bytes)| {
            // The row's words as little-endian bytes: code k sits in
            // byte k (8 bits, offset 128) or in nibble k of byte k/2.
            for (d, word) in raw
                .chunks_exact_mut(4)
                .zip(&w.words[r * wpr..(r + 1) * wpr])
            {
                d.copy_from_slice(&word.to_le_bytes());
            }
            for g in 0..groups {
                let scale = w.scales[r * groups + g];
                let zp = w.zero_points.map_or(0, |z| z[r * groups + g]);
                let span = g * w.group..((g + 1) * w.group).min(cols);
                let v = &mut vals[span.clone()];
                if w.bits == 8 {
                    for (x, &b) in v.iter_mut().zip(&raw[span]) {
                        *x = (((b ^ 0x80) as i8) as i32 - zp) as f32 * scale;
                    }
                } else if span.start % 2 == 0 {
                    // Two codes a byte, low nibble first.
                    let src = &raw[span.start / 2..span.end.div_ceil(2)];
                    for (pair, &b) in v.chunks_mut(2).zip(src) {
                        pair[0] = ((b & 0xf) as i32 - 8 - zp) as f32 * scale;
                        if let Some(hi) = pair.get_mut(1) {
                            *hi = ((b >> 4) as i32 - 8 - zp) as f32 * scale;
                        }
                    }
                } else {
                    for (x, k) in v.iter_mut().zip(span) {
                        let c = ((raw[k / 2] >> (4 * (k & 1))) & 0xf) as i32 - 8;
                        *x = (c - zp) as f32 * scale;
                    }
                }
            }
            crate::encode_f32(dtype, vals, bytes);
        },
    );
    Ok(out)
}

/// GGUF blocks of a float tensor whose rows are whole blocks: rows in
/// parallel, each through [`super::gguf`] (ggml's `quantize_row_*_ref`,
/// byte for byte).
pub fn quantize_gguf(w: &TensorView, kind: crate::reference::gguf::GgufType) -> Result<Vec<u8>> {
    super::gguf::quantize_rows(w, kind.block_elems(), kind.block_bytes(), |x, o| {
        super::gguf::row(kind, x, o)
    })
}

/// [`quantize_gguf`] weighted by one importance per column (llama.cpp's
/// importance matrix): ggml's weighted searches
/// ([`crate::reference::imatrix`]; the K-quants' in vector lanes,
/// [`super::kquants`]), rows in parallel.
pub fn quantize_gguf_weighted(
    w: &TensorView,
    kind: crate::reference::gguf::GgufType,
    importance: &[f32],
) -> Result<Vec<u8>> {
    let (_, cols) = w.matrix_dims();
    if importance.len() != cols {
        return Err(crate::Error::Invalid(format!(
            "{} importances for rows of {cols}",
            importance.len()
        )));
    }
    use crate::reference::gguf::GgufType;
    super::gguf::quantize_rows(w, kind.block_elems(), kind.block_bytes(), |x, o| {
        if matches!(kind, GgufType::Q4_K | GgufType::Q5_K | GgufType::Q6_K) {
            super::kquants::row(kind, x, Some(importance), o)
        } else {
            crate::reference::imatrix::quantize_row(kind, x, importance, o)
        }
    })
}

/// The fast CPU path of the quant family behind its trait.
impl crate::ops::quant::Quant for super::FastCpu {
    fn backend(&self) -> &'static str {
        "cpu"
    }

    fn quantize(
        &self,
        spec: &QuantSpec,
        w: &TensorView,
        keep: Option<&[u8]>,
        rounding: Rounding,
        out: &mut Quantized,
    ) -> Result<ErrorStats> {
        quantize_masked_into(spec, w, keep, rounding, true, out)
    }

    fn quantize_magnitude_nm(
        &self,
        spec: &QuantSpec,
        w: &TensorView,
        n: usize,
        m: usize,
        rounding: Rounding,
        keep: &mut Vec<u8>,
        out: &mut Quantized,
    ) -> Result<Option<ErrorStats>> {
        // Every byte is written by the pass.
        keep.resize(w.numel(), 0);
        let out_mask = Keep::MagnitudeNm { n, m, out: keep };
        quantize_keep_into(spec, w, out_mask, rounding, true, out).map(Some)
    }

    fn dequantize_packed(&self, w: &PackedWeight, dtype: crate::DType) -> Result<Vec<u8>> {
        dequantize_packed(w, dtype)
    }
}
