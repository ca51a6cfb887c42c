//! The Gram sums of the `hessian` family: H = XᵀX of one linear layer's
//! inputs over every calibration token, added a chunk of rows at a time as
//! the model runs ([`crate::model::collect`]). The reference here is the
//! specification: each entry summed in f64 over all rows, in row order,
//! and rounded to f32 once at the end. The fast CPU path sums in f32
//! through SGEMM and the GPU in f32 tiles, so backends agree within
//! [`GRAM_RTOL`] of the largest diagonal entry, not bytes.

use crate::{Error, Result};

/// Largest difference allowed between backends' Gram matrices, relative to
/// the largest diagonal entry (which bounds every entry: |H_ij|² ≤
/// H_ii·H_jj). f32 sums over thousands of rows round by a few parts in 10⁶
/// of that; the tests measure it.
pub const GRAM_RTOL: f64 = 1e-4;

/// A running XᵀX over inputs of one width.
pub trait GramSum {
    /// Adds XᵀX of `x` [rows, n].
    fn add(&mut self, x: &[f32], rows: usize) -> Result<()>;

    /// The sum so far, [n, n] row-major and symmetric.
    fn finish(self: Box<Self>) -> Result<Vec<f32>>;
}

/// Checks one chunk against the sum's width.
pub fn check_chunk(n: usize, x: &[f32], rows: usize) -> Result<()> {
    if x.len() != rows * n {
        return Err(Error::Invalid(format!(
            "Gram sums: {} values are not {rows} rows of width {n}",
            x.len()
        )));
    }
    Ok(())
}

/// The reference sum: f64 accumulators, rounded once.
pub struct RefGram {
    n: usize,
    acc: Vec<f64>,
}

impl RefGram {
    /// An empty sum of width `n`.
    pub fn new(n: usize) -> Self {
        RefGram {
            n,
            acc: vec![0.0; n * n],
        }
    }
}

impl GramSum for RefGram {
    fn add(&mut self, x: &[f32], rows: usize) -> Result<()> {
        check_chunk(self.n, x, rows)?;
        let n = self.n;
        for row in x.chunks_exact(n.max(1)) {
            for (i, &xi) in row.iter().enumerate() {
                let xi = xi as f64;
                for (a, &xj) in self.acc[i * n..(i + 1) * n].iter_mut().zip(row) {
                    *a += xi * xj as f64;
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<f32>> {
        Ok(self.acc.iter().map(|&v| v as f32).collect())
    }
}

/// Largest |a − b| over the largest diagonal entry of `a` ([n, n]).
pub fn gram_difference(a: &[f32], b: &[f32], n: usize) -> f64 {
    let scale = (0..n)
        .map(|i| a[i * n + i].abs() as f64)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_chunks_as_one_product() {
        let n = 3;
        let x: Vec<f32> = (0..5 * n).map(|v| (v as f32 - 6.0) * 0.5).collect();
        let mut one = Box::new(RefGram::new(n));
        one.add(&x, 5).unwrap();
        let mut two = Box::new(RefGram::new(n));
        two.add(&x[..2 * n], 2).unwrap();
        two.add(&x[2 * n..], 3).unwrap();
        let (one, two) = (one.finish().unwrap(), two.finish().unwrap());
        assert_eq!(one, two);
        for i in 0..n {
            for j in 0..n {
                let want: f32 = (0..5).map(|t| x[t * n + i] * x[t * n + j]).sum();
                assert_eq!(one[i * n + j], want, "[{i}, {j}]");
            }
        }
    }

    #[test]
    fn refuses_a_ragged_chunk() {
        let mut g = RefGram::new(4);
        assert!(g.add(&[1.0; 7], 2).is_err());
    }
}
