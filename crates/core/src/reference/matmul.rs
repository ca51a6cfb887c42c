//! CPU reference of the `matmul` family: Y = X·(W⊙M)ᵀ, the product used to
//! measure what pruning costs a layer's output.
//!
//! X is [p, in] (probe or calibration inputs), W is [out, in], M an optional
//! mask (1 kept, 0 pruned). Accumulation is f32 in increasing input index;
//! other backends sum in other orders and agree within [`MATMUL_RTOL`].

use crate::{Error, Result, TensorView};

/// Relative tolerance between backends on one output element, scaled by
/// Σ|x·w| of that element: f32 sums of `in` terms in different orders
/// differ by at most about in·2⁻²⁴ of it; 1e-5 covers in ≤ 100k.
pub const MATMUL_RTOL: f32 = 1e-5;

/// One backend's implementation of the matmul family.
pub trait Matmul {
    /// Y = X·(W⊙M)ᵀ with X [p, in] row-major; returns Y [p, out].
    fn masked_matmul(
        &self,
        x: &[f32],
        p: usize,
        w: &TensorView,
        mask: Option<&[u8]>,
    ) -> Result<Vec<f32>>;

    /// Y = X·dequant(Q)ᵀ read straight from packed codes and scales; the
    /// dense weight is never formed. X [p, in]; returns Y [p, out].
    fn dequant_matmul(&self, x: &[f32], p: usize, w: &PackedWeight) -> Result<Vec<f32>>;
}

/// A quantized weight [rows, cols] as compressed-tensors stores it: codes
/// of `bits` bits packed along rows, least significant first (see
/// [`crate::reference::quant::pack_rows`]), one scale (and zero point) per
/// group of `group` inputs.
#[derive(Debug, Clone, Copy)]
pub struct PackedWeight<'a> {
    pub rows: usize,
    pub cols: usize,
    /// 4 or 8.
    pub bits: u32,
    pub group: usize,
    /// [rows, ceil(cols·bits/32)].
    pub words: &'a [i32],
    /// [rows, groups]: the stored scales, as f32.
    pub scales: &'a [f32],
    /// [rows, groups], unpacked; `None` for symmetric schemes.
    pub zero_points: Option<&'a [i32]>,
}

impl PackedWeight<'_> {
    /// Codes per i32 word.
    pub fn per_word(&self) -> usize {
        (32 / self.bits) as usize
    }

    /// Words per row.
    pub fn words_per_row(&self) -> usize {
        self.cols.div_ceil(self.per_word())
    }

    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group.max(1))
    }

    /// Checks that the parts agree with the shape.
    pub fn check(&self) -> Result<()> {
        if !matches!(self.bits, 4 | 8) || self.group == 0 {
            return Err(Error::Invalid(format!(
                "{} bits in groups of {}: expected 4 or 8 bits and a positive group",
                self.bits, self.group
            )));
        }
        let parts = [
            ("codes", self.words.len(), self.rows * self.words_per_row()),
            ("scales", self.scales.len(), self.rows * self.groups()),
            (
                "zero points",
                self.zero_points
                    .map_or(self.rows * self.groups(), |z| z.len()),
                self.rows * self.groups(),
            ),
        ];
        for (what, got, want) in parts {
            if got != want {
                return Err(Error::Invalid(format!(
                    "{what} hold {got} values, a [{}, {}] weight needs {want}",
                    self.rows, self.cols
                )));
            }
        }
        Ok(())
    }

    /// The code of element (o, k).
    #[inline(always)]
    pub fn code(&self, o: usize, k: usize) -> i32 {
        let per = self.per_word();
        let word = self.words[o * self.words_per_row() + k / per] as u32;
        let u = (word >> (self.bits as usize * (k % per))) & ((1u32 << self.bits) - 1);
        u as i32 - (1 << (self.bits - 1))
    }

    /// The value of element (o, k): (q − zp)·scale.
    #[inline(always)]
    pub fn value(&self, o: usize, k: usize) -> f32 {
        let g = o * self.groups() + k / self.group;
        let zp = self.zero_points.map_or(0, |z| z[g]);
        crate::reference::quant::dequantize(
            self.code(o, k),
            crate::reference::quant::QParams {
                scale: self.scales[g],
                zero_point: zp,
            },
        )
    }
}

/// The owned parts of a [`PackedWeight`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedParts {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub group: usize,
    pub words: Vec<i32>,
    pub scales: Vec<f32>,
    pub zero_points: Option<Vec<i32>>,
}

impl PackedParts {
    /// Packs quantized codes of `bits` bits; zero points are kept only for
    /// asymmetric schemes.
    pub fn from_quantized(
        q: &crate::reference::quant::Quantized,
        bits: u32,
        symmetric: bool,
    ) -> Self {
        PackedParts {
            rows: q.rows,
            cols: q.cols,
            bits,
            group: q.group,
            words: crate::reference::quant::pack_rows(&q.codes, q.rows, q.cols, bits),
            scales: q.params.iter().map(|p| p.scale).collect(),
            zero_points: (!symmetric).then(|| q.params.iter().map(|p| p.zero_point).collect()),
        }
    }

    /// The borrowed view the matmul family reads.
    pub fn view(&self) -> PackedWeight<'_> {
        PackedWeight {
            rows: self.rows,
            cols: self.cols,
            bits: self.bits,
            group: self.group,
            words: &self.words,
            scales: &self.scales,
            zero_points: self.zero_points.as_deref(),
        }
    }
}

/// Checks X against a packed weight; returns (out, in).
pub fn check_packed(x: &[f32], p: usize, w: &PackedWeight) -> Result<(usize, usize)> {
    w.check()?;
    if x.len() != p * w.cols {
        return Err(Error::Invalid(format!(
            "inputs hold {} values, expected {p} × {}",
            x.len(),
            w.cols
        )));
    }
    Ok((w.rows, w.cols))
}

/// Checks shapes and returns (out, in).
pub fn check_shapes(
    x: &[f32],
    p: usize,
    w: &TensorView,
    mask: Option<&[u8]>,
) -> Result<(usize, usize)> {
    let (out, inn) = w.matrix_dims();
    if x.len() != p * inn {
        return Err(Error::Invalid(format!(
            "inputs hold {} values, expected {p} × {inn}",
            x.len()
        )));
    }
    if let Some(m) = mask {
        if m.len() != out * inn {
            return Err(Error::Invalid(format!(
                "mask holds {} entries, the weight {}",
                m.len(),
                out * inn
            )));
        }
    }
    Ok((out, inn))
}

pub use super::Reference;

impl Matmul for Reference {
    fn masked_matmul(
        &self,
        x: &[f32],
        p: usize,
        w: &TensorView,
        mask: Option<&[u8]>,
    ) -> Result<Vec<f32>> {
        let (out, inn) = check_shapes(x, p, w, mask)?;
        let wf = w.to_f32()?;
        let mut y = vec![0.0f32; p * out];
        for i in 0..p {
            for o in 0..out {
                let mut acc = 0.0f32;
                for j in 0..inn {
                    let keep = mask.is_none_or(|m| m[o * inn + j] != 0);
                    if keep {
                        acc += x[i * inn + j] * wf[o * inn + j];
                    }
                }
                y[i * out + o] = acc;
            }
        }
        Ok(y)
    }

    fn dequant_matmul(&self, x: &[f32], p: usize, w: &PackedWeight) -> Result<Vec<f32>> {
        let (out, inn) = check_packed(x, p, w)?;
        let mut y = vec![0.0f32; p * out];
        for i in 0..p {
            for o in 0..out {
                let mut acc = 0.0f32;
                for k in 0..inn {
                    acc += x[i * inn + k] * w.value(o, k);
                }
                y[i * out + o] = acc;
            }
        }
        Ok(y)
    }
}

/// ‖a − b‖ / ‖a‖ in f64 (0 when both are zero).
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (x as f64).powi(2);
    }
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (num / den).sqrt()
    }
}

/// Seeded Gaussian probe inputs [p, in].
pub fn probe_inputs(p: usize, inn: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..p * inn)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect()
}
