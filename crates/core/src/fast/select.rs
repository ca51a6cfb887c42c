//! Fast CPU path of the `select` family: the census and histograms in
//! parallel blocks, row cuts with a linear-time selection per row. Results
//! equal the reference's (counts are integers; the cut is resolved by the
//! same host code).

use rayon::prelude::*;

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
                || (init(), Vec::with_capacity(BLOCK)),
                |(mut acc, mut keys), b| {
                    scorer.keys(w, b..(b + BLOCK).min(g1), &mut keys)?;
                    f(&mut acc, &keys);
                    Ok::<_, crate::Error>((acc, keys))
                },
            )
            .map(|r| r.map(|(acc, _)| acc))
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
            |c, keys| keys.iter().for_each(|&k| c.add(b, k)),
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
                || Vec::with_capacity(cols),
                |keys, (i, cut)| {
                    let r = r0 + i;
                    scorer.keys(w, r * cols..(r + 1) * cols, keys)?;
                    *cut = row_cut(keys, k);
                    Ok::<_, crate::Error>(())
                },
            )?;
            w.release(r0 * cols * size..(r0 + group.len()) * cols * size);
        }
        Ok(out)
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
