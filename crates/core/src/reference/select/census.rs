//! Counting keys against a bracket, and resolving counts into the cut:
//! the host code every backend of the select family shares (so every
//! backend gives the same cut), and the sample that estimates the bracket.

use super::Cut;

/// A key range whose elements a census keeps individually.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bracket {
    pub lo: u32,
    pub hi: u32,
}

/// Bins of the 16-bit radix histograms.
pub const BINS: usize = 1 << 16;

/// What one counting pass learns about a scope's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Census {
    pub n: u64,
    pub below_lo: u64,
    pub eq_lo: u64,
    pub eq_hi: u64,
    /// Keys strictly between lo and hi, in no particular order.
    pub inside: Vec<u32>,
    /// More keys strictly between lo and hi, as (key, count): a backend
    /// that counts the few distinct values of a bracket (bf16 magnitudes)
    /// reports them so instead of listing every key.
    pub inside_runs: Vec<(u32, u64)>,
}

/// A 16-bit radix histogram of keys (the fallback when a bracket misses).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Counts per bin of 16 key bits.
    pub bins: Vec<u64>,
    /// OR of the other 16 bits of every counted key (0: the top-half
    /// histogram is exact, as for bf16 magnitudes).
    pub low_bits: u32,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            bins: vec![0; BINS],
            low_bits: 0,
        }
    }

    /// Adds another histogram.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a += b;
        }
        self.low_bits |= o.low_bits;
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Census {
    /// An empty census.
    pub fn new() -> Self {
        Census {
            n: 0,
            below_lo: 0,
            eq_lo: 0,
            eq_hi: 0,
            inside: Vec::new(),
            inside_runs: Vec::new(),
        }
    }

    /// Counts one key (branch-free but for the rare keys inside).
    #[inline(always)]
    pub fn add(&mut self, b: Bracket, key: u32) {
        self.n += 1;
        self.below_lo += (key < b.lo) as u64;
        self.eq_lo += (key == b.lo) as u64;
        self.eq_hi += (key == b.hi && b.hi != b.lo) as u64;
        if key > b.lo && key < b.hi {
            self.inside.push(key);
        }
    }

    /// Adds another census over the same bracket.
    pub fn merge(&mut self, o: &Census) {
        self.n += o.n;
        self.below_lo += o.below_lo;
        self.eq_lo += o.eq_lo;
        self.eq_hi += o.eq_hi;
        self.inside.extend_from_slice(&o.inside);
        self.inside_runs.extend_from_slice(&o.inside_runs);
    }

    /// Keys strictly inside the bracket, counted.
    pub fn inside_count(&self) -> u64 {
        self.inside.len() as u64 + self.inside_runs.iter().map(|r| r.1).sum::<u64>()
    }
}

impl Default for Census {
    fn default() -> Self {
        Census::new()
    }
}

/// What [`resolve_hist`] concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The cut is known.
    Cut(Cut),
    /// The k-th key has top half `hi16`; a histogram of the low halves of
    /// the keys in that bin finishes the job (`below` keys lie under it).
    NeedLow { hi16: u32, below: u64 },
}

/// The cut for the `k` smallest keys when the census's bracket holds the
/// k-th key; `None` when it missed.
pub fn resolve(c: &Census, b: Bracket, k: u64) -> Option<Cut> {
    if k == 0 {
        return Some(Cut::NONE);
    }
    if k <= c.below_lo {
        return None;
    }
    let mut need = k - c.below_lo;
    if need <= c.eq_lo {
        return Some(Cut {
            key: b.lo,
            ties: need,
        });
    }
    need -= c.eq_lo;
    if !c.inside_runs.is_empty() && need <= c.inside_count() {
        // Walk the inside keys in order, as (key, count) runs.
        let mut runs = c.inside_runs.clone();
        runs.extend(c.inside.iter().map(|&k| (k, 1)));
        runs.sort_unstable();
        let mut i = 0;
        while i < runs.len() {
            let key = runs[i].0;
            let mut count = 0;
            while i < runs.len() && runs[i].0 == key {
                count += runs[i].1;
                i += 1;
            }
            if need <= count {
                return Some(Cut { key, ties: need });
            }
            need -= count;
        }
        unreachable!("inside counts cover need");
    }
    if need <= c.inside.len() as u64 {
        let mut inside = c.inside.clone();
        let (_, &mut t, _) = inside.select_nth_unstable((need - 1) as usize);
        let below_t = inside.iter().filter(|&&x| x < t).count() as u64;
        return Some(Cut {
            key: t,
            ties: need - below_t,
        });
    }
    need -= c.inside_count();
    if b.hi != b.lo && need <= c.eq_hi {
        return Some(Cut {
            key: b.hi,
            ties: need,
        });
    }
    None
}

/// Walks a top-half histogram to the k-th key.
pub fn resolve_hist(h: &Histogram, k: u64) -> Resolved {
    if k == 0 {
        return Resolved::Cut(Cut::NONE);
    }
    let mut below = 0u64;
    for (bin, &count) in h.bins.iter().enumerate() {
        if below + count >= k {
            if h.low_bits == 0 {
                return Resolved::Cut(Cut {
                    key: (bin as u32) << 16,
                    ties: k - below,
                });
            }
            return Resolved::NeedLow {
                hi16: bin as u32,
                below,
            };
        }
        below += count;
    }
    unreachable!("k = {k} exceeds the histogram's keys")
}

/// Finishes a [`Resolved::NeedLow`] from the histogram of low halves.
pub fn resolve_low(low_hist: &[u64], hi16: u32, below: u64, k: u64) -> Cut {
    let mut acc = below;
    for (bin, &count) in low_hist.iter().enumerate() {
        if acc + count >= k {
            return Cut {
                key: (hi16 << 16) | bin as u32,
                ties: k - acc,
            };
        }
        acc += count;
    }
    unreachable!("low histogram holds fewer keys than the census said")
}

/// Chooses a bracket around the `k`-th smallest of `n` keys from a sample
/// of them (reordered in place): the sample quantile ± `sigmas` standard
/// errors.
pub fn bracket_from_sample(sample: &mut [u32], k: u64, n: u64, sigmas: f64) -> Bracket {
    if sample.is_empty() || n == 0 {
        return Bracket { lo: 0, hi: 0 };
    }
    let m = sample.len() as f64;
    let q = (k as f64 / n as f64).clamp(0.0, 1.0);
    let err = sigmas * (q * (1.0 - q) / m).sqrt() + 2.0 / m;
    let last = sample.len() - 1;
    let mut at = |p: f64| {
        let i = ((p.clamp(0.0, 1.0) * m) as usize).min(last);
        *sample.select_nth_unstable(i).1
    };
    let lo = at(q - err);
    let hi = at(q + err);
    Bracket { lo, hi }
}

/// Runs of consecutive elements a sample reads (cheap: one cache miss a
/// run), and how long each run is.
pub const SAMPLE_RUNS: usize = 1024;
/// Elements per sampled run.
pub const SAMPLE_RUN: usize = 64;

/// Starts of the sampled runs of a scope of `n` elements, for about
/// `want` samples: evenly spread runs of [`SAMPLE_RUN`] elements.
pub fn sample_runs(n: usize, want: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let runs = want.div_ceil(SAMPLE_RUN).clamp(1, SAMPLE_RUNS);
    let step = (n / runs).max(SAMPLE_RUN);
    (0..n)
        .step_by(step)
        .map(move |s| s..(s + SAMPLE_RUN).min(n))
}
