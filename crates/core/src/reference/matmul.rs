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

/// The plain specification.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reference;

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
