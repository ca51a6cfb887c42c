//! CPU reference of the `importance` family: per-element scores, per-row and
//! per-column sums of squares (L2 norms), and tensor statistics.
//!
//! This file is the specification the GPU (`shaders/importance.wgsl`) and the
//! fast CPU path (`crate::fast::importance`) follow bit for bit.
//!
//! # Numerics
//!
//! * Inputs are F32, F16 or BF16, decoded exactly to f32.
//! * `abs(x)` clears the sign bit (NaN becomes the canonical 0x7fc00000); `square(x)` is `x·x`, flushed to 0 when the
//!   product is subnormal (GPUs may flush subnormals, so nobody keeps them),
//!   and +∞ for NaN or ±∞ (decided on the bits, never by a NaN compare).
//! * Sums of squares use [`square_parts`]: x is split into a high part with
//!   12 significant bits and the exact remainder, so `hi²`, `2·hi·lo` and
//!   `lo²` are exact in f32. Added one after the other, they give the same
//!   result whether or not a compiler fuses a multiply into the addition.
//!   Values with |x| < 2⁻³² contribute 0 (no product can then be subnormal);
//!   non-finite values contribute 0 and are counted apart.
//! * Plain sums add x itself; subnormal and non-finite x contribute 0.
//! * Order of every sum: [`LANES`] = 256 lanes; lane `t` adds elements
//!   `t, t+256, t+512, …` of its range in increasing order; then the lanes
//!   are folded by [`tree_reduce`] (stride 128, 64, …, 1). A row norm uses
//!   the row as its range; a column norm uses the rows (lane `p` adds rows
//!   `p, p+256, …`); statistics cut the tensor into tiles of [`TILE`]
//!   elements, reduce each tile so, then add the tiles' f32 results in
//!   order in f64.
//! * min and max are exact whatever the order; `-0.0` is reported as `0.0`.

use crate::{Result, TensorView};

/// Lanes of every fixed-order sum (one per GPU invocation of a workgroup).
pub const LANES: usize = 256;
/// Elements of one statistics tile: 64 per lane.
pub const TILE: usize = LANES * 64;
/// Below this magnitude a value contributes nothing to a sum of squares.
pub const SQUARE_FLOOR: f32 = 2.328_306_4e-10; // 2^-32

/// The three exact products whose in-order sum is the contribution of `x`
/// to a sum of squares (see the module docs).
#[inline(always)]
pub fn square_parts(x: f32) -> [f32; 3] {
    let a = f32::from_bits(x.to_bits() & 0x7fff_ffff);
    // NaN fails the first test and is caught by the second, on the bits.
    if a < SQUARE_FLOOR || a.to_bits() >= 0x7f80_0000 {
        return [0.0; 3];
    }
    let hi = f32::from_bits(x.to_bits() & 0xffff_f000);
    let lo = x - hi;
    [hi * hi, (2.0 * hi) * lo, lo * lo]
}

/// Adds the contribution of `x` to a running sum of squares.
#[inline(always)]
pub fn add_square(acc: f32, x: f32) -> f32 {
    let [a, b, c] = square_parts(x);
    ((acc + a) + b) + c
}

/// The contribution of `x` to a plain sum: 0 for subnormal or non-finite x.
#[inline(always)]
pub fn sum_term(x: f32) -> f32 {
    let e = x.to_bits() & 0x7f80_0000;
    if e == 0 || e == 0x7f80_0000 {
        0.0
    } else {
        x
    }
}

/// Whether x is NaN or ±∞ (decided on the bits, as the GPU does).
#[inline(always)]
pub fn is_nonfinite(x: f32) -> bool {
    x.to_bits() & 0x7f80_0000 == 0x7f80_0000
}

/// |x|: the sign bit cleared; every NaN becomes the canonical quiet NaN
/// (drivers disagree on NaN payloads).
#[inline(always)]
pub fn abs(x: f32) -> f32 {
    let a = x.to_bits() & 0x7fff_ffff;
    f32::from_bits(if a > 0x7f80_0000 { 0x7fc0_0000 } else { a })
}

/// `x·x` flushed to zero when subnormal; +∞ for a non-finite x.
#[inline(always)]
pub fn square(x: f32) -> f32 {
    if is_nonfinite(x) {
        return f32::INFINITY;
    }
    let s = x * x;
    if s >= f32::MIN_POSITIVE {
        s
    } else {
        0.0
    }
}

/// Folds 256 lane sums: for stride 128, 64, …, 1, lane i adds lane i+stride.
#[inline]
pub fn tree_reduce(lanes: &mut [f32; LANES]) -> f32 {
    let mut stride = LANES / 2;
    while stride > 0 {
        for i in 0..stride {
            lanes[i] += lanes[i + stride];
        }
        stride /= 2;
    }
    lanes[0]
}

/// The reduction of one statistics tile, as both backends produce it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TilePartial {
    pub sum: f32,
    pub sum_sq: f32,
    /// Smallest finite value (`f32::MAX` when the tile has none).
    pub min: f32,
    /// Largest finite value (`f32::MIN` when the tile has none).
    pub max: f32,
    pub zeros: u32,
    pub nonfinite: u32,
}

/// Statistics of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct TensorStats {
    pub count: u64,
    /// Smallest and largest finite values (0 when there are none).
    pub min: f32,
    pub max: f32,
    /// Largest finite magnitude.
    pub absmax: f32,
    pub sum: f64,
    pub sum_sq: f64,
    /// Elements equal to ±0.
    pub zeros: u64,
    /// NaN and ±∞ elements, left out of every other figure.
    pub nonfinite: u64,
}

impl TensorStats {
    /// Combines tile partials, in tile order, over `count` elements.
    pub fn from_tiles(count: u64, tiles: impl IntoIterator<Item = TilePartial>) -> Self {
        let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
        let (mut min, mut max) = (f32::MAX, f32::MIN);
        let (mut zeros, mut nonfinite) = (0u64, 0u64);
        for t in tiles {
            sum += t.sum as f64;
            sum_sq += t.sum_sq as f64;
            min = min.min(t.min);
            max = max.max(t.max);
            zeros += t.zeros as u64;
            nonfinite += t.nonfinite as u64;
        }
        if nonfinite == count {
            (min, max) = (0.0, 0.0);
        }
        // Adding +0 turns a -0 result into +0, so both backends print alike.
        let (min, max) = (min + 0.0, max + 0.0);
        TensorStats {
            count,
            min,
            max,
            absmax: min.abs().max(max.abs()),
            sum,
            sum_sq,
            zeros,
            nonfinite,
        }
    }

    /// Whether a tile's f32 partial sums overflowed (finite values past
    /// about 1e17 square past f32::MAX): then the sums are redone exactly
    /// by [`TensorStats::exact`].
    pub fn overflowed(&self) -> bool {
        !(self.sum.is_finite() && self.sum_sq.is_finite())
    }

    /// The statistics summed in f64, value by value (slower than the tiled
    /// kernels; for tensors whose tiled sums overflowed). Min, max, zeros
    /// and the non-finite count are the same as the tiled kernels give.
    pub fn exact(w: &TensorView) -> Result<Self> {
        let x = w.to_f32()?;
        let mut s = TensorStats::from_tiles(x.len() as u64, x.chunks(TILE).map(reduce_tile));
        let finite = x.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
        (s.sum, s.sum_sq) = finite.fold((0.0, 0.0), |(a, b), v| (a + v, b + v * v));
        Ok(s)
    }

    /// Mean of the finite values.
    pub fn mean(&self) -> f64 {
        let n = self.count - self.nonfinite;
        if n == 0 {
            0.0
        } else {
            self.sum / n as f64
        }
    }

    /// Population standard deviation of the finite values.
    pub fn std(&self) -> f64 {
        let n = self.count - self.nonfinite;
        if n == 0 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_sq / n as f64 - m * m).max(0.0).sqrt()
    }

    /// Fraction of elements equal to zero.
    pub fn zero_fraction(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.zeros as f64 / self.count as f64
        }
    }
}

/// One implementation of the importance family. The CPU reference, the fast
/// CPU path and the GPU implement it; they agree bit for bit.
pub trait Importance {
    /// Short name of the backend, for reports.
    fn backend(&self) -> &'static str;
    /// |w| per element, as f32.
    fn abs(&self, w: &TensorView) -> Result<Vec<f32>>;
    /// w² per element, as f32 ([`square`]).
    fn square(&self, w: &TensorView) -> Result<Vec<f32>>;
    /// Sum of squares of each row (last dimension), in the fixed order.
    fn row_sumsq(&self, w: &TensorView) -> Result<Vec<f32>>;
    /// Sum of squares of each column, in the fixed order.
    fn col_sumsq(&self, w: &TensorView) -> Result<Vec<f32>>;
    /// Tensor statistics.
    fn stats(&self, w: &TensorView) -> Result<TensorStats>;

    /// L2 norm of each row (square root taken on the host, exactly).
    fn row_norms(&self, w: &TensorView) -> Result<Vec<f32>> {
        Ok(self.row_sumsq(w)?.into_iter().map(f32::sqrt).collect())
    }
    /// L2 norm of each column.
    fn col_norms(&self, w: &TensorView) -> Result<Vec<f32>> {
        Ok(self.col_sumsq(w)?.into_iter().map(f32::sqrt).collect())
    }
}

pub use super::Reference;

/// Reduces one tile (up to [`TILE`] values) the specified way.
pub fn reduce_tile(x: &[f32]) -> TilePartial {
    let mut sum = [0.0f32; LANES];
    let mut sq = [0.0f32; LANES];
    let (mut min, mut max) = (f32::MAX, f32::MIN);
    let (mut zeros, mut nonfinite) = (0u32, 0u32);
    for (i, &v) in x.iter().enumerate() {
        let lane = i % LANES;
        sum[lane] += sum_term(v);
        sq[lane] = add_square(sq[lane], v);
        if is_nonfinite(v) {
            nonfinite += 1;
        } else {
            min = min.min(v);
            max = max.max(v);
        }
        if v.to_bits() & 0x7fff_ffff == 0 {
            zeros += 1;
        }
    }
    TilePartial {
        sum: tree_reduce(&mut sum),
        sum_sq: tree_reduce(&mut sq),
        min,
        max,
        zeros,
        nonfinite,
    }
}

/// Sum of squares of one row in the specified order.
pub fn row_sumsq_of(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (j, &v) in row.iter().enumerate() {
        lanes[j % LANES] = add_square(lanes[j % LANES], v);
    }
    tree_reduce(&mut lanes)
}

impl Importance for Reference {
    fn backend(&self) -> &'static str {
        "cpu-reference"
    }

    fn abs(&self, w: &TensorView) -> Result<Vec<f32>> {
        Ok(w.to_f32()?.into_iter().map(abs).collect())
    }

    fn square(&self, w: &TensorView) -> Result<Vec<f32>> {
        Ok(w.to_f32()?.into_iter().map(square).collect())
    }

    fn row_sumsq(&self, w: &TensorView) -> Result<Vec<f32>> {
        let x = w.to_f32()?;
        let (rows, cols) = w.matrix_dims();
        if cols == 0 {
            return Ok(vec![0.0; rows]);
        }
        Ok(x.chunks(cols).map(row_sumsq_of).collect())
    }

    fn col_sumsq(&self, w: &TensorView) -> Result<Vec<f32>> {
        let x = w.to_f32()?;
        let (rows, cols) = w.matrix_dims();
        let mut lanes = vec![[0.0f32; LANES]; cols];
        for i in 0..rows {
            for (j, lane) in lanes.iter_mut().enumerate() {
                lane[i % LANES] = add_square(lane[i % LANES], x[i * cols + j]);
            }
        }
        Ok(lanes.iter_mut().map(tree_reduce).collect())
    }

    fn stats(&self, w: &TensorView) -> Result<TensorStats> {
        let x = w.to_f32()?;
        Ok(TensorStats::from_tiles(
            x.len() as u64,
            x.chunks(TILE).map(reduce_tile),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_parts_are_exact() {
        for &x in &[1.0f32, 2.718_281_7e3, -0.1, 1.0e-5, 12345.678, 0.3333333] {
            let [a, b, c] = square_parts(x);
            let exact = (x as f64) * (x as f64);
            assert_eq!(a as f64 + b as f64 + c as f64, exact, "x = {x}");
        }
        assert_eq!(square_parts(1.0e-12), [0.0; 3]);
        assert_eq!(square_parts(f32::NAN), [0.0; 3]);
    }

    #[test]
    fn tree_matches_definition() {
        let mut lanes = [0.0f32; LANES];
        for (i, l) in lanes.iter_mut().enumerate() {
            *l = i as f32;
        }
        assert_eq!(tree_reduce(&mut lanes), (0..256).sum::<i32>() as f32);
    }

    #[test]
    fn stats_of_known_values() {
        let x = [0.0f32, -2.0, 3.0, f32::NAN, 1.0, -0.0];
        let t = TensorStats::from_tiles(6, [reduce_tile(&x)]);
        assert_eq!((t.min, t.max, t.absmax), (-2.0, 3.0, 3.0));
        assert_eq!((t.sum, t.sum_sq, t.zeros, t.nonfinite), (2.0, 14.0, 2, 1));
        assert!((t.mean() - 0.4).abs() < 1e-12);
    }
}
