//! CPU reference of the `mask` family: turning cuts and patterns into masks.
//!
//! A mask holds one byte per element: 1 kept, 0 pruned.
//!
//! * A [`Cut`] prunes every key below `cut.key` and the first `cut.ties`
//!   elements (in index order) whose key equals it.
//! * N:M (along the input dimension): in every group of M consecutive
//!   elements of a row, the N largest by (key, index) are kept, so among
//!   equal keys the lower index is pruned first. Rows whose length M does
//!   not divide are refused.
//! * Structured: whole rows (or columns) pruned, chosen by a cut over their
//!   sums of squares; the mask repeats the decision along the row (column).

use crate::{DType, Error, Result, TensorView};

use super::score::Scorer;
use super::select::Cut;

/// The mask a cut gives on `keys` (in index order), and how many of the
/// cut's ties it used (fewer than `cut.ties` when the keys hold fewer).
pub fn mask_from_cut(keys: &[u32], cut: Cut) -> (Vec<u8>, u64) {
    // Everything at or above the cut key is kept; then the first `ties`
    // elements equal to it are pruned, in index order.
    let mut mask: Vec<u8> = keys.iter().map(|&k| (k >= cut.key) as u8).collect();
    let mut ties = 0u64;
    if cut.ties > 0 {
        for (m, &k) in mask.iter_mut().zip(keys) {
            if k == cut.key {
                *m = 0;
                ties += 1;
                if ties == cut.ties {
                    break;
                }
            }
        }
    }
    (mask, ties)
}

/// Which of `scores` (for example row sums of squares) survive when the
/// `k` smallest by (score, index) are pruned: 1 kept, 0 pruned.
pub fn structured_keep(scores: &[f32], k: u64) -> Vec<u8> {
    let keys: Vec<u32> = scores.iter().map(|&s| super::score::key_of(s)).collect();
    mask_from_cut(&keys, super::select::select_cut(&keys, k)).0
}

/// Checks an N:M pattern against a row length; the error names the reason.
pub fn check_nm(n: usize, m: usize, cols: usize) -> Result<()> {
    if !(1..=16).contains(&m) || n >= m {
        return Err(Error::Invalid(format!(
            "pattern {n}:{m} must have 0 < N < M ≤ 16"
        )));
    }
    if !cols.is_multiple_of(m) {
        return Err(Error::Invalid(format!(
            "rows of {cols} elements cannot be cut into groups of {m} (pattern {n}:{m})"
        )));
    }
    Ok(())
}

/// The N:M mask of one group of `keys` (at most 16): the N largest by
/// (key, index) kept.
pub fn nm_group(keys: &[u32], n: usize, out: &mut [u8]) {
    let m = keys.len();
    for i in 0..m {
        // Element i is kept when fewer than N elements rank above it.
        let above = (0..m)
            .filter(|&j| keys[j] > keys[i] || (keys[j] == keys[i] && j > i))
            .count();
        out[i] = (above < n) as u8;
    }
}

/// The N:M mask of `keys` laid out in rows of `cols`.
pub fn nm_mask(keys: &[u32], cols: usize, n: usize, m: usize) -> Result<Vec<u8>> {
    check_nm(n, m, cols)?;
    let mut mask = vec![0u8; keys.len()];
    for (k, o) in keys.chunks(m).zip(mask.chunks_mut(m)) {
        nm_group(k, n, o);
    }
    Ok(mask)
}

/// Repeats a per-row decision (`keep[r]`) along rows of `cols` elements.
pub fn expand_rows(keep: &[u8], cols: usize) -> Vec<u8> {
    keep.iter()
        .flat_map(|&k| std::iter::repeat_n(k, cols))
        .collect()
}

/// Repeats a per-column decision (`keep[c]`) down `rows` rows.
pub fn expand_cols(keep: &[u8], rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(keep.len() * rows);
    for _ in 0..rows {
        out.extend_from_slice(keep);
    }
    out
}

/// Copies the bytes of a tensor with the pruned elements set to +0.
pub fn zero_pruned(dtype: DType, bytes: &[u8], mask: &[u8]) -> Vec<u8> {
    let size = dtype.bits() / 8;
    let mut out = bytes.to_vec();
    // Branch-free on whole elements where the buffer allows it.
    match size {
        2 => {
            if let Ok(e) = bytemuck::try_cast_slice_mut::<u8, u16>(&mut out) {
                for (e, &m) in e.iter_mut().zip(mask) {
                    *e &= 0u16.wrapping_sub((m != 0) as u16);
                }
                return out;
            }
        }
        4 => {
            if let Ok(e) = bytemuck::try_cast_slice_mut::<u8, u32>(&mut out) {
                for (e, &m) in e.iter_mut().zip(mask) {
                    *e &= 0u32.wrapping_sub((m != 0) as u32);
                }
                return out;
            }
        }
        _ => {}
    }
    for (e, &m) in out.chunks_exact_mut(size).zip(mask) {
        if m == 0 {
            e.fill(0);
        }
    }
    out
}

/// One backend's implementation of the mask family.
pub trait Mask {
    /// The mask of `w` under `cut`, and the ties it used.
    fn apply_cut(&self, w: &TensorView, scorer: &Scorer, cut: Cut) -> Result<(Vec<u8>, u64)>;
    /// One cut per row.
    fn apply_row_cuts(&self, w: &TensorView, scorer: &Scorer, cuts: &[Cut]) -> Result<Vec<u8>>;
    /// The N:M mask along rows.
    fn nm(&self, w: &TensorView, scorer: &Scorer, n: usize, m: usize) -> Result<Vec<u8>>;
}

pub use super::Reference;

fn keys(w: &TensorView, scorer: &Scorer) -> Result<Vec<u32>> {
    let mut k = Vec::new();
    scorer.keys(w, 0..w.numel(), &mut k)?;
    Ok(k)
}

impl Mask for Reference {
    fn apply_cut(&self, w: &TensorView, scorer: &Scorer, cut: Cut) -> Result<(Vec<u8>, u64)> {
        Ok(mask_from_cut(&keys(w, scorer)?, cut))
    }

    fn apply_row_cuts(&self, w: &TensorView, scorer: &Scorer, cuts: &[Cut]) -> Result<Vec<u8>> {
        let (_, cols) = w.matrix_dims();
        let k = keys(w, scorer)?;
        Ok(k.chunks(cols.max(1))
            .zip(cuts)
            .flat_map(|(row, &c)| mask_from_cut(row, c).0)
            .collect())
    }

    fn nm(&self, w: &TensorView, scorer: &Scorer, n: usize, m: usize) -> Result<Vec<u8>> {
        let (_, cols) = w.matrix_dims();
        nm_mask(&keys(w, scorer)?, cols, n, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_prunes_ties_by_index() {
        let (m, used) = mask_from_cut(&[3, 1, 3, 3, 0], Cut { key: 3, ties: 2 });
        assert_eq!(m, vec![0, 0, 0, 1, 0]);
        assert_eq!(used, 2);
    }

    #[test]
    fn two_four_keeps_two_largest() {
        let m = nm_mask(&[1, 4, 2, 3, 5, 5, 5, 5], 8, 2, 4).unwrap();
        assert_eq!(m, vec![0, 1, 0, 1, 0, 0, 1, 1]);
        assert!(nm_mask(&[0; 6], 6, 2, 4).is_err());
        assert!(nm_mask(&[0; 8], 8, 4, 4).is_err());
    }

    #[test]
    fn zeroing_keeps_dtype_layout() {
        let out = zero_pruned(DType::BF16, &[1, 2, 3, 4, 5, 6], &[1, 0, 1]);
        assert_eq!(out, vec![1, 2, 0, 0, 5, 6]);
    }
}
