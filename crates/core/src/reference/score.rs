//! Pruning scores of the importance family, as u32 keys.
//!
//! A key is the f32 bit pattern of a non-negative score, so comparing keys
//! as integers orders scores as numbers (NaN sorts above +∞ and is kept).
//! Scores are computed on the fly wherever they are needed (selection,
//! masking), never stored for a whole checkpoint; the GPU computes the same
//! keys in `shaders/score.wgsl`.
//!
//! * magnitude: |w|
//! * Wanda (Sun et al. 2023): |w_ij| · ‖x_j‖₂, one f32 multiply
//! * Taylor (first order): |w · g|, one f32 multiply
//! * random: a seeded hash of (salt, flat index), as a float in [1, 2)
//!
//! Subnormal factors count as zero, products are flushed to zero when
//! subnormal (GPUs may flush either) and every NaN becomes the canonical
//! 0x7fc00000.

use crate::{Error, Result, TensorView};

use super::importance::abs;

/// How weights are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Magnitude,
    Wanda,
    Taylor,
    Random,
}

impl Method {
    /// The code the shaders use for this method.
    pub fn code(self) -> u32 {
        match self {
            Method::Magnitude => 0,
            Method::Wanda => 1,
            Method::Taylor => 2,
            Method::Random => 3,
        }
    }

    /// Name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::Taylor => "taylor",
            Method::Random => "random",
        }
    }
}

/// Everything needed to score the elements of one weight matrix.
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    pub method: Method,
    /// Wanda: ‖x_j‖₂ per input column (length = columns).
    pub norms: Option<&'a [f32]>,
    /// Taylor: the gradient, same shape as the weight (F32, F16 or BF16).
    pub grad: Option<TensorView<'a>>,
    /// Random: per-tensor salt (derived from the seed and tensor name).
    pub salt: u32,
}

impl<'a> Scorer<'a> {
    /// Magnitude scoring, which needs nothing else.
    pub fn magnitude() -> Self {
        Scorer {
            method: Method::Magnitude,
            norms: None,
            grad: None,
            salt: 0,
        }
    }

    /// Checks the auxiliary inputs fit the weight `w`.
    pub fn check(&self, w: &TensorView) -> Result<()> {
        let (rows, cols) = w.matrix_dims();
        match self.method {
            Method::Wanda => match self.norms {
                Some(n) if n.len() == cols => Ok(()),
                Some(n) => Err(Error::Invalid(format!(
                    "input norms have {} entries, the weight has {cols} input columns",
                    n.len()
                ))),
                None => Err(Error::Invalid("wanda needs input norms".into())),
            },
            Method::Taylor => match &self.grad {
                Some(g) if g.matrix_dims() == (rows, cols) && g.numel() == w.numel() => {
                    g.float_size().map(|_| ())
                }
                Some(g) => Err(Error::Invalid(format!(
                    "gradient shape {:?} differs from the weight's {:?}",
                    g.shape(),
                    w.shape()
                ))),
                None => Err(Error::Invalid("taylor needs a gradient".into())),
            },
            Method::Random => {
                if w.numel() > u32::MAX as usize {
                    Err(Error::Invalid(
                        "random scores need fewer than 2^32 elements".into(),
                    ))
                } else {
                    Ok(())
                }
            }
            Method::Magnitude => Ok(()),
        }
    }

    /// Keys of elements `range` (flat indices) of `w`, decoded from its
    /// bytes. `cols` is the row length.
    pub fn keys(
        &self,
        w: &TensorView,
        range: std::ops::Range<usize>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let (_, cols) = w.matrix_dims();
        let mut x = vec![0.0f32; range.len()];
        w.decode_into(range.clone(), &mut x)?;
        let mut g = Vec::new();
        if let (Method::Taylor, Some(grad)) = (self.method, &self.grad) {
            g = vec![0.0f32; range.len()];
            grad.decode_into(range.clone(), &mut g)?;
        }
        out.clear();
        out.reserve(range.len());
        for (i, &v) in x.iter().enumerate() {
            let idx = range.start + i;
            let aux = match self.method {
                Method::Wanda => self.norms.map_or(0.0, |n| n[idx % cols.max(1)]),
                Method::Taylor => g[i],
                _ => 0.0,
            };
            out.push(score_key(self.method, v, aux, idx as u32, self.salt));
        }
        Ok(())
    }
}

/// Canonical key of a score: subnormal → 0, NaN → 0x7fc00000.
#[inline(always)]
pub fn key_of(score: f32) -> u32 {
    let b = score.to_bits() & 0x7fff_ffff;
    if b > 0x7f80_0000 {
        0x7fc0_0000
    } else if b < 0x0080_0000 {
        0
    } else {
        b
    }
}

/// A factor of a product: subnormal values count as zero (GPUs may flush
/// them), everything else is itself.
#[inline(always)]
pub fn factor(x: f32) -> f32 {
    if x.to_bits() & 0x7f80_0000 == 0 {
        0.0
    } else {
        x
    }
}

/// A 32-bit integer hash with good avalanche (xorshift-multiply rounds).
#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x21f0_aaad);
    x ^= x >> 15;
    x = x.wrapping_mul(0x735a_2d97);
    x ^= x >> 15;
    x
}

/// The key of one element: `x` the weight, `aux` the input norm (Wanda) or
/// the gradient (Taylor), `index` its flat index, `salt` for random.
#[inline(always)]
pub fn score_key(method: Method, x: f32, aux: f32, index: u32, salt: u32) -> u32 {
    match method {
        Method::Magnitude => abs(x).to_bits(),
        Method::Wanda => key_of(factor(abs(x)) * factor(aux)),
        Method::Taylor => key_of(factor(x) * factor(aux)),
        Method::Random => 0x3f80_0000 | (mix32(index ^ mix32(salt)) >> 9),
    }
}

/// Salt of the random method for one tensor: seed and name hashed.
pub fn random_salt(seed: u64, tensor: &str) -> u32 {
    let mut h = mix32(seed as u32 ^ mix32((seed >> 32) as u32));
    for b in tensor.bytes() {
        h = mix32(h ^ b as u32);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_scores() {
        let xs = [0.0f32, 1e-30, 0.5, 1.0, 3.0, f32::INFINITY];
        for w in xs.windows(2) {
            assert!(key_of(w[0]) <= key_of(w[1]));
        }
        assert_eq!(key_of(f32::NAN), 0x7fc0_0000);
        assert_eq!(key_of(1e-45), 0);
        assert_eq!(score_key(Method::Wanda, -2.0, 0.5, 0, 0), 1.0f32.to_bits());
        assert_eq!(score_key(Method::Taylor, -2.0, 0.5, 0, 0), 1.0f32.to_bits());
        let r = f32::from_bits(score_key(Method::Random, 0.0, 0.0, 7, 3));
        assert!((1.0..2.0).contains(&r));
    }
}
