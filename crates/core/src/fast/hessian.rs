//! Fast CPU path of the `hessian` family: the factor by recursive blocked
//! Cholesky and triangular inverse in f32 (products through `sgemm`, rows
//! split across threads), the sweep with rows in parallel and each block's
//! update of the later columns as one product per run of rows. It follows
//! the reference's sweep ([`crate::reference::hessian`]) step for step, so
//! it differs from it only by the factor's rounding (f32 here, f64 there)
//! and the order of the sums in the block updates.

use rayon::prelude::*;

use super::FastCpu;
use crate::reference::gram::{check_chunk, GramSum};
use crate::reference::hessian::{
    block_sparsity, choose_block, not_positive_definite, prepare, ActOrder, Factor, Hessian, Job,
    Reversed, Solved, Sweep,
};
use crate::{Error, Result};

/// Below this size a diagonal block is factored and inverted plainly.
const LEAF: usize = 64;

/// Rows of C per thread's share of a product.
const GEMM_ROWS: usize = 64;

/// A raw matrix operand: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

// SAFETY: only read through, by products whose callers keep it alive.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// The operand from row `r` on.
    fn at_row(&self, r: usize) -> *const f32 {
        // SAFETY: callers stay inside the operand (see `gemm`).
        unsafe { self.ptr.offset(r as isize * self.rs) }
    }
}

#[derive(Clone, Copy)]
struct MatMut(*mut f32);

// SAFETY: each thread writes its own rows of C.
unsafe impl Send for MatMut {}
unsafe impl Sync for MatMut {}

impl MatMut {
    /// Row `r` of C with row stride `ld`.
    fn row(&self, r: usize, ld: usize) -> *mut f32 {
        // SAFETY: callers stay inside C (see `gemm`).
        unsafe { self.0.add(r * ld) }
    }
}

/// C [m, n] (row stride `ldc`) = α·A·B + β·C, rows of C in parallel.
///
/// Arguments as `sgemm`'s, by design.
///
/// # Safety
/// A [m, k] and B [k, n] must be valid for their strides, C for m rows of
/// `ldc`, and C must not overlap A or B.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Mat,
    b: Mat,
    beta: f32,
    c: MatMut,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let chunks = m.div_ceil(GEMM_ROWS);
    (0..chunks).into_par_iter().for_each(|i| {
        let r0 = i * GEMM_ROWS;
        let rows = GEMM_ROWS.min(m - r0);
        // SAFETY: the caller's contract, on rows r0..r0+rows.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                alpha,
                a.at_row(r0),
                a.rs,
                a.cs,
                b.at_row(0),
                b.rs,
                b.cs,
                beta,
                c.row(r0, ldc),
                ldc as isize,
                1,
            )
        };
    });
}

/// Lower Cholesky factor, in place, of the k×k block at (o, o) of `a`
/// (row stride `ld`); the pivot that failed, if one did.
fn cholesky(a: &mut [f32], ld: usize, o: usize, k: usize) -> std::result::Result<(), usize> {
    if k <= LEAF {
        for j in o..o + k {
            let s: f64 = (o..j).map(|t| (a[j * ld + t] as f64).powi(2)).sum();
            let pivot = a[j * ld + j] as f64 - s;
            if !(pivot > 0.0 && pivot.is_finite()) {
                return Err(j);
            }
            let d = pivot.sqrt();
            a[j * ld + j] = d as f32;
            for i in j + 1..o + k {
                let s: f64 = (o..j)
                    .map(|t| a[i * ld + t] as f64 * a[j * ld + t] as f64)
                    .sum();
                a[i * ld + j] = ((a[i * ld + j] as f64 - s) / d) as f32;
            }
        }
        return Ok(());
    }
    let h = k / 2;
    cholesky(a, ld, o, h)?;
    // L21 = A21 · L11⁻ᵀ.
    let mut t = vec![0.0f32; h * h];
    for i in 0..h {
        t[i * h..i * h + i + 1].copy_from_slice(&a[(o + i) * ld + o..(o + i) * ld + o + i + 1]);
    }
    invert_lower(&mut t, h, 0, h);
    let r = k - h;
    let mut x = vec![0.0f32; r * h];
    for i in 0..r {
        x[i * h..(i + 1) * h].copy_from_slice(&a[(o + h + i) * ld + o..(o + h + i) * ld + o + h]);
    }
    let base = a.as_mut_ptr();
    // SAFETY: x and t are own buffers; C is rows o+h.. of `a`.
    unsafe {
        let c = MatMut(base.add((o + h) * ld + o));
        let xm = Mat {
            ptr: x.as_ptr(),
            rs: h as isize,
            cs: 1,
        };
        let tt = Mat {
            ptr: t.as_ptr(),
            rs: 1,
            cs: h as isize,
        };
        gemm(r, h, h, 1.0, xm, tt, 0.0, c, ld);
    }
    // A22 −= L21·L21ᵀ (L21 read from its copy, so C overlaps nothing).
    for i in 0..r {
        x[i * h..(i + 1) * h].copy_from_slice(&a[(o + h + i) * ld + o..(o + h + i) * ld + o + h]);
    }
    // SAFETY: as above; C is the block at (o+h, o+h).
    unsafe {
        let c = MatMut(base.add((o + h) * ld + o + h));
        let l = Mat {
            ptr: x.as_ptr(),
            rs: h as isize,
            cs: 1,
        };
        let lt = Mat {
            ptr: x.as_ptr(),
            rs: 1,
            cs: h as isize,
        };
        gemm(r, h, r, -1.0, l, lt, 1.0, c, ld);
    }
    cholesky(a, ld, o + h, r)
}

/// The inverse, in place, of the lower triangular k×k block at (o, o) of
/// `l` (row stride `ld`; the block's upper triangle must be zero).
fn invert_lower(l: &mut [f32], ld: usize, o: usize, k: usize) {
    if k <= LEAF {
        // Column j of the inverse by forward substitution, in f64.
        let mut inv = vec![0.0f64; k * k];
        for j in 0..k {
            inv[j * k + j] = 1.0 / l[(o + j) * ld + o + j] as f64;
            for i in j + 1..k {
                let s: f64 = (j..i)
                    .map(|t| l[(o + i) * ld + o + t] as f64 * inv[t * k + j])
                    .sum();
                inv[i * k + j] = -s / l[(o + i) * ld + o + i] as f64;
            }
        }
        for i in 0..k {
            for j in 0..=i {
                l[(o + i) * ld + o + j] = inv[i * k + j] as f32;
            }
        }
        return;
    }
    let h = k / 2;
    let r = k - h;
    invert_lower(l, ld, o, h);
    invert_lower(l, ld, o + h, r);
    // B ← −C⁻¹·B·A⁻¹, B the [r, h] block at (o+h, o).
    let mut tmp = vec![0.0f32; r * h];
    let mut out = vec![0.0f32; r * h];
    let base = l.as_ptr();
    // SAFETY: reads of `l` through its strides; writes to own buffers.
    unsafe {
        let b = Mat {
            ptr: base.add((o + h) * ld + o),
            rs: ld as isize,
            cs: 1,
        };
        let ainv = Mat {
            ptr: base.add(o * ld + o),
            rs: ld as isize,
            cs: 1,
        };
        gemm(r, h, h, 1.0, b, ainv, 0.0, MatMut(tmp.as_mut_ptr()), h);
        let cinv = Mat {
            ptr: base.add((o + h) * ld + o + h),
            rs: ld as isize,
            cs: 1,
        };
        let t = Mat {
            ptr: tmp.as_ptr(),
            rs: h as isize,
            cs: 1,
        };
        gemm(r, r, h, -1.0, cinv, t, 0.0, MatMut(out.as_mut_ptr()), h);
    }
    for i in 0..r {
        l[(o + h + i) * ld + o..(o + h + i) * ld + o + h].copy_from_slice(&out[i * h..(i + 1) * h]);
    }
}

/// [`Hessian::factor`]: H reversed (J·H·J = L·Lᵀ), so R = J·L·J is upper
/// with H = R·Rᵀ and U = R⁻¹ = J·L⁻¹·J.
fn factor(gram: &[f32], n: usize, dampening: f64, act_order: ActOrder) -> Result<Factor> {
    let (dead, order) = prepare(gram, n, act_order)?;
    let h = Reversed::new(gram, n, &dead, &order, dampening);
    let mut a = vec![0.0f32; n * n];
    a.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate().take(i + 1) {
            *v = h.at(i, j);
        }
    });
    cholesky(&mut a, n, 0, n).map_err(|p| not_positive_definite(n - 1 - p, dampening))?;
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    invert_lower(&mut a, n, 0, n);
    // U[i][j] = L⁻¹[n−1−i][n−1−j]: the matrix turned half way round, which
    // is its flat array reversed.
    a.reverse();
    let u = a;
    if u.iter().any(|v| !v.is_finite()) {
        return Err(not_positive_definite(0, dampening));
    }
    Ok(Factor {
        n,
        u,
        dead,
        order,
        act_order,
    })
}

/// [`Hessian::solve`]: per block, runs of rows in parallel, each sweeping
/// its rows through the block and then updating its later columns with one
/// product.
fn solve(w: &[f32], rows: usize, f: &Factor, job: &Job) -> Result<Solved> {
    let mut sw = Sweep::new(w, rows, f, job)?;
    let n = f.n;
    let udiag: Vec<f32> = (0..n).map(|j| f.u[j * n + j]).collect();
    let per = rows
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(8, GEMM_ROWS);
    let bsz = job.block;
    for b0 in (0..n).step_by(bsz) {
        let b1 = (b0 + bsz).min(n);
        if let Some(s) = block_sparsity(job) {
            choose_block(&mut sw, b0, b1, s, &udiag);
        }
        let (all, shared) = sw.split(f, &udiag, job);
        let u = Mat {
            ptr: f.u[b0 * n + b1.min(n - 1)..].as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        all.chunks(per).into_par_iter().for_each(|mut chunk| {
            let nr = chunk.len();
            let width = b1 - b0;
            let mut err = vec![0.0f32; nr * width];
            for (row, e) in chunk.rows().zip(err.chunks_mut(width)) {
                let mut row = row;
                row.sweep_block(&shared, b0, b1, e);
            }
            if b1 < n {
                let e = Mat {
                    ptr: err.as_ptr(),
                    rs: width as isize,
                    cs: 1,
                };
                let c = MatMut(chunk.w[b1..].as_mut_ptr());
                // SAFETY: err is [nr, width]; U's rows b0..b1 from column
                // b1; C is this chunk's own rows from column b1.
                unsafe {
                    matrixmultiply::sgemm(
                        nr,
                        width,
                        n - b1,
                        -1.0,
                        e.at_row(0),
                        e.rs,
                        e.cs,
                        u.at_row(0),
                        u.rs,
                        u.cs,
                        1.0,
                        c.row(0, n),
                        n as isize,
                        1,
                    )
                };
            }
        });
    }
    Ok(sw.finish(f, job))
}

/// [`Hessian::weighted_errors`]: [W − Ŵ₁; …; W − Ŵₖ; W]·H as one product,
/// then the row-wise inner products in f64.
fn weighted_errors(
    w: &[f32],
    candidates: &[&[f32]],
    rows: usize,
    gram: &[f32],
) -> Result<Vec<f64>> {
    let n = w.len().checked_div(rows).unwrap_or(0);
    if gram.len() != n * n || candidates.iter().any(|c| c.len() != w.len()) {
        return Err(Error::Invalid(format!(
            "weighted error: a {rows}×{n} weight, candidates of {:?} values, a Gram matrix of {}",
            candidates.iter().map(|c| c.len()).collect::<Vec<_>>(),
            gram.len()
        )));
    }
    let mut stacked = Vec::with_capacity((candidates.len() + 1) * w.len());
    for c in candidates {
        stacked.extend(w.iter().zip(c.iter()).map(|(a, b)| a - b));
    }
    stacked.extend_from_slice(w);
    let mut prod = vec![0.0f32; stacked.len()];
    let m = stacked.len() / n.max(1);
    // SAFETY: stacked [m, n], gram [n, n], prod [m, n].
    unsafe {
        let a = Mat {
            ptr: stacked.as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        let b = Mat {
            ptr: gram.as_ptr(),
            rs: n as isize,
            cs: 1,
        };
        gemm(m, n, n, 1.0, a, b, 0.0, MatMut(prod.as_mut_ptr()), n);
    }
    let dot = |x: &[f32], y: &[f32]| -> f64 {
        x.par_iter()
            .zip(y)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    let size = rows * n;
    let k = candidates.len();
    let den = dot(&stacked[k * size..], &prod[k * size..]);
    Ok((0..k)
        .map(|i| {
            let r = i * size..(i + 1) * size;
            let num = dot(&stacked[r.clone()], &prod[r]);
            if den > 0.0 {
                num / den
            } else {
                0.0
            }
        })
        .collect())
}

/// [`Hessian::gram`]: G += XᵀX through the threaded product, in f32.
struct FastGram {
    n: usize,
    g: Vec<f32>,
}

impl GramSum for FastGram {
    fn add(&mut self, x: &[f32], rows: usize) -> Result<()> {
        check_chunk(self.n, x, rows)?;
        let n = self.n;
        // SAFETY: Xᵀ [n, rows] is x [rows, n] read with swapped strides; B
        // is x itself; C is the own [n, n] sum, overlapping neither.
        unsafe {
            let xt = Mat {
                ptr: x.as_ptr(),
                rs: 1,
                cs: n as isize,
            };
            let xm = Mat {
                ptr: x.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            gemm(n, rows, n, 1.0, xt, xm, 1.0, MatMut(self.g.as_mut_ptr()), n);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<f32>> {
        Ok(self.g)
    }
}

impl Hessian for FastCpu {
    fn backend(&self) -> &'static str {
        "cpu"
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
        weighted_errors(w, candidates, rows, gram)
    }

    fn gram(&self, n: usize) -> Result<Box<dyn GramSum + '_>> {
        Ok(Box::new(FastGram {
            n,
            g: vec![0.0; n * n],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::hessian as spec;
    use crate::reference::hessian::{GroupScales, QuantJob, Sparsify};
    use crate::reference::quant::{QuantSpec, Rounding};
    use crate::DType;

    /// The factor is f32 here and f64 in the reference; on an ill-conditioned
    /// H (rank n/4 plus 5% noise) its entries differ by up to 1e-3 of the
    /// largest, which flips a few codes near rounding ties, and each flip
    /// changes the rest of its row. Measured: 99.76% of codes equal and the
    /// weighted errors 1.4% apart on 131×96.
    const SAME_MIN: f64 = 0.99;
    /// Relative difference of the weighted errors allowed (see SAME_MIN).
    const ERROR_RTOL: f64 = 0.03;

    fn gram(tokens: usize, n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let r = (n / 4).max(1);
        let a: Vec<f32> = (0..r * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut x = vec![0.0f32; tokens * n];
        for t in 0..tokens {
            let z: Vec<f32> = (0..r).map(|_| rng.random_range(-1.0..1.0)).collect();
            for j in 0..n {
                let s: f32 = (0..r).map(|k| z[k] * a[k * n + j]).sum();
                x[t * n + j] = s + 0.05 * rng.random_range(-1.0f32..1.0);
            }
        }
        let mut g = vec![0.0f32; n * n];
        for t in 0..tokens {
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] += x[t * n + i] * x[t * n + j];
                }
            }
        }
        g
    }

    #[test]
    fn factor_agrees_with_the_reference() {
        for n in [1, 2, 3, 5, 7, 63, 64, 65, 130, 200] {
            let g = gram(2 * n + 3, n, n as u64);
            let a = spec::factor(&g, n, 0.01, ActOrder::Static).unwrap();
            let b = factor(&g, n, 0.01, ActOrder::Static).unwrap();
            assert_eq!(a.order, b.order);
            let scale = a.u.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (x, y)) in a.u.iter().zip(&b.u).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-3 * scale,
                    "n {n} at [{}, {}]: {x} vs {y} (scale {scale})",
                    i / n,
                    i % n
                );
            }
        }
    }

    #[test]
    fn sweeps_agree_with_the_reference() {
        let (rows, n) = (131, 96);
        let g = gram(300, n, 1);
        let w: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect();
        let q = QuantJob {
            spec: QuantSpec {
                bits: 4,
                group: Some(32),
                symmetric: false,
            },
            rounding: Rounding::Nearest,
            dtype: DType::BF16,
            scales: GroupScales::AsReached,
        };
        let pat = Sparsify::Pattern { n: 2, m: 4 };
        let un = Sparsify::Unstructured(0.5);
        for (quant, prune) in [
            (Some(q), None),
            (None, Some(un)),
            (None, Some(pat)),
            (Some(q), Some(pat)),
        ] {
            let job = Job {
                quant,
                prune,
                block: 32,
            };
            let fa = spec::factor(&g, n, 0.01, ActOrder::None).unwrap();
            let fb = factor(&g, n, 0.01, ActOrder::None).unwrap();
            let a = spec::solve(&w, rows, &fa, &job).unwrap();
            let b = solve(&w, rows, &fb, &job).unwrap();
            let ea = spec::weighted_error(&w, &a.values, rows, &g).unwrap();
            let eb = FastCpu.weighted_error(&w, &b.values, rows, &g).unwrap();
            assert!(
                (ea - eb).abs() <= ERROR_RTOL * ea,
                "{quant:?} {prune:?}: error {ea} vs {eb}"
            );
            if let (Some(x), Some(y)) = (&a.quantized, &b.quantized) {
                let same = x.codes.iter().zip(&y.codes).filter(|(p, q)| p == q).count();
                assert!(
                    same as f64 >= SAME_MIN * x.codes.len() as f64,
                    "{prune:?}: {same} of {} codes equal",
                    x.codes.len()
                );
            }
            if let (Some(x), Some(y)) = (&a.keep, &b.keep) {
                let same = x.iter().zip(y).filter(|(p, q)| p == q).count();
                assert!(
                    same as f64 >= SAME_MIN * x.len() as f64,
                    "{quant:?} {prune:?}: {same} of {} mask entries equal",
                    x.len()
                );
            }
        }
    }
}
