//! CPU reference of the `select` family: which weights a scope prunes.
//!
//! # Specification
//!
//! In a scope (a row, a tensor, or every selected tensor of a checkpoint in
//! file order) of `n` elements with keys (see [`super::score`]), exactly
//! `k = round(s·n)` elements are pruned: the `k` smallest in the total order
//! (key, flat index). Equal keys are broken by index, lower index pruned
//! first. The answer is a [`Cut`]: every key below `cut.key` is pruned, and
//! of the elements whose key equals `cut.key`, the first `cut.ties` in index
//! order.
//!
//! The reference finds the cut by sorting. The fast path and the GPU find
//! the same cut with one counting pass ([`Census`]) over a bracket of keys
//! estimated from a sample, falling back to exact radix histograms (16-bit
//! digits) when the bracket misses; all of them resolve the counts with the
//! same host code ([`resolve`]), so every backend gives the same cut.

use crate::{Result, TensorView};

use super::score::Scorer;

/// Number of elements pruned out of `n` at sparsity `s`: round(s·n), halves
/// away from zero.
pub fn prune_count(sparsity: f64, n: u64) -> u64 {
    ((sparsity * n as f64).round() as u64).min(n)
}

/// Where a scope is cut; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Cut {
    /// Keys below this are pruned.
    pub key: u32,
    /// Elements with exactly this key pruned, in index order.
    pub ties: u64,
}

impl Cut {
    /// Prunes nothing.
    pub const NONE: Cut = Cut { key: 0, ties: 0 };
}

/// The cut pruning the `k` smallest of `keys` (reference: a sort).
pub fn select_cut(keys: &[u32], k: u64) -> Cut {
    if k == 0 {
        return Cut::NONE;
    }
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    let t = sorted[(k - 1) as usize];
    let below = sorted.partition_point(|&x| x < t) as u64;
    Cut {
        key: t,
        ties: k - below,
    }
}

mod census;

pub use census::*;

/// One backend's implementation of the select family.
pub trait Select {
    /// Counts the keys of `w` against bracket `b`.
    fn census(&self, w: &TensorView, scorer: &Scorer, b: Bracket) -> Result<Census>;
    /// Histogram of the keys of `w`: of their top 16 bits when `hi16` is
    /// `None`, else of the low 16 bits of the keys whose top bits are `hi16`.
    fn histogram(&self, w: &TensorView, scorer: &Scorer, hi16: Option<u32>) -> Result<Histogram>;
    /// The cut of every row for `k` pruned per row.
    fn row_cuts(&self, w: &TensorView, scorer: &Scorer, k: u64) -> Result<Vec<Cut>>;
}

pub use super::Reference;

fn all_keys(w: &TensorView, scorer: &Scorer) -> Result<Vec<u32>> {
    let mut keys = Vec::new();
    scorer.keys(w, 0..w.numel(), &mut keys)?;
    Ok(keys)
}

impl Select for Reference {
    fn census(&self, w: &TensorView, scorer: &Scorer, b: Bracket) -> Result<Census> {
        let mut c = Census::new();
        for k in all_keys(w, scorer)? {
            c.add(b, k);
        }
        Ok(c)
    }

    fn histogram(&self, w: &TensorView, scorer: &Scorer, hi16: Option<u32>) -> Result<Histogram> {
        let mut h = Histogram::new();
        for k in all_keys(w, scorer)? {
            count_key(&mut h, k, hi16);
        }
        Ok(h)
    }

    fn row_cuts(&self, w: &TensorView, scorer: &Scorer, k: u64) -> Result<Vec<Cut>> {
        let (_, cols) = w.matrix_dims();
        let keys = all_keys(w, scorer)?;
        Ok(keys
            .chunks(cols.max(1))
            .map(|row| select_cut(row, k))
            .collect())
    }
}

/// Counts one key into a histogram (see [`Select::histogram`]).
#[inline(always)]
pub fn count_key(h: &mut Histogram, key: u32, hi16: Option<u32>) {
    match hi16 {
        None => {
            h.bins[(key >> 16) as usize] += 1;
            h.low_bits |= key & 0xffff;
        }
        Some(top) if key >> 16 == top => h.bins[(key & 0xffff) as usize] += 1,
        Some(_) => {}
    }
}

/// Whether every key of `w` has zero low 16 bits (bf16 magnitudes), so that
/// the top-half histogram alone finds the cut in one pass.
pub fn exact_top_half(w: &TensorView, scorer: &Scorer) -> bool {
    scorer.method == super::score::Method::Magnitude && w.dtype() == crate::DType::BF16
}

/// Finishes a cut from a backend's histograms when the bracket missed.
fn cut_by_histograms(s: &dyn Select, w: &TensorView, scorer: &Scorer, k: u64) -> Result<Cut> {
    let h = s.histogram(w, scorer, None)?;
    Ok(match resolve_hist(&h, k) {
        Resolved::Cut(c) => c,
        Resolved::NeedLow { hi16, below } => {
            let low = s.histogram(w, scorer, Some(hi16))?;
            resolve_low(&low.bins, hi16, below, k)
        }
    })
}

/// Samples about `want` keys of `w` in evenly spread runs (host side, any
/// backend).
pub fn sample_keys(w: &TensorView, scorer: &Scorer, want: usize, out: &mut Vec<u32>) -> Result<()> {
    let mut run = Vec::with_capacity(SAMPLE_RUN);
    for r in sample_runs(w.numel(), want) {
        scorer.keys(w, r, &mut run)?;
        out.extend_from_slice(&run);
    }
    Ok(())
}

/// The cut pruning the `k` smallest keys of one tensor, found with the
/// backend's census: one pass when the sampled bracket holds the answer
/// (almost always), two or three otherwise.
pub fn tensor_cut(s: &dyn Select, w: &TensorView, scorer: &Scorer, k: u64) -> Result<Cut> {
    if k == 0 {
        return Ok(Cut::NONE);
    }
    let mut sample = Vec::new();
    sample_keys(w, scorer, SAMPLE_RUNS * SAMPLE_RUN, &mut sample)?;
    // bf16 magnitudes take few values: a narrower bracket (3 standard
    // errors) is counted value by value; a miss falls back to the exact
    // one-pass histogram.
    let sigmas = if exact_top_half(w, scorer) { 3.0 } else { 6.0 };
    let b = bracket_from_sample(&mut sample, k, w.numel() as u64, sigmas);
    let census = s.census(w, scorer, b)?;
    match resolve(&census, b, k) {
        Some(c) => Ok(c),
        None => {
            tracing::debug!("sampled bracket missed the cut; using radix histograms");
            cut_by_histograms(s, w, scorer, k)
        }
    }
}

/// One tensor of a global selection: its view and how it is scored.
pub type Scored<'a> = (TensorView<'a>, Scorer<'a>);

/// The cut pruning the `k` smallest keys over several tensors taken as one
/// scope, in the given order (flat index runs on from one tensor to the
/// next). One pass over every tensor when the sampled bracket holds the
/// answer; histograms accumulate across tensors otherwise.
pub fn global_cut(s: &dyn Select, items: &[Scored], k: u64) -> Result<Cut> {
    if k == 0 {
        return Ok(Cut::NONE);
    }
    let total: u64 = items.iter().map(|(w, _)| w.numel() as u64).sum();
    if items.iter().all(|(w, s)| exact_top_half(w, s)) {
        // One histogram pass over every tensor is exact for bf16 magnitudes.
        let mut h = Histogram::new();
        for (w, scorer) in items {
            h.merge(&s.histogram(w, scorer, None)?);
        }
        if let Resolved::Cut(c) = resolve_hist(&h, k) {
            return Ok(c);
        }
    }
    let mut sample = Vec::new();
    for (w, scorer) in items {
        let want = ((SAMPLE_RUNS * SAMPLE_RUN) as u64 * w.numel() as u64 / total.max(1)).max(1);
        sample_keys(w, scorer, want as usize, &mut sample)?;
    }
    let b = bracket_from_sample(&mut sample, k, total, 6.0);
    let mut census = Census::new();
    for (w, scorer) in items {
        census.merge(&s.census(w, scorer, b)?);
    }
    if let Some(c) = resolve(&census, b, k) {
        return Ok(c);
    }
    tracing::warn!("sampled bracket missed the global cut; reading the tensors again");
    let mut h = Histogram::new();
    for (w, scorer) in items {
        h.merge(&s.histogram(w, scorer, None)?);
    }
    Ok(match resolve_hist(&h, k) {
        Resolved::Cut(c) => c,
        Resolved::NeedLow { hi16, below } => {
            let mut low = Histogram::new();
            for (w, scorer) in items {
                low.merge(&s.histogram(w, scorer, Some(hi16))?);
            }
            resolve_low(&low.bins, hi16, below, k)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_counts_ties_in_order() {
        let keys = [5, 1, 3, 3, 3, 9, 0];
        assert_eq!(select_cut(&keys, 0), Cut::NONE);
        assert_eq!(select_cut(&keys, 1), Cut { key: 0, ties: 1 });
        assert_eq!(select_cut(&keys, 3), Cut { key: 3, ties: 1 });
        assert_eq!(select_cut(&keys, 5), Cut { key: 3, ties: 3 });
        assert_eq!(select_cut(&keys, 7), Cut { key: 9, ties: 1 });
        assert_eq!(prune_count(0.5, 7), 4);
        assert_eq!(prune_count(0.3, 10), 3);
    }

    #[test]
    fn resolve_agrees_with_sorting_for_any_bracket() {
        let keys: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % 613 * 70_001).collect();
        for k in [1u64, 17, 2500, 4999, 5000] {
            let want = select_cut(&keys, k);
            for b in [
                Bracket {
                    lo: 0,
                    hi: u32::MAX,
                },
                Bracket { lo: 5, hi: 6 },
                Bracket {
                    lo: want.key,
                    hi: want.key,
                },
                Bracket {
                    lo: 70_001 * 100,
                    hi: 70_001 * 400,
                },
            ] {
                let mut c = Census::new();
                keys.iter().for_each(|&x| c.add(b, x));
                let by_hist = || {
                    let mut h = Histogram::new();
                    keys.iter().for_each(|&x| count_key(&mut h, x, None));
                    match resolve_hist(&h, k) {
                        Resolved::Cut(c) => c,
                        Resolved::NeedLow { hi16, below } => {
                            let mut low = Histogram::new();
                            keys.iter()
                                .for_each(|&x| count_key(&mut low, x, Some(hi16)));
                            resolve_low(&low.bins, hi16, below, k)
                        }
                    }
                };
                assert_eq!(by_hist(), want, "k = {k}, histograms");
                let got = resolve(&c, b, k).unwrap_or_else(by_hist);
                assert_eq!(got, want, "k = {k}, bracket {b:?}");
            }
        }
    }

    #[test]
    fn runs_and_listed_keys_resolve_together() {
        let b = Bracket { lo: 5, hi: 100 };
        let mut c = Census::new();
        for k in [1, 5, 5, 10, 10, 10, 10, 10, 15, 20, 100] {
            c.add(b, k);
        }
        // Move the 10s into runs split across two entries, as merged
        // censuses report them.
        c.inside.retain(|&k| k != 10);
        c.inside_runs = vec![(10, 2), (20, 0), (10, 3)];
        c.inside.retain(|&k| k != 20);
        c.inside.push(20);
        let keys = [1u32, 5, 5, 10, 10, 10, 10, 10, 15, 20, 100];
        // k = 1 lies below the bracket: a miss.
        assert_eq!(resolve(&c, b, 1), None);
        for k in 2..=keys.len() as u64 {
            assert_eq!(resolve(&c, b, k), Some(select_cut(&keys, k)), "k = {k}");
        }
    }
}
