//! Fast CPU path of the `select` family: the census and histograms in
//! parallel blocks, row cuts with a linear-time selection per row. Results
//! equal the reference's (counts are integers; the cut is resolved by the
//! same host code).

use rayon::prelude::*;

use super::keys::{keys_into, Scratch};

use crate::reference::scores::Scorer;
use crate::reference::select::{count_key, select_cut, Bracket, Census, Cut, Histogram, Select};
use crate::{Result, TensorView};

/// Elements handled between two page releases.
const GROUP: usize = 1 << 24;
/// Elements one task scores at a time.
const BLOCK: usize = 1 << 16;

/// The multi-threaded CPU backend of the select family.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastCpu;

/// Runs `f` over the keys of `w`, block by block in parallel, folding into
/// per-task accumulators merged with `merge`; pages are released per group.
pub(crate) fn fold_keys<A: Send>(
    w: &TensorView,
    scorer: &Scorer,
    init: impl Fn() -> A + Sync + Send,
    f: impl Fn(&mut A, &[u32]) + Sync + Send,
    merge: impl Fn(&mut A, A) + Sync + Send,
) -> Result<A> {
    scorer.check(w)?;
    let n = w.numel();
    let size = w.float_size()?;
    let mut total = init();
    let mut g0 = 0;
    while g0 < n {
        let g1 = (g0 + GROUP).min(n);
        let part = (g0..g1)
            .step_by(BLOCK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .try_fold(
                || (init(), vec![0u32; BLOCK], Scratch::default()),
                |(mut acc, mut keys, mut scratch), b| {
                    let r = b..(b + BLOCK).min(g1);
                    let len = r.len();
                    keys_into(scorer, w, r, &mut keys[..len], &mut scratch)?;
                    f(&mut acc, &keys[..len]);
                    Ok::<_, crate::Error>((acc, keys, scratch))
                },
            )
            .map(|r| r.map(|(acc, _, _)| acc))
            .try_reduce(&init, |mut a, b| {
                merge(&mut a, b);
                Ok(a)
            })?;
        merge(&mut total, part);
        w.release(g0 * size..g1 * size);
        g0 = g1;
    }
    Ok(total)
}

impl Select for FastCpu {
    fn census(&self, w: &TensorView, scorer: &Scorer, b: Bracket) -> Result<Census> {
        fold_keys(
            w,
            scorer,
            Census::new,
            |c, keys| census_block(c, b, keys),
            |a, o| a.merge(&o),
        )
    }

    fn histogram(&self, w: &TensorView, scorer: &Scorer, hi16: Option<u32>) -> Result<Histogram> {
        fold_keys(
            w,
            scorer,
            Histogram::new,
            |h, keys| keys.iter().for_each(|&k| count_key(h, k, hi16)),
            |a, o| a.merge(&o),
        )
    }

    fn row_cuts(&self, w: &TensorView, scorer: &Scorer, k: u64) -> Result<Vec<Cut>> {
        scorer.check(w)?;
        let (rows, cols) = w.matrix_dims();
        let size = w.float_size()?;
        let mut out = vec![Cut::NONE; rows];
        let per = (GROUP / cols.max(1)).max(1);
        for (gi, group) in out.chunks_mut(per).enumerate() {
            let r0 = gi * per;
            group.par_iter_mut().enumerate().try_for_each_init(
                || (vec![0u32; cols], Scratch::default()),
                |(keys, scratch), (i, cut)| {
                    let r = r0 + i;
                    keys_into(scorer, w, r * cols..(r + 1) * cols, keys, scratch)?;
                    *cut = row_cut(keys, k);
                    Ok::<_, crate::Error>(())
                },
            )?;
            w.release(r0 * cols * size..(r0 + group.len()) * cols * size);
        }
        Ok(out)
    }
}

/// Counts a block of keys against a bracket: a branch-free counting loop
/// that vectorises, then, only when some key fell inside, a second look
/// that skips groups of 16 holding none and compacts the others without
/// branches.
fn census_block(c: &mut Census, b: Bracket, keys: &[u32]) {
    // Keys and bounds are at most 0x7fc00000, so i32 compares (one SSE2
    // instruction each) order them as u32 would.
    let (lo, hi) = (b.lo as i32, b.hi as i32);
    let is_inside = |k: u32| ((k as i32 > lo) & ((k as i32) < hi)) as u32;
    let (mut below, mut eq_lo, mut eq_hi, mut inside) = (0u32, 0u32, 0u32, 0u32);
    for &k in keys {
        let k = k as i32;
        below += (k < lo) as u32;
        eq_lo += (k == lo) as u32;
        eq_hi += (k == hi) as u32;
        inside += ((k > lo) & (k < hi)) as u32;
    }
    c.n += keys.len() as u64;
    c.below_lo += below as u64;
    c.eq_lo += eq_lo as u64;
    if b.hi != b.lo {
        c.eq_hi += eq_hi as u64;
    }
    if inside == 0 {
        return;
    }
    c.inside.reserve(inside as usize + 16);
    for g in keys.chunks(16) {
        let hits: u32 = g.iter().map(|&k| is_inside(k)).sum();
        if hits == 0 {
            continue;
        }
        let len = c.inside.len();
        let spare = &mut c.inside.spare_capacity_mut()[..16];
        let mut n = 0usize;
        for &k in g {
            spare[n.min(15)].write(k);
            n += is_inside(k) as usize;
        }
        // SAFETY: the first n ≤ 16 spare slots were written above.
        unsafe { c.inside.set_len(len + n) };
    }
}

/// The cut of one row in linear time (the keys are reordered).
fn row_cut(keys: &mut [u32], k: u64) -> Cut {
    if k == 0 {
        return Cut::NONE;
    }
    if keys.len() <= 64 {
        return select_cut(keys, k);
    }
    let (lower, &mut t, _) = keys.select_nth_unstable((k - 1) as usize);
    let below = lower.iter().filter(|&&x| x < t).count() as u64;
    Cut {
        key: t,
        ties: k - below,
    }
}
