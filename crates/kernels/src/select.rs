//! GPU pipelines of the `select` family (`shaders/select.wgsl`). The host
//! side (bracket, resolution of the counts) is the shared code in
//! `shears_core::reference::select`, so every backend finds the same cut.

use shears_core::reference::score::Scorer;
use shears_core::reference::select::{Bracket, Census, Cut, Histogram, Select, BINS};
use shears_core::TensorView;

use crate::chunk::{groups, split};
use crate::score::ScoredJob;
use crate::{source, GpuContext};

/// The select family on a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuSelect<'a> {
    ctx: &'a GpuContext,
}

impl<'a> GpuSelect<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        GpuSelect { ctx }
    }
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytemuck::pod_collect_to_vec(bytes)
}

impl Select for GpuSelect<'_> {
    fn census(&self, w: &TensorView, scorer: &Scorer, b: Bracket) -> shears_core::Result<Census> {
        let n = w.numel();
        let per = ScoredJob::max_elems(self.ctx, w, scorer)?.min(n.max(1));
        // The inside list can hold a whole chunk, so it never overflows.
        let job = ScoredJob::new(
            self.ctx,
            ("select", source::SELECT),
            w,
            scorer,
            per,
            16,
            (per * 4) as u64,
        )?;
        let mut census = Census::new();
        for r in split(n, per) {
            let mut p = job.load(r.clone())?;
            p.lo = b.lo;
            p.hi = b.hi;
            p.cap = per as u32;
            job.clear(&job.out0, 16)?;
            job.dispatch("census", &p, groups(r.len(), 256, self.ctx.max_groups()))?;
            let c = words(&job.read(&job.out0, 16)?);
            census.n += r.len() as u64;
            census.below_lo += c[0] as u64;
            census.eq_lo += c[1] as u64;
            census.eq_hi += c[2] as u64;
            if c[3] > 0 {
                census
                    .inside
                    .extend(words(&job.read(&job.out1, c[3] as u64 * 4)?));
            }
        }
        Ok(census)
    }

    fn histogram(
        &self,
        w: &TensorView,
        scorer: &Scorer,
        hi16: Option<u32>,
    ) -> shears_core::Result<Histogram> {
        let n = w.numel();
        let per = ScoredJob::max_elems(self.ctx, w, scorer)?.min(n.max(1));
        let bytes = ((BINS + 1) * 4) as u64;
        let job = ScoredJob::new(
            self.ctx,
            ("select", source::SELECT),
            w,
            scorer,
            per,
            bytes,
            4,
        )?;
        let mut h = Histogram::new();
        for r in split(n, per) {
            let mut p = job.load(r.clone())?;
            p.hi16 = hi16.unwrap_or(u32::MAX);
            job.clear(&job.out0, bytes)?;
            job.dispatch("histogram", &p, groups(r.len(), 256, self.ctx.max_groups()))?;
            let c = words(&job.read(&job.out0, bytes)?);
            for (a, &b) in h.bins.iter_mut().zip(&c[..BINS]) {
                *a += b as u64;
            }
            h.low_bits |= c[BINS];
        }
        Ok(h)
    }

    fn row_cuts(&self, w: &TensorView, scorer: &Scorer, k: u64) -> shears_core::Result<Vec<Cut>> {
        let (rows, cols) = w.matrix_dims();
        if rows == 0 || cols == 0 {
            return Ok(vec![Cut::NONE; rows]);
        }
        let per_rows = ScoredJob::rows_per_chunk(self.ctx, w, scorer, cols)?.min(rows);
        let job = ScoredJob::new(
            self.ctx,
            ("select", source::SELECT),
            w,
            scorer,
            per_rows * cols,
            4,
            (per_rows * 8) as u64,
        )?;
        let mut out = Vec::with_capacity(rows);
        for rr in split(rows, per_rows) {
            let mut p = job.load(rr.start * cols..rr.end * cols)?;
            p.rows = rr.len() as u32;
            p.k = k as u32;
            job.dispatch("row_cuts", &p, groups(rr.len(), 1, self.ctx.max_groups()))?;
            let c = words(&job.read(&job.out1, (rr.len() * 8) as u64)?);
            out.extend(c.chunks_exact(2).map(|x| Cut {
                key: x[0],
                ties: x[1] as u64,
            }));
        }
        Ok(out)
    }
}
