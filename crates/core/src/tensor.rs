//! Tensor buffers: a borrowed view over (usually memory-mapped) bytes and an
//! owned buffer, both carrying dtype and shape, plus bulk conversion between
//! f32 and the 16-bit float types.

use std::ops::Range;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::{DType, Error, Result};

/// A tensor whose bytes are borrowed, typically straight from a checkpoint's
/// memory map. Nothing is copied until a kernel asks for the data.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    dtype: DType,
    shape: &'a [usize],
    data: &'a [u8],
    /// The read-only file mapping `data` lives in, with the offset of `data`
    /// inside it, when the view came from a checkpoint: used to give pages
    /// back to the OS once they are consumed, and to copy the bytes
    /// file-to-file without reading them ([`TensorView::source`]).
    mapping: Option<(&'a MappedFile, usize)>,
}

/// A file opened read-only and mapped whole.
#[derive(Debug)]
pub struct MappedFile {
    pub(crate) file: std::fs::File,
    pub(crate) map: memmap2::Mmap,
}

impl<'a> TensorView<'a> {
    /// A view over `data`; fails when the byte length does not match
    /// dtype × shape.
    pub fn new(dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Result<Self> {
        let numel = checked_numel(shape)
            .ok_or_else(|| Error::Invalid(format!("shape {shape:?} overflows")))?;
        let want = dtype.byte_len(numel).ok_or_else(|| {
            Error::Invalid(format!("{numel} elements of {dtype} are not whole bytes"))
        })?;
        if want != data.len() {
            return Err(Error::Invalid(format!(
                "{dtype} {shape:?} needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(TensorView {
            dtype,
            shape,
            data,
            mapping: None,
        })
    }

    /// A view whose bytes lie at `offset` inside a read-only file mapping.
    /// The caller has checked that dtype × shape matches the byte length.
    pub(crate) fn mapped(
        dtype: DType,
        shape: &'a [usize],
        map: &'a MappedFile,
        range: Range<usize>,
    ) -> Self {
        TensorView {
            dtype,
            shape,
            data: &map.map[range.clone()],
            mapping: Some((map, range.start)),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor seen as a matrix: (rows, cols) where cols is the last
    /// dimension and rows the product of the others (a scalar is 1×1).
    pub fn matrix_dims(&self) -> (usize, usize) {
        match self.shape.split_last() {
            None => (1, 1),
            Some((&cols, rest)) => (rest.iter().product(), cols),
        }
    }

    /// Tells the OS that the pages holding `bytes` (a range of this view's
    /// bytes) will not be read again soon, so they leave this process's
    /// resident memory. Reading them again faults them back in from the file,
    /// so this is only an optimisation; a view not backed by a file mapping
    /// ignores it.
    pub fn release(&self, bytes: Range<usize>) {
        #[cfg(unix)]
        if let Some((map, base)) = self.mapping {
            let len = bytes.end.saturating_sub(bytes.start);
            if len == 0 {
                return;
            }
            // SAFETY: the mapping is a read-only shared file mapping; dropping
            // its pages only means later reads fault them in again from the
            // file, so no data visible through `&[u8]` changes.
            let _ = unsafe {
                map.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    base + bytes.start,
                    len,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = bytes;
    }

    /// Asks the kernel to start reading this tensor's pages from the file
    /// (readahead), so a later pass finds them in memory; a view not backed
    /// by a file mapping ignores it.
    pub fn prefetch(&self) {
        #[cfg(unix)]
        if let Some((map, base)) = self.mapping {
            if !self.data.is_empty() {
                let _ = map
                    .map
                    .advise_range(memmap2::Advice::WillNeed, base, self.data.len());
            }
        }
    }

    /// The file this view's bytes live in and their offset there, when the
    /// view came from a checkpoint, so a writer can copy them file-to-file
    /// in the kernel instead of reading them through the mapping.
    pub fn source(&self) -> Option<(&'a std::fs::File, u64)> {
        self.mapping.map(|(m, base)| (&m.file, base as u64))
    }

    /// Decodes elements `range` into `out` as f32 (F32, F16 and BF16 only).
    pub fn decode_into(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        let size = self.float_size()?;
        decode_f32(
            self.dtype,
            &self.data[range.start * size..range.end * size],
            out,
        );
        Ok(())
    }

    /// All elements as f32 (F32, F16 and BF16 only). Allocates the whole
    /// tensor: meant for tests and small tensors, not for streaming.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.numel()];
        self.decode_into(0..out.len(), &mut out)?;
        Ok(out)
    }

    /// The NaN and ±inf values of a float tensor: how many, and the first
    /// row (of [`TensorView::matrix_dims`]) holding one; `None` when every
    /// value is finite (or the dtype is not a float). One pass over the
    /// bytes, on every core, exact: the same answer for every backend.
    pub fn non_finite(&self) -> Option<NonFinite> {
        self.scan().0
    }

    /// [`TensorView::non_finite`] and the number of ±0 values, in the same
    /// pass (0 zeros for non-float dtypes).
    pub fn scan(&self) -> (Option<NonFinite>, u64) {
        // Exponent bits all ones: ±inf or NaN; all bits but the sign clear: ±0.
        let (size, mask, magnitude): (usize, u32, u32) = match self.dtype {
            DType::F32 => (4, 0x7f80_0000, 0x7fff_ffff),
            DType::F16 => (2, 0x7c00, 0x7fff),
            DType::BF16 => (2, 0x7f80, 0x7fff),
            _ => return (None, 0),
        };
        let (_, cols) = self.matrix_dims();
        let row_bytes = (cols * size).max(size);
        let count = |row: &[u8]| crate::dtype::count_special(row, size, mask, magnitude);
        use rayon::prelude::*;
        let per_row: Vec<(usize, u64, u64)> = self
            .bytes()
            .par_chunks(row_bytes)
            .enumerate()
            .map(|(i, row)| {
                let (bad, zeros) = count(row);
                (i, bad, zeros)
            })
            .collect();
        let zeros = per_row.iter().map(|r| r.2).sum();
        let mut bad_rows = per_row.iter().filter(|r| r.1 > 0);
        let non_finite = bad_rows.next().map(|first| NonFinite {
            count: per_row.iter().map(|r| r.1).sum(),
            first_row: first.0,
        });
        (non_finite, zeros)
    }

    /// Bytes per element for the float dtypes kernels compute on.
    pub fn float_size(&self) -> Result<usize> {
        if self.dtype.is_float_computable() {
            Ok(self.dtype.bits() / 8)
        } else {
            Err(Error::Invalid(format!(
                "dtype {} is not a float type shears computes on (F32, F16, BF16)",
                self.dtype
            )))
        }
    }
}

/// Where a tensor holds NaN or ±inf ([`TensorView::non_finite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite {
    /// How many values are NaN or ±inf.
    pub count: u64,
    /// The first row holding one.
    pub first_row: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} NaN/inf value{}, the first in row {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.first_row
        )
    }
}

/// A tensor that owns its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBuf {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl TensorBuf {
    /// Encodes f32 values into a new buffer of `dtype` (F32, F16 or BF16),
    /// rounding to nearest even.
    pub fn from_f32(dtype: DType, shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        if checked_numel(&shape) != Some(values.len()) {
            return Err(Error::Invalid(format!(
                "shape {shape:?} does not hold {} values",
                values.len()
            )));
        }
        let size = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => dtype.bits() / 8,
            other => return Err(Error::Invalid(format!("cannot encode f32 as {other}"))),
        };
        let mut data = vec![0u8; values.len() * size];
        encode_f32(dtype, values, &mut data);
        Ok(TensorBuf { dtype, shape, data })
    }

    /// A borrowed view of this buffer.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            data: &self.data,
            mapping: None,
        }
    }
}

/// Product of the dimensions, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Decodes little-endian `bytes` of `dtype` (F32, F16 or BF16) into `out`,
/// which must hold exactly as many elements. Aligned input takes half's
/// vectorised slice conversion; unaligned input falls back to a scalar loop.
pub fn decode_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            assert_eq!(bytes.len(), out.len() * 4);
            match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(src) => out.copy_from_slice(src),
                Err(_) => {
                    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                }
            }
        }
        DType::F16 => {
            assert_eq!(bytes.len(), out.len() * 2);
            match bytemuck::try_cast_slice::<u8, f16>(bytes) {
                Ok(src) => src.convert_to_f32_slice(out),
                Err(_) => {
                    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                    }
                }
            }
        }
        DType::BF16 => {
            assert_eq!(bytes.len(), out.len() * 2);
            match bytemuck::try_cast_slice::<u8, bf16>(bytes) {
                Ok(src) => src.convert_to_f32_slice(out),
                Err(_) => {
                    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                        *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                    }
                }
            }
        }
        other => panic!("decode_f32 called on {other}"),
    }
}

/// The bf16 bits of `x` rounded to nearest even, NaN kept quiet with its
/// sign: what `half::bf16::from_f32` gives, written without a branch so the
/// slice loop vectorises (half's own slice conversion is scalar for bf16).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let quiet = ((b >> 16) | 0x40) as u16;
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        quiet
    } else {
        rounded
    }
}

/// Encodes `values` into little-endian `out` of `dtype` (F32, F16 or BF16),
/// rounding to nearest even.
pub fn encode_f32(dtype: DType, values: &[f32], out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => match bytemuck::try_cast_slice_mut::<u8, f16>(out) {
            Ok(dst) => dst.convert_from_f32_slice(values),
            Err(_) => {
                for (c, v) in out.chunks_exact_mut(2).zip(values) {
                    c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
        },
        DType::BF16 => match bytemuck::try_cast_slice_mut::<u8, u16>(out) {
            Ok(dst) => {
                for (d, v) in dst.iter_mut().zip(values) {
                    *d = bf16_bits(*v).to_le();
                }
            }
            Err(_) => {
                for (c, v) in out.chunks_exact_mut(2).zip(values) {
                    c.copy_from_slice(&bf16_bits(*v).to_le_bytes());
                }
            }
        },
        other => panic!("encode_f32 called on {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_bits_equal_half_on_every_class_of_value() {
        let check = |b: u32| {
            let x = f32::from_bits(b);
            assert_eq!(bf16_bits(x), bf16::from_f32(x).to_bits(), "{b:#010x}");
        };
        // Every exponent and sign with mantissas around each rounding case
        // (ties, just below and above, carries into the exponent), NaNs and
        // infinities included, plus a seeded sweep of random patterns.
        for hi in 0..=0x1ffu32 {
            for lo in [
                0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1_7fff, 0x1_8000, 0x1_8001, 0x7f_7fff,
                0x7f_8000, 0x7f_ffff, 0x40_0000,
            ] {
                check((hi << 23) | lo);
            }
        }
        let mut state = 0x9e37_79b9u32;
        for _ in 0..1_000_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            check(state);
        }
    }

    #[test]
    fn view_checks_length() {
        let shape = [2, 3];
        assert!(TensorView::new(DType::F32, &shape, &[0u8; 24]).is_ok());
        assert!(TensorView::new(DType::F32, &shape, &[0u8; 20]).is_err());
        assert!(TensorView::new(DType::BF16, &shape, &[0u8; 12]).is_ok());
    }

    #[test]
    fn round_trip_through_each_float_dtype() {
        let values = [0.0f32, -1.5, 2.0, 65504.0, 1.0e-3, -7.25];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let buf = TensorBuf::from_f32(dtype, vec![2, 3], &values).unwrap();
            let back = buf.view().to_f32().unwrap();
            for (a, b) in values.iter().zip(&back) {
                let tol = match dtype {
                    DType::F32 => 0.0,
                    DType::F16 => a.abs() * 1e-3,
                    _ => a.abs() * 8e-3,
                };
                assert!((a - b).abs() <= tol, "{dtype}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn unaligned_decode_matches_aligned() {
        let values: Vec<f32> = (0..33).map(|i| i as f32 * 0.37 - 5.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let buf = TensorBuf::from_f32(dtype, vec![33], &values).unwrap();
            let mut shifted = vec![0u8; buf.data.len() + 1];
            shifted[1..].copy_from_slice(&buf.data);
            let mut a = vec![0.0; 33];
            let mut b = vec![0.0; 33];
            decode_f32(dtype, &buf.data, &mut a);
            decode_f32(dtype, &shifted[1..], &mut b);
            assert_eq!(a, b);
        }
    }
}
