//! GPU pipelines of the `mask` family (`shaders/mask.wgsl`). Ties of a cut
//! are pruned in index order: a first pass counts them per segment of 4096
//! elements, the host turns the counts into offsets, a second pass masks.

use shears_core::reference::mask::{check_nm, Mask};
use shears_core::reference::score::Scorer;
use shears_core::reference::select::Cut;
use shears_core::TensorView;

use crate::chunk::{groups, split};
use crate::score::ScoredJob;
use crate::{source, GpuContext};

/// Elements per segment of `apply_cut` (mirrors SEG in the shader).
const SEG: usize = 4096;

/// The mask family on a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuMask<'a> {
    ctx: &'a GpuContext,
}

impl<'a> GpuMask<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        GpuMask { ctx }
    }
}

fn mask_bytes(n: usize) -> u64 {
    n.div_ceil(4) as u64 * 4
}

impl Mask for GpuMask<'_> {
    fn apply_cut(
        &self,
        w: &TensorView,
        scorer: &Scorer,
        cut: Cut,
    ) -> shears_core::Result<(Vec<u8>, u64)> {
        let n = w.numel();
        let per = (ScoredJob::max_elems(self.ctx, w, scorer)? / SEG).max(1) * SEG;
        let per = per.min(n.div_ceil(SEG).max(1) * SEG);
        let segs = per / SEG;
        let job = ScoredJob::new(
            self.ctx,
            ("mask", source::MASK),
            w,
            scorer,
            per,
            mask_bytes(per),
            (segs * 4) as u64,
        )?;
        let mut mask = Vec::with_capacity(n);
        let mut before = 0u64;
        for r in split(n, per) {
            let mut p = job.load(r.clone())?;
            p.lo = cut.key;
            let chunk_segs = r.len().div_ceil(SEG);
            let g = groups(chunk_segs, 1, self.ctx.max_groups());
            job.dispatch("tie_counts", &p, g)?;
            let counts: Vec<u32> =
                bytemuck::pod_collect_to_vec(&job.read(&job.out1, (chunk_segs * 4) as u64)?);
            let mut offsets = Vec::with_capacity(chunk_segs);
            let mut run = 0u64;
            for &c in &counts {
                offsets.push(run.min(u32::MAX as u64) as u32);
                run += c as u64;
            }
            job.write(&job.out1, &offsets);
            p.ties = cut.ties.saturating_sub(before).min(u32::MAX as u64) as u32;
            job.clear(&job.out0, mask_bytes(r.len()))?;
            job.dispatch("apply_cut", &p, g)?;
            mask.extend_from_slice(&job.read(&job.out0, r.len() as u64)?);
            before += run;
        }
        Ok((mask, before.min(cut.ties)))
    }

    fn apply_row_cuts(
        &self,
        w: &TensorView,
        scorer: &Scorer,
        cuts: &[Cut],
    ) -> shears_core::Result<Vec<u8>> {
        let (rows, cols) = w.matrix_dims();
        if rows == 0 || cols == 0 {
            return Ok(vec![1; rows * cols]);
        }
        let per_rows = ScoredJob::rows_per_chunk(self.ctx, w, scorer, cols)?.min(rows);
        let job = ScoredJob::new(
            self.ctx,
            ("mask", source::MASK),
            w,
            scorer,
            per_rows * cols,
            mask_bytes(per_rows * cols),
            (per_rows * 8) as u64,
        )?;
        let mut mask = Vec::with_capacity(rows * cols);
        for rr in split(rows, per_rows) {
            let mut p = job.load(rr.start * cols..rr.end * cols)?;
            p.rows = rr.len() as u32;
            let words: Vec<u32> = cuts[rr.clone()]
                .iter()
                .flat_map(|c| [c.key, c.ties.min(u32::MAX as u64) as u32])
                .collect();
            job.write(&job.out1, &words);
            job.clear(&job.out0, mask_bytes(rr.len() * cols))?;
            job.dispatch(
                "apply_row_cuts",
                &p,
                groups(rr.len(), 1, self.ctx.max_groups()),
            )?;
            mask.extend_from_slice(&job.read(&job.out0, (rr.len() * cols) as u64)?);
        }
        Ok(mask)
    }

    fn nm(
        &self,
        w: &TensorView,
        scorer: &Scorer,
        n: usize,
        m: usize,
    ) -> shears_core::Result<Vec<u8>> {
        let (_, cols) = w.matrix_dims();
        check_nm(n, m, cols)?;
        let total = w.numel();
        let per = (ScoredJob::max_elems(self.ctx, w, scorer)? / m).max(1) * m;
        let per = per.min(total.max(m));
        let job = ScoredJob::new(
            self.ctx,
            ("mask", source::MASK),
            w,
            scorer,
            per,
            mask_bytes(per),
            4,
        )?;
        let mut mask = Vec::with_capacity(total);
        for r in split(total, per) {
            let mut p = job.load(r.clone())?;
            p.n = n as u32;
            p.m = m as u32;
            job.clear(&job.out0, mask_bytes(r.len()))?;
            job.dispatch("nm", &p, groups(r.len() / m, 256, self.ctx.max_groups()))?;
            mask.extend_from_slice(&job.read(&job.out0, r.len() as u64)?);
        }
        Ok(mask)
    }
}
