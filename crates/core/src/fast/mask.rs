//! Fast CPU path of the `mask` family. Ties of a cut are pruned in index
//! order: blocks count their ties in parallel, an exclusive prefix gives
//! each block its share, then blocks write their masks in parallel.

use rayon::prelude::*;

use super::score::{keys_into, Scratch};
use crate::reference::mask::{check_nm, mask_from_cut, nm_group, Mask};
use crate::reference::score::Scorer;
use crate::reference::select::Cut;
use crate::{Result, TensorView};

const GROUP: usize = 1 << 22;
const BLOCK: usize = 1 << 15;

pub use super::FastCpu;

impl Mask for FastCpu {
    fn apply_cut(&self, w: &TensorView, scorer: &Scorer, cut: Cut) -> Result<(Vec<u8>, u64)> {
        scorer.check(w)?;
        let n = w.numel();
        let size = w.float_size()?;
        let mut mask = vec![1u8; n];
        let mut keys = vec![0u32; GROUP.min(n)];
        let mut used = 0u64;
        let mut g0 = 0;
        while g0 < n {
            let g1 = (g0 + GROUP).min(n);
            let gk = &mut keys[..g1 - g0];
            gk.par_chunks_mut(BLOCK).enumerate().try_for_each_init(
                Scratch::default,
                |scratch, (b, out)| {
                    let s = g0 + b * BLOCK;
                    keys_into(scorer, w, s..s + out.len(), out, scratch)
                },
            )?;
            // Ties per block, then each block's first tie rank.
            let ties: Vec<u64> = gk
                .par_chunks(BLOCK)
                .map(|c| c.iter().filter(|&&k| k == cut.key).count() as u64)
                .collect();
            let mut offsets = Vec::with_capacity(ties.len());
            for t in &ties {
                offsets.push(used);
                used += t;
            }
            mask[g0..g1]
                .par_chunks_mut(BLOCK)
                .zip(gk.par_chunks(BLOCK))
                .zip(offsets.par_iter().zip(ties.par_iter()))
                .for_each(|((m, k), (&before, &here))| {
                    let left = cut.ties.saturating_sub(before);
                    if left == 0 {
                        // Every tie of this block is kept.
                        m.iter_mut()
                            .zip(k)
                            .for_each(|(m, &k)| *m = (k >= cut.key) as u8);
                    } else if left >= here {
                        // Every tie of this block is pruned.
                        m.iter_mut()
                            .zip(k)
                            .for_each(|(m, &k)| *m = (k > cut.key) as u8);
                    } else {
                        let c = Cut {
                            key: cut.key,
                            ties: left,
                        };
                        m.copy_from_slice(&mask_from_cut(k, c).0);
                    }
                });
            w.release(g0 * size..g1 * size);
            g0 = g1;
        }
        Ok((mask, used.min(cut.ties)))
    }

    fn apply_row_cuts(&self, w: &TensorView, scorer: &Scorer, cuts: &[Cut]) -> Result<Vec<u8>> {
        scorer.check(w)?;
        let (_, cols) = w.matrix_dims();
        let mut mask = vec![1u8; w.numel()];
        if cols == 0 {
            return Ok(mask);
        }
        mask.par_chunks_mut(cols)
            .zip(cuts.par_iter())
            .enumerate()
            .try_for_each_init(
                || (vec![0u32; cols], Scratch::default()),
                |(keys, scratch), (r, (m, &c))| {
                    keys_into(scorer, w, r * cols..(r + 1) * cols, keys, scratch)?;
                    m.copy_from_slice(&mask_from_cut(keys, c).0);
                    Ok::<_, crate::Error>(())
                },
            )?;
        Ok(mask)
    }

    fn nm(&self, w: &TensorView, scorer: &Scorer, n: usize, m: usize) -> Result<Vec<u8>> {
        scorer.check(w)?;
        let (_, cols) = w.matrix_dims();
        check_nm(n, m, cols)?;
        let mut mask = vec![0u8; w.numel()];
        let block = (BLOCK / m).max(1) * m;
        mask.par_chunks_mut(block).enumerate().try_for_each_init(
            || (vec![0u32; block], Scratch::default()),
            |(keys, scratch), (b, out)| {
                let s = b * block;
                let keys = &mut keys[..out.len()];
                keys_into(scorer, w, s..s + out.len(), keys, scratch)?;
                if (n, m) == (2, 4) {
                    for (k, o) in keys.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                        two_of_four(k, o);
                    }
                } else {
                    for (k, o) in keys.chunks(m).zip(out.chunks_mut(m)) {
                        nm_group(k, n, o);
                    }
                }
                Ok::<_, crate::Error>(())
            },
        )?;
        Ok(mask)
    }
}

/// 2:4 for one group, branch-free: element i is kept when fewer than two
/// others outrank it in (key, index). For i < j, j outranks i exactly when
/// k[j] ≥ k[i], and otherwise i outranks j, so six comparisons decide all
/// twelve ordered pairs.
#[inline(always)]
fn two_of_four(k: &[u32], out: &mut [u8]) {
    let c = |i: usize, j: usize| (k[j] >= k[i]) as u8;
    let (c01, c02, c03, c12, c13, c23) = (c(0, 1), c(0, 2), c(0, 3), c(1, 2), c(1, 3), c(2, 3));
    let above = [
        c01 + c02 + c03,
        1 - c01 + c12 + c13,
        2 - c02 - c12 + c23,
        3 - c03 - c13 - c23,
    ];
    for (o, a) in out.iter_mut().zip(above) {
        *o = (a < 2) as u8;
    }
}

/// How many entries of a keep-mask are 0 (pruned): 8-bit counters per
/// block of 255 bytes, so the compiler vectorizes the count.
pub fn pruned_count(keep: &[u8]) -> u64 {
    keep.chunks(255)
        .map(|block| block.iter().fold(0u8, |n, &k| n + (k == 0) as u8) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// The blocked count equals a one-by-one count at any length.
        #[test]
        fn pruned_count_counts_zero_bytes(keep in proptest::collection::vec(0u8..3, 0..1200)) {
            let want = keep.iter().filter(|&&k| k == 0).count() as u64;
            proptest::prop_assert_eq!(super::pruned_count(&keep), want);
        }
    }
}
