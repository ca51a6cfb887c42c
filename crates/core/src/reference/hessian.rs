//! CPU reference of the `hessian` family: GPTQ (Frantar et al. 2022) and
//! SparseGPT (Frantar & Alistarh 2023), one optimal-brain-surgeon column
//! sweep that quantizes, prunes, or both, over a layer's weight W [out, in]
//! and the Gram matrix H = XᵀX of its inputs over the calibration tokens.
//!
//! # Specification
//!
//! * **Factor** ([`factor`]). Inputs with H_jj = 0 are dead: their column of
//!   W is zeroed and H_jj set to 1. With activation order, columns are
//!   processed in decreasing H_jj (ties by index) and H is permuted alike.
//!   Damping λ = `dampening` · mean(diag H) is added to the diagonal, and U
//!   is the upper Cholesky factor of (H + λI)⁻¹ (H⁻¹ = UᵀU). The scale of H
//!   does not matter: the sweep only uses e/U_pp · U_p·, which is invariant,
//!   so the unnormalised XᵀX of `shears calibrate` serves as is. A matrix
//!   that is not positive definite after damping is refused (raise the
//!   damping).
//! * **Sweep** ([`solve`]). Columns in processing order, in blocks of
//!   `block`. In a block: unstructured sparsity picks, over the block's
//!   rows × columns, the k = round(s · size) weights of least w²/U_pp²
//!   (ties by row-major index within the block) with the values as they
//!   stand when the block starts; an N:M pattern picks, when column p with
//!   p mod M = 0 is reached, the M − N least w²/U_pp² of each row's M
//!   columns; a fixed mask (pruning by another method) is used as given.
//!   Then each column p in turn: its quantized value (or 0 when pruned, or
//!   itself when only pruning) q, the error e = (w − q)/U_pp, and
//!   w_k −= e·U_pk for the later columns k of the block; after the block,
//!   the same for the columns after it, all at once (W −= E·U[block, rest]).
//! * **Scales** (compressed-tensors' rule,
//!   [`crate::reference::quant::qparams`]; pruned entries and dead inputs
//!   counted as 0). [`GroupScales::Upfront`] (the default, as
//!   llm-compressor 0.14's observer): every group's from the weight before
//!   the sweep. [`GroupScales::AsReached`]: a group's when its first column
//!   is reached, from its values as they stand then (they have absorbed the
//!   updates of the columns before). Per-channel scales are the same either
//!   way (the whole row, at column 0). With static activation order the
//!   groups are the stored ones, scattered in processing order, so their
//!   scales are always computed up front. With group activation order,
//!   groups are consecutive in processing order and `g_idx` maps each
//!   stored input to its group.
//! * **Arithmetic.** W and U in f32 as llm-compressor computes them; the
//!   factor in f64 here (the fast path and the GPU factor in f32, so
//!   backends agree within stated tolerances, not bytes).

use super::gram::{GramSum, RefGram};
use super::quant::{dequantize, qparams, quantize, QParams, QuantSpec, Quantized, Rounding};
use crate::{DType, Error, Result};

/// The order columns are processed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActOrder {
    /// Stored order.
    #[default]
    None,
    /// Decreasing H_jj; groups (and their scales) as stored.
    Static,
    /// Decreasing H_jj; groups formed in that order (`g_idx` written).
    Group,
}

/// The inverse factor of one input's Hessian, shared by every weight that
/// reads that input (q/k/v, gate/up).
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub n: usize,
    /// Upper Cholesky factor of the damped, permuted H⁻¹, [n, n] row-major
    /// (below the diagonal: zeros).
    pub u: Vec<f32>,
    /// Inputs with H_jj = 0, in stored order.
    pub dead: Vec<bool>,
    /// The stored column processed p-th.
    pub order: Vec<usize>,
    pub act_order: ActOrder,
}

/// How a sweep prunes.
#[derive(Debug, Clone, Copy)]
pub enum Sparsify<'a> {
    /// A mask made by another method (1 = kept), stored order.
    Keep(&'a [u8]),
    /// SparseGPT: this fraction of each block's weights.
    Unstructured(f64),
    /// SparseGPT: keep N of every M consecutive inputs.
    Pattern { n: usize, m: usize },
}

/// When a sweep computes its group scales and zero points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupScales {
    /// From the weight before the sweep (llm-compressor 0.14's observer).
    #[default]
    Upfront,
    /// When each group's first column is reached, from the values as they
    /// stand then (older llm-compressor, AutoGPTQ).
    AsReached,
}

/// What a sweep quantizes to.
#[derive(Debug, Clone, Copy)]
pub struct QuantJob {
    pub spec: QuantSpec,
    pub rounding: Rounding,
    /// The weight's dtype (scales are stored in it).
    pub dtype: DType,
    pub scales: GroupScales,
}

/// One sweep over one weight.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub quant: Option<QuantJob>,
    pub prune: Option<Sparsify<'a>>,
    /// Columns per lazy-update block.
    pub block: usize,
}

/// What a sweep leaves.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Solved {
    /// Ŵ [rows, cols] in stored order: the dequantized codes, or the
    /// updated weights with pruned ones exactly 0.
    pub values: Vec<f32>,
    /// Codes in stored order; parameters [rows, groups] (in processing
    /// order of groups under group activation order).
    pub quantized: Option<Quantized>,
    /// Group of each stored input (group activation order only).
    pub g_idx: Option<Vec<i32>>,
    /// The mask (1 = kept), when pruning.
    pub keep: Option<Vec<u8>>,
}

/// The hessian family on one backend.
pub trait Hessian: Sync {
    /// Short name of the backend, for reports.
    fn backend(&self) -> &'static str;

    /// The inverse factor of the Gram matrix `gram` [n, n]; see the module
    /// docs.
    fn factor(&self, gram: &[f32], n: usize, dampening: f64, order: ActOrder) -> Result<Factor>;

    /// GPTQ / SparseGPT over `w` [rows, f.n]; see the module docs.
    fn solve(&self, w: &[f32], rows: usize, f: &Factor, job: &Job) -> Result<Solved>;

    /// tr((W − Ŵ) H (W − Ŵ)ᵀ) / tr(W H Wᵀ) of each candidate Ŵ: the output
    /// error over the calibration tokens that GPTQ and SparseGPT minimise,
    /// relative.
    fn weighted_errors(
        &self,
        w: &[f32],
        candidates: &[&[f32]],
        rows: usize,
        gram: &[f32],
    ) -> Result<Vec<f64>>;

    /// A running XᵀX over inputs of width `n` ([`super::gram`]).
    fn gram(&self, n: usize) -> Result<Box<dyn GramSum + '_>>;

    /// [`Hessian::weighted_errors`] of one candidate.
    fn weighted_error(&self, w: &[f32], what: &[f32], rows: usize, gram: &[f32]) -> Result<f64> {
        Ok(self.weighted_errors(w, &[what], rows, gram)?[0])
    }
}

/// Checks a Gram matrix and returns the dead inputs and the processing
/// order.
pub fn prepare(gram: &[f32], n: usize, order: ActOrder) -> Result<(Vec<bool>, Vec<usize>)> {
    if gram.len() != n * n {
        return Err(Error::Invalid(format!(
            "the Gram matrix holds {} values, expected {n}×{n}",
            gram.len()
        )));
    }
    if let Some(i) = gram.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "the Gram matrix holds a non-finite value at [{}, {}]",
            i / n,
            i % n
        )));
    }
    let diag: Vec<f32> = (0..n).map(|j| gram[j * n + j]).collect();
    let dead: Vec<bool> = diag.iter().map(|&d| d <= 0.0).collect();
    let mut idx: Vec<usize> = (0..n).collect();
    if order != ActOrder::None {
        // Decreasing H_jj, ties by index (a stable sort).
        idx.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    }
    Ok((dead, idx))
}

/// The damped, permuted H in f64 (dead diagonals set to 1).
pub fn damped(gram: &[f32], n: usize, dead: &[bool], order: &[usize], dampening: f64) -> Vec<f64> {
    let mut h = vec![0.0f64; n * n];
    for a in 0..n {
        for b in 0..n {
            h[a * n + b] = gram[order[a] * n + order[b]] as f64;
        }
        if dead[order[a]] {
            h[a * n + a] = 1.0;
        }
    }
    let mean = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n.max(1) as f64;
    for j in 0..n {
        h[j * n + j] += dampening * mean;
    }
    h
}

/// The damped, permuted H of [`damped`] turned half way round (entry
/// (i, j) is entry (n−1−i, n−1−j) of it), in f32, read entry by entry: the
/// matrix the f32 factors (fast path, GPU) decompose as L·Lᵀ, so that
/// R = J·L·J is the upper factor of H and U = J·L⁻¹·J. Built this way no
/// n² f64 copy is needed (2 GB for n = 16384).
pub struct Reversed<'a> {
    gram: &'a [f32],
    n: usize,
    dead: &'a [bool],
    order: &'a [usize],
    lambda: f64,
}

impl<'a> Reversed<'a> {
    /// The matrix of `gram` with [`prepare`]'s dead inputs and order.
    pub fn new(
        gram: &'a [f32],
        n: usize,
        dead: &'a [bool],
        order: &'a [usize],
        dampening: f64,
    ) -> Self {
        let mut r = Reversed {
            gram,
            n,
            dead,
            order,
            lambda: 0.0,
        };
        r.lambda = dampening * (0..n).map(|a| r.diag(a)).sum::<f64>() / n.max(1) as f64;
        r
    }

    /// H_aa of the permuted matrix before damping (1 for a dead input).
    fn diag(&self, a: usize) -> f64 {
        let s = self.order[a];
        match self.dead[s] {
            true => 1.0,
            false => self.gram[s * self.n + s] as f64,
        }
    }

    /// Entry (i, j).
    pub fn at(&self, i: usize, j: usize) -> f32 {
        let (pa, pb) = (self.n - 1 - i, self.n - 1 - j);
        if pa == pb {
            (self.diag(pa) + self.lambda) as f32
        } else {
            self.gram[self.order[pa] * self.n + self.order[pb]]
        }
    }
}

/// The refusal of a matrix that is not positive definite.
pub fn not_positive_definite(pivot: usize, dampening: f64) -> Error {
    Error::Invalid(format!(
        "the damped Hessian is not positive definite (pivot {pivot}) at --dampening \
         {dampening}; raise --dampening or calibrate on more tokens"
    ))
}

/// [`Hessian::factor`], plainly: H = R·Rᵀ with R upper (a Cholesky run from
/// the last pivot up), then U = R⁻¹, in f64.
pub fn factor(gram: &[f32], n: usize, dampening: f64, act_order: ActOrder) -> Result<Factor> {
    let (dead, order) = prepare(gram, n, act_order)?;
    let h = damped(gram, n, &dead, &order, dampening);
    let mut r = vec![0.0f64; n * n];
    for j in (0..n).rev() {
        let s: f64 = (j + 1..n).map(|k| r[j * n + k] * r[j * n + k]).sum();
        let pivot = h[j * n + j] - s;
        if !(pivot > 0.0 && pivot.is_finite()) {
            return Err(not_positive_definite(j, dampening));
        }
        let d = pivot.sqrt();
        r[j * n + j] = d;
        for i in 0..j {
            let s: f64 = (j + 1..n).map(|k| r[i * n + k] * r[j * n + k]).sum();
            r[i * n + j] = (h[i * n + j] - s) / d;
        }
    }
    // U = R⁻¹ (upper): column j by back substitution.
    let mut u = vec![0.0f32; n * n];
    let mut col = vec![0.0f64; n];
    for j in 0..n {
        col[j] = 1.0 / r[j * n + j];
        for i in (0..j).rev() {
            let s: f64 = (i + 1..=j).map(|k| r[i * n + k] * col[k]).sum();
            col[i] = -s / r[i * n + i];
        }
        for i in 0..=j {
            u[i * n + j] = col[i] as f32;
        }
    }
    Ok(Factor {
        n,
        u,
        dead,
        order,
        act_order,
    })
}

/// The pieces of a sweep both CPU paths share: the weight in processing
/// order, the mask, the group layout and the scales known up front.
pub struct Sweep {
    pub rows: usize,
    pub cols: usize,
    /// W in processing order, dead inputs zeroed.
    pub w: Vec<f32>,
    /// 1 = pruned, processing order.
    pub pruned: Vec<u8>,
    /// Inputs per group.
    pub group: usize,
    /// Group of each processed column.
    pub group_of: Vec<usize>,
    /// Scales computed up front (static activation order), [rows, groups].
    pub upfront: Option<Vec<QParams>>,
    pub params: Vec<QParams>,
    pub codes: Vec<i8>,
}

impl Sweep {
    /// Checks the job against the weight and lays the sweep out.
    pub fn new(w: &[f32], rows: usize, f: &Factor, job: &Job) -> Result<Self> {
        let cols = f.n;
        if w.len() != rows * cols || f.u.len() != cols * cols {
            return Err(Error::Invalid(format!(
                "the weight holds {} values, expected {rows}×{cols}",
                w.len()
            )));
        }
        if job.block == 0 {
            return Err(Error::Invalid("the block size must be at least 1".into()));
        }
        if f.act_order != ActOrder::None
            && matches!(
                job.prune,
                Some(Sparsify::Unstructured(_) | Sparsify::Pattern { .. })
            )
        {
            return Err(Error::Invalid(
                "SparseGPT prunes in stored order; drop --actorder".into(),
            ));
        }
        if let Some(Sparsify::Pattern { n, m }) = job.prune {
            super::mask::check_nm(n, m, cols)?;
            if !job.block.is_multiple_of(m) {
                return Err(Error::Invalid(format!(
                    "the block size {} is not a multiple of M = {m}",
                    job.block
                )));
            }
        }
        let mut wp = vec![0.0f32; rows * cols];
        let mut pruned = vec![0u8; rows * cols];
        for r in 0..rows {
            for (p, &c) in f.order.iter().enumerate() {
                wp[r * cols + p] = if f.dead[c] { 0.0 } else { w[r * cols + c] };
            }
        }
        if let Some(Sparsify::Keep(keep)) = job.prune {
            if keep.len() != w.len() {
                return Err(Error::Invalid(format!(
                    "the mask holds {} entries, the weight {}",
                    keep.len(),
                    w.len()
                )));
            }
            for r in 0..rows {
                for (p, &c) in f.order.iter().enumerate() {
                    pruned[r * cols + p] = (keep[r * cols + c] == 0) as u8;
                }
            }
        }
        let group = job.quant.map_or(cols, |q| q.spec.group_len(cols)).max(1);
        if f.act_order == ActOrder::Group && job.quant.is_some_and(|q| q.spec.group.is_none()) {
            return Err(Error::Invalid(
                "--actorder group needs group scales; use static for per-channel".into(),
            ));
        }
        let group_of: Vec<usize> = match f.act_order {
            ActOrder::Static => f.order.iter().map(|&c| c / group).collect(),
            _ => (0..cols).map(|p| p / group).collect(),
        };
        let groups = cols.div_ceil(group);
        // Static order scatters the stored groups over the sweep, so their
        // scales are always computed up front, from the stored groups;
        // otherwise groups are consecutive in processing order.
        let upfront = match job.quant {
            Some(q) if q.scales == GroupScales::Upfront || f.act_order == ActOrder::Static => {
                let mut params = Vec::with_capacity(rows * groups);
                let mut vals = vec![0.0f32; cols];
                for r in 0..rows {
                    for p in 0..cols {
                        let v = wp[r * cols + p] * (1 - pruned[r * cols + p]) as f32;
                        let at = match f.act_order {
                            ActOrder::Static => f.order[p],
                            _ => p,
                        };
                        vals[at] = v;
                    }
                    for g in vals.chunks(group) {
                        params.push(qparams(&q.spec, g, q.dtype));
                    }
                }
                Some(params)
            }
            _ => None,
        };
        Ok(Sweep {
            rows,
            cols,
            w: wp,
            pruned,
            group,
            group_of,
            params: upfront
                .clone()
                .unwrap_or(vec![QParams::default(); rows * groups]),
            upfront,
            codes: if job.quant.is_some() {
                vec![0; rows * cols]
            } else {
                Vec::new()
            },
        })
    }

    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// The rows' mutable state and what every row reads (the layout and the
    /// factor), borrowed apart so rows can be swept in parallel.
    pub fn split<'a>(
        &'a mut self,
        f: &'a Factor,
        udiag: &'a [f32],
        job: &'a Job,
    ) -> (Rows<'a>, Shared<'a>) {
        let groups = self.groups();
        let shared = Shared {
            cols: self.cols,
            group: self.group,
            group_of: &self.group_of,
            as_reached: self.upfront.is_none(),
            u: &f.u,
            udiag,
            quant: job.quant.as_ref(),
            pattern: match job.prune {
                Some(Sparsify::Pattern { n, m }) => Some((n, m)),
                _ => None,
            },
        };
        let rows = Rows {
            cols: self.cols,
            groups,
            w: &mut self.w,
            pruned: &mut self.pruned,
            params: &mut self.params,
            codes: &mut self.codes,
        };
        (rows, shared)
    }

    /// Undoes the permutation: the solved weight in stored order.
    pub fn finish(self, f: &Factor, job: &Job) -> Solved {
        let (rows, cols) = (self.rows, self.cols);
        let mut values = vec![0.0f32; rows * cols];
        let mut codes = vec![0i8; self.codes.len()];
        let mut keep = vec![1u8; rows * cols];
        for r in 0..rows {
            for (p, &c) in f.order.iter().enumerate() {
                values[r * cols + c] = self.w[r * cols + p];
                keep[r * cols + c] = 1 - self.pruned[r * cols + p];
                if !codes.is_empty() {
                    codes[r * cols + c] = self.codes[r * cols + p];
                }
            }
        }
        let g_idx = (f.act_order == ActOrder::Group && job.quant.is_some()).then(|| {
            let mut g = vec![0i32; cols];
            for (p, &c) in f.order.iter().enumerate() {
                g[c] = (p / self.group) as i32;
            }
            g
        });
        let quantized = job.quant.map(|_| Quantized {
            rows,
            cols,
            group: self.group,
            codes,
            params: self.params,
        });
        Solved {
            values,
            quantized,
            g_idx,
            keep: job.prune.map(|_| keep),
        }
    }
}

/// What every row of a sweep reads.
pub struct Shared<'a> {
    pub cols: usize,
    pub group: usize,
    pub group_of: &'a [usize],
    /// Scales computed as each group is reached (not up front).
    pub as_reached: bool,
    pub u: &'a [f32],
    pub udiag: &'a [f32],
    pub quant: Option<&'a QuantJob>,
    /// SparseGPT's N:M (keep N of M).
    pub pattern: Option<(usize, usize)>,
}

/// A run of consecutive rows of a sweep.
pub struct Rows<'a> {
    pub cols: usize,
    pub groups: usize,
    /// [rows, cols], processing order.
    pub w: &'a mut [f32],
    pub pruned: &'a mut [u8],
    pub params: &'a mut [QParams],
    /// Empty when not quantizing.
    pub codes: &'a mut [i8],
}

impl<'a> Rows<'a> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.w.len() / self.cols.max(1)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// The runs of `per` rows (the last shorter).
    pub fn chunks(self, per: usize) -> Vec<Rows<'a>> {
        let (c, g) = (self.cols, self.groups);
        let per = per.max(1);
        let n = self.len().div_ceil(per);
        let code_len = if self.codes.is_empty() { 0 } else { per * c };
        let mut codes: Vec<&'a mut [i8]> = if code_len == 0 {
            (0..n).map(|_| &mut [][..]).collect()
        } else {
            self.codes.chunks_mut(code_len).collect()
        };
        codes.reverse();
        self.w
            .chunks_mut(per * c)
            .zip(self.pruned.chunks_mut(per * c))
            .zip(self.params.chunks_mut(per * g))
            .map(|((w, pruned), params)| Rows {
                cols: c,
                groups: g,
                w,
                pruned,
                params,
                codes: codes.pop().expect("one per chunk"),
            })
            .collect()
    }

    /// Row by row.
    pub fn rows(&mut self) -> impl Iterator<Item = RowState<'_>> {
        let (c, g) = (self.cols, self.groups);
        let codes: Box<dyn Iterator<Item = &mut [i8]>> = if self.codes.is_empty() {
            Box::new(std::iter::repeat_with(|| &mut [][..]))
        } else {
            Box::new(self.codes.chunks_mut(c))
        };
        self.w
            .chunks_mut(c)
            .zip(self.pruned.chunks_mut(c))
            .zip(self.params.chunks_mut(g))
            .zip(codes)
            .map(|(((w, pruned), params), codes)| RowState {
                w,
                pruned,
                params,
                codes,
            })
    }
}

/// One row of a sweep: its weights (processing order), pruned flags,
/// group parameters and codes (empty when not quantizing).
pub struct RowState<'a> {
    pub w: &'a mut [f32],
    pub pruned: &'a mut [u8],
    pub params: &'a mut [QParams],
    pub codes: &'a mut [i8],
}

impl RowState<'_> {
    /// The scale of the group starting at processed column `p`, from the
    /// values as they stand (pruned entries as 0).
    fn reach_group(&mut self, s: &Shared, p: usize, q: &QuantJob) {
        let end = (p + s.group).min(s.cols);
        let vals: Vec<f32> = (p..end)
            .map(|k| self.w[k] * (1 - self.pruned[k]) as f32)
            .collect();
        self.params[s.group_of[p]] = qparams(&q.spec, &vals, q.dtype);
    }

    /// The N:M choice over the M columns from `p`: the M − N least
    /// w²/U_pp² pruned (ties: the higher index kept, as
    /// [`super::mask::nm_group`]).
    fn choose_pattern(&mut self, s: &Shared, p: usize, n: usize, m: usize) {
        let mut keys = [0u32; 16];
        for ((key, &w), &d) in keys
            .iter_mut()
            .zip(&self.w[p..p + m])
            .zip(&s.udiag[p..p + m])
        {
            *key = super::score::key_of(w * w / (d * d));
        }
        let mut keep = [0u8; 16];
        super::mask::nm_group(&keys[..m], n, &mut keep[..m]);
        for (pr, &k) in self.pruned[p..p + m].iter_mut().zip(&keep) {
            *pr |= 1 - k;
        }
    }

    /// Column `p` settled: its value, its code, and the error
    /// e = (w − q)/U_pp to propagate.
    #[inline]
    fn settle(&mut self, s: &Shared, p: usize) -> f32 {
        let x = self.w[p];
        let pruned = self.pruned[p] != 0;
        let q = match s.quant {
            Some(qj) => {
                let par = self.params[s.group_of[p]];
                let v = if pruned { 0.0 } else { x };
                let code = quantize(&qj.spec, v, par, qj.rounding, qj.dtype);
                self.codes[p] = code as i8;
                dequantize(code, par)
            }
            None if pruned => 0.0,
            None => x,
        };
        self.w[p] = q;
        (x - q) / s.udiag[p]
    }

    /// The columns [b0, b1) of this row, one after another, each one's
    /// error propagated to the later columns of the block; the errors are
    /// left in `err` [b1 − b0] for the update of the columns after.
    pub fn sweep_block(&mut self, s: &Shared, b0: usize, b1: usize, err: &mut [f32]) {
        let n = s.cols;
        for p in b0..b1 {
            if let Some((keep, m)) = s.pattern.filter(|&(_, m)| p % m == 0) {
                self.choose_pattern(s, p, keep, m);
            }
            if let Some(q) = s.quant.filter(|_| s.as_reached && p % s.group == 0) {
                self.reach_group(s, p, q);
            }
            let e = self.settle(s, p);
            let urow = &s.u[p * n + p + 1..p * n + b1];
            for (w, &u) in self.w[p + 1..b1].iter_mut().zip(urow) {
                *w -= e * u;
            }
            err[p - b0] = e;
        }
    }
}

/// Whether columns are pruned block by block (unstructured SparseGPT).
pub fn block_sparsity(job: &Job) -> Option<f64> {
    match job.prune {
        Some(Sparsify::Unstructured(s)) => Some(s),
        _ => None,
    }
}

/// Unstructured SparseGPT's choice in the block [b0, b1): the k least
/// w²/U_pp² over its rows × columns, ties by row-major index in the block.
pub fn choose_block(sw: &mut Sweep, b0: usize, b1: usize, s: f64, udiag: &[f32]) {
    let (rows, c, width) = (sw.rows, sw.cols, b1 - b0);
    let total = (rows * width) as u64;
    let k = super::select::prune_count(s, total) as usize;
    let mut ranked: Vec<(u32, usize)> = (0..rows * width)
        .map(|i| {
            let (r, p) = (i / width, b0 + i % width);
            let w = sw.w[r * c + p];
            (super::score::key_of(w * w / (udiag[p] * udiag[p])), i)
        })
        .collect();
    ranked.sort_unstable();
    for &(_, i) in &ranked[..k] {
        sw.pruned[(i / width) * c + b0 + i % width] = 1;
    }
}

/// [`Hessian::solve`], plainly: one row at a time, every update spelled out.
pub fn solve(w: &[f32], rows: usize, f: &Factor, job: &Job) -> Result<Solved> {
    let mut sw = Sweep::new(w, rows, f, job)?;
    let n = f.n;
    let udiag: Vec<f32> = (0..n).map(|j| f.u[j * n + j]).collect();
    let mut err = vec![0.0f32; job.block];
    for b0 in (0..n).step_by(job.block) {
        let b1 = (b0 + job.block).min(n);
        if let Some(s) = block_sparsity(job) {
            choose_block(&mut sw, b0, b1, s, &udiag);
        }
        let (mut rows, shared) = sw.split(f, &udiag, job);
        for mut row in rows.rows() {
            row.sweep_block(&shared, b0, b1, &mut err);
            for k in b1..n {
                let s: f32 = (b0..b1).map(|p| err[p - b0] * f.u[p * n + k]).sum();
                row.w[k] -= s;
            }
        }
    }
    Ok(sw.finish(f, job))
}

/// [`Hessian::weighted_error`], plainly, in f64.
pub fn weighted_error(w: &[f32], what: &[f32], rows: usize, gram: &[f32]) -> Result<f64> {
    let n = w.len().checked_div(rows).unwrap_or(0);
    if gram.len() != n * n || what.len() != w.len() {
        return Err(Error::Invalid(format!(
            "weighted error: a {rows}×{n} weight, {} values, a Gram matrix of {}",
            what.len(),
            gram.len()
        )));
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for r in 0..rows {
        let a = &w[r * n..(r + 1) * n];
        let b = &what[r * n..(r + 1) * n];
        for i in 0..n {
            let (mut hd, mut hw) = (0.0f64, 0.0f64);
            for j in 0..n {
                let g = gram[i * n + j] as f64;
                hd += g * (a[j] - b[j]) as f64;
                hw += g * a[j] as f64;
            }
            num += (a[i] - b[i]) as f64 * hd;
            den += a[i] as f64 * hw;
        }
    }
    Ok(if den > 0.0 { num / den } else { 0.0 })
}

impl Hessian for super::Reference {
    fn backend(&self) -> &'static str {
        "reference"
    }

    fn factor(&self, gram: &[f32], n: usize, dampening: f64, order: ActOrder) -> Result<Factor> {
        factor(gram, n, dampening, order)
    }

    fn solve(&self, w: &[f32], rows: usize, f: &Factor, job: &Job) -> Result<Solved> {
        solve(w, rows, f, job)
    }

    fn weighted_errors(
        &self,
        w: &[f32],
        candidates: &[&[f32]],
        rows: usize,
        gram: &[f32],
    ) -> Result<Vec<f64>> {
        candidates
            .iter()
            .map(|c| weighted_error(w, c, rows, gram))
            .collect()
    }

    fn gram(&self, n: usize) -> Result<Box<dyn GramSum + '_>> {
        Ok(Box::new(RefGram::new(n)))
    }
}

#[cfg(test)]
#[path = "hessian_tests.rs"]
mod tests;
