//! Fast CPU path of the `select` family: the census and histograms in
//! parallel blocks, row cuts with a linear-time selection per row. Results
//! equal the reference's (counts are integers; the cut is resolved by the
//! same host code).

use rayon::prelude::*;

use super::score::{keys_into, magnitude_key, Scratch};

use crate::reference::score::{Method, Scorer};
use crate::reference::select::{count_key, select_cut, Bracket, Census, Cut, Histogram, Select};
use crate::{DType, Result, TensorView};

/// Elements handled between two page releases.
const GROUP: usize = 1 << 24;
/// Elements one task scores at a time.
const BLOCK: usize = 1 << 16;

pub use super::FastCpu;

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
        if scorer.method == Method::Magnitude {
            // The common case reads the weights' own bits, no key buffer.
            match w.dtype() {
                DType::BF16 => {
                    if let Ok(h) = bytemuck::try_cast_slice::<u8, u16>(w.bytes()) {
                        if let Some(c) = bf16_census(w, h, b) {
                            return Ok(c);
                        }
                        return Ok(census_raw(w, h, b, |h| magnitude_key((h as u32) << 16)));
                    }
                }
                DType::F32 => {
                    if let Ok(x) = bytemuck::try_cast_slice::<u8, u32>(w.bytes()) {
                        return Ok(census_raw(w, x, b, magnitude_key));
                    }
                }
                _ => {}
            }
        }
        fold_keys(
            w,
            scorer,
            Census::new,
            |c, keys| census_any(c, b, keys, |k| k),
            |a, o| a.merge(&o),
        )
    }

    fn histogram(&self, w: &TensorView, scorer: &Scorer, hi16: Option<u32>) -> Result<Histogram> {
        if let (None, Method::Magnitude, DType::BF16) = (hi16, scorer.method, w.dtype()) {
            if let Ok(h) = bytemuck::try_cast_slice::<u8, u16>(w.bytes()) {
                return Ok(bf16_magnitude_histogram(w, h));
            }
        }
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

/// Counts a block of elements against a bracket, `key` scoring each one,
/// sixteen at a time: branch-free counting that vectorises, with a flag per
/// group of sixteen that holds a key inside the bracket; only flagged
/// groups are looked at again, and compacted without branches.
#[inline(always)]
fn census_block<T: Copy>(c: &mut Census, b: Bracket, elems: &[T], key: impl Fn(T) -> u32) {
    // Keys and bounds are at most 0x7fc00000, so i32 compares (one SSE2
    // instruction each) order them as u32 would.
    let (lo, hi) = (b.lo as i32, b.hi as i32);
    let is_inside = |k: u32| ((k as i32 > lo) & ((k as i32) < hi)) as u32;
    let (mut below, mut eq_lo, mut eq_hi, mut inside) = (0u32, 0u32, 0u32, 0u32);
    let mut flags = vec![0u8; elems.len() / 16];
    let groups = elems.chunks_exact(16);
    let rest = groups.remainder();
    for (g, flag) in groups.zip(flags.iter_mut()) {
        let mut hit = 0u32;
        for &e in g {
            let k = key(e) as i32;
            below += (k < lo) as u32;
            eq_lo += (k == lo) as u32;
            eq_hi += (k == hi) as u32;
            let ins = ((k > lo) & (k < hi)) as u32;
            inside += ins;
            hit |= ins;
        }
        *flag = hit as u8;
    }
    for &e in rest {
        let k = key(e);
        let ki = k as i32;
        below += (ki < lo) as u32;
        eq_lo += (ki == lo) as u32;
        eq_hi += (ki == hi) as u32;
        if is_inside(k) == 1 {
            inside += 1;
            c.inside.push(k);
        }
    }
    c.n += elems.len() as u64;
    c.below_lo += below as u64;
    c.eq_lo += eq_lo as u64;
    if b.hi != b.lo {
        c.eq_hi += eq_hi as u64;
    }
    if inside == 0 {
        return;
    }
    c.inside.reserve(inside as usize + 16);
    for (g, _) in elems.chunks_exact(16).zip(&flags).filter(|(_, f)| **f != 0) {
        let len = c.inside.len();
        let spare = &mut c.inside.spare_capacity_mut()[..16];
        let mut n = 0usize;
        for &e in g {
            let k = key(e);
            spare[n.min(15)].write(k);
            n += is_inside(k) as usize;
        }
        // SAFETY: the first n ≤ 16 spare slots were written above.
        unsafe { c.inside.set_len(len + n) };
    }
}

/// The top-half histogram of bf16 magnitudes, read straight from the raw
/// halves (a bf16 magnitude key has no low bits, so it is exact). A bf16
/// magnitude has 15 bits, so each table has 32768 bins; four interleaved
/// tables per task keep consecutive increments independent.
fn bf16_magnitude_histogram(w: &TensorView, halves: &[u16]) -> Histogram {
    const BINS15: usize = 1 << 15;
    let bin = |x: u16| (magnitude_key((x as u32) << 16) >> 16) as usize;
    let mut total = Histogram::new();
    for (gi, group) in halves.chunks(GROUP).enumerate() {
        let tables = group
            .par_chunks(BLOCK)
            .fold(
                || vec![0u32; 4 * BINS15],
                |mut t, block| {
                    let quads = block.chunks_exact(4);
                    for &x in quads.remainder() {
                        t[bin(x)] += 1;
                    }
                    for q in quads {
                        t[bin(q[0])] += 1;
                        t[BINS15 + bin(q[1])] += 1;
                        t[2 * BINS15 + bin(q[2])] += 1;
                        t[3 * BINS15 + bin(q[3])] += 1;
                    }
                    t
                },
            )
            .reduce(
                || vec![0u32; 4 * BINS15],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        for (i, t) in total.bins[..BINS15].iter_mut().enumerate() {
            *t += (0..4).map(|q| tables[q * BINS15 + i] as u64).sum::<u64>();
        }
        let g0 = gi * GROUP;
        w.release(g0 * 2..(g0 + group.len()) * 2);
    }
    total
}

/// Most distinct bf16 values a bracket may span for [`bf16_census`].
const BF16_VALUES: usize = 6;
/// Elements counted in 16-bit lanes before widening (no lane overflows).
const LANE_RUN: usize = 4096;

/// Canonical 15-bit magnitude of a bf16 (NaN made 0x7fc0).
#[inline(always)]
fn bf16_magnitude(h: u16) -> u16 {
    let m = h & 0x7fff;
    if m > 0x7f80 {
        0x7fc0
    } else {
        m
    }
}

/// Counts of one block: below the bracket, and equal to each value.
fn bf16_count(block: &[u16], lo: u16, values: &[u16; BF16_VALUES]) -> (u64, [u64; BF16_VALUES]) {
    let mut below = 0u64;
    let mut eq = [0u64; BF16_VALUES];
    for run in block.chunks(LANE_RUN) {
        // 16-bit accumulators: sixteen lanes to a 256-bit vector.
        let mut b16 = 0u16;
        let mut e16 = [0u16; BF16_VALUES];
        for &h in run {
            let m = bf16_magnitude(h);
            b16 += (m < lo) as u16;
            for j in 0..BF16_VALUES {
                e16[j] += (m == values[j]) as u16;
            }
        }
        below += b16 as u64;
        eq.iter_mut().zip(e16).for_each(|(e, x)| *e += x as u64);
    }
    (below, eq)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn bf16_count_avx2(
    block: &[u16],
    lo: u16,
    values: &[u16; BF16_VALUES],
) -> (u64, [u64; BF16_VALUES]) {
    bf16_count(block, lo, values)
}

/// The census of bf16 magnitudes when the bracket spans at most
/// [`BF16_VALUES`] bf16 values: each value gets its own counter, so one
/// branch-free loop in 16-bit lanes counts everything and nothing is
/// compacted. `None` when the bracket is wider (the general census runs).
fn bf16_census(w: &TensorView, halves: &[u16], b: Bracket) -> Option<Census> {
    if b.lo & 0xffff != 0 || b.hi & 0xffff != 0 {
        return None;
    }
    let (lo, hi) = ((b.lo >> 16) as u16, (b.hi >> 16) as u16);
    let span = (hi - lo) as usize + 1;
    if span > BF16_VALUES {
        return None;
    }
    // values[j] = lo + j for j < span; spare slots repeat hi (ignored).
    let mut values = [hi; BF16_VALUES];
    for (j, v) in values.iter_mut().enumerate().take(span) {
        *v = lo + j as u16;
    }
    let count = |block: &[u16]| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { bf16_count_avx2(block, lo, &values) };
        }
        bf16_count(block, lo, &values)
    };
    let mut below = 0u64;
    let mut eq = [0u64; BF16_VALUES];
    for (gi, group) in halves.chunks(GROUP).enumerate() {
        let (gb, ge) = group.par_chunks(BLOCK).map(count).reduce(
            || (0, [0u64; BF16_VALUES]),
            |(a, mut x), (c, y)| {
                x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
                (a + c, x)
            },
        );
        below += gb;
        eq.iter_mut().zip(ge).for_each(|(e, g)| *e += g);
        let g0 = gi * GROUP;
        w.release(g0 * 2..(g0 + group.len()) * 2);
    }
    let mut c = Census::new();
    c.n = halves.len() as u64;
    c.below_lo = below;
    c.eq_lo = eq[0];
    if span > 1 {
        c.eq_hi = eq[span - 1];
        c.inside_runs = (1..span - 1)
            .map(|j| (((lo as u32) + j as u32) << 16, eq[j]))
            .filter(|r| r.1 > 0)
            .collect();
    }
    Some(c)
}

/// [`census_block`] compiled for AVX2 (eight lanes instead of SSE2's four),
/// chosen at run time by [`census_any`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn census_block_avx2<T: Copy>(c: &mut Census, b: Bracket, elems: &[T], key: impl Fn(T) -> u32) {
    census_block(c, b, elems, key)
}

/// [`census_block`] with the widest vectors this CPU has.
#[inline(always)]
fn census_any<T: Copy>(c: &mut Census, b: Bracket, elems: &[T], key: impl Fn(T) -> u32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { census_block_avx2(c, b, elems, key) };
        return;
    }
    census_block(c, b, elems, key)
}

/// The census of magnitudes read straight from the raw elements (`key`
/// turns one into its magnitude key), no key buffer in between.
fn census_raw<T: bytemuck::Pod + Sync>(
    w: &TensorView,
    elems: &[T],
    b: Bracket,
    key: impl Fn(T) -> u32 + Sync + Copy,
) -> Census {
    let size = std::mem::size_of::<T>();
    let mut total = Census::new();
    for (gi, group) in elems.chunks(GROUP).enumerate() {
        let part = group
            .par_chunks(BLOCK)
            .fold(Census::new, |mut c, block| {
                census_any(&mut c, b, block, key);
                c
            })
            .reduce(Census::new, |mut a, o| {
                a.merge(&o);
                a
            });
        total.merge(&part);
        let g0 = gi * GROUP;
        w.release(g0 * size..(g0 + group.len()) * size);
    }
    total
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
