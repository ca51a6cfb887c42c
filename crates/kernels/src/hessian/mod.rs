//! GPU side of the `hessian` family: the Gram sums XᵀX and the factor of
//! the damped inverse Hessian (blocked Cholesky and triangular inverse in
//! column panels, [`factor`], `shaders/factor.wgsl`), and the GPTQ /
//! SparseGPT sweep (`shaders/hessian.wgsl`) with the weight's rows
//! resident on the device, one dispatch per block of columns for the sweep
//! and one for the update of the columns after it; the factor (computed
//! once per input and shared by the weights that read it) is read back
//! and uploaded to the sweep a block of rows at a time. Unstructured
//! SparseGPT chooses each block's mask over all rows at once, a selection
//! this module does not have yet: such sweeps run on the fast CPU path.
//! Agrees with the CPU within the family's tolerances.

use std::sync::Arc;

mod factor;

use shears_core::fast::FastCpu;
use shears_core::reference::gram::GramSum;
use shears_core::reference::hessian::{
    block_sparsity, prepare, ActOrder, Factor, Hessian, Job, QuantJob, Solved, Sparsify, Sweep,
};
use shears_core::reference::quant::{QParams, Rounding};
use shears_core::DType;

use crate::context::entry;
use crate::{source, GpuContext};

/// Uniform parameters; mirrors `Params` in shaders/hessian.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct HessianParams {
    rows: u32,
    n: u32,
    b0: u32,
    b1: u32,
    stride: u32,
    group: u32,
    groups: u32,
    keep_n: u32,
    pattern_m: u32,
    quant: u32,
    as_reached: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<HessianParams>() == 48);

/// The hessian family on a GPU.
pub struct GpuHessian<'a> {
    ctx: &'a GpuContext,
    layout: Arc<wgpu::BindGroupLayout>,
    /// The factor's panel width, when not chosen by size.
    panel: Option<usize>,
}

impl<'a> GpuHessian<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        use wgpu::BufferBindingType::{Storage, Uniform};
        let (ro, rw) = (Storage { read_only: true }, Storage { read_only: false });
        let layout = ctx.buffer_layout(
            "hessian: w ublk err codes pruned qp group_of params",
            &[rw, ro, rw, rw, rw, rw, ro, Uniform],
        );
        GpuHessian {
            ctx,
            layout,
            panel: None,
        }
    }

    /// The factor in panels of `width` columns (64 or 128; by default 128
    /// above 2048 inputs, 64 below): tests reach both on small matrices.
    pub fn with_panel_width(mut self, width: usize) -> Self {
        self.panel = Some(if width > 64 { 128 } else { 64 });
        self
    }

    fn gpu_err(e: crate::Error) -> shears_core::Error {
        shears_core::Error::Backend {
            backend: "gpu",
            message: e.to_string(),
        }
    }

    /// The sweep of `sw`'s rows on the device; see the module docs.
    fn sweep(&self, sw: &mut Sweep, f: &Factor, job: &Job) -> crate::Result<()> {
        let ctx = self.ctx;
        let (rows, n) = (sw.rows, sw.cols);
        let groups = sw.groups();
        let bsz = job.block.min(n.max(1));
        let quant: Option<&QuantJob> = job.quant.as_ref();
        let constants = constants(quant);
        let limit = ctx.chunk_bytes() as usize / 4;
        let per = (limit / n.max(1)).clamp(1, rows.max(1));
        if n * bsz > limit {
            return Err(crate::Error::Unsupported(format!(
                "{bsz} rows of a {n}-column factor exceed one GPU binding"
            )));
        }
        let usage = wgpu::BufferUsages::COPY_SRC;
        let wbuf = ctx.storage("hessian w", per * n * 4, usage);
        let ublk = ctx.storage("hessian ublk", bsz * n * 4, wgpu::BufferUsages::empty());
        let err = ctx.storage("hessian err", per * bsz * 4, wgpu::BufferUsages::empty());
        let codes = ctx.storage("hessian codes", per * n * 4, usage);
        let pruned = ctx.storage("hessian pruned", per * n * 4, usage);
        let qp = ctx.storage("hessian qp", per * groups * 8, usage);
        let group_of = ctx.storage("hessian group_of", n * 4, wgpu::BufferUsages::empty());
        let pbuf = ctx.uniform("hessian params", 48);
        let g32: Vec<u32> = sw.group_of.iter().map(|&g| g as u32).collect();
        ctx.upload(&group_of, 0, bytemuck::cast_slice(&g32));
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("hessian"),
            layout: &self.layout,
            entries: &[
                entry(0, &wbuf),
                entry(1, &ublk),
                entry(2, &err),
                entry(3, &codes),
                entry(4, &pruned),
                entry(5, &qp),
                entry(6, &group_of),
                entry(7, &pbuf),
            ],
        });
        let sweep = ctx.pipeline(
            "hessian",
            source::HESSIAN,
            "sweep",
            &self.layout,
            &constants,
        )?;
        let update = ctx.pipeline(
            "hessian",
            source::HESSIAN,
            "update",
            &self.layout,
            &constants,
        )?;
        let pattern = match job.prune {
            Some(Sparsify::Pattern { n, m }) => (n as u32, m as u32),
            _ => (0, 0),
        };
        let mut r0 = 0;
        while r0 < rows {
            let nr = per.min(rows - r0);
            let span = r0 * n..(r0 + nr) * n;
            ctx.upload(&wbuf, 0, bytemuck::cast_slice(&sw.w[span.clone()]));
            let flags: Vec<u32> = sw.pruned[span.clone()].iter().map(|&p| p as u32).collect();
            ctx.upload(&pruned, 0, bytemuck::cast_slice(&flags));
            let qps: Vec<f32> = sw.params[r0 * groups..(r0 + nr) * groups]
                .iter()
                .flat_map(|p| [p.scale, p.zero_point as f32])
                .collect();
            ctx.upload(&qp, 0, bytemuck::cast_slice(&qps));
            for b0 in (0..n).step_by(bsz) {
                let b1 = (b0 + bsz).min(n);
                ctx.upload(&ublk, 0, bytemuck::cast_slice(&f.u[b0 * n..b1 * n]));
                let p = HessianParams {
                    rows: nr as u32,
                    n: n as u32,
                    b0: b0 as u32,
                    b1: b1 as u32,
                    stride: bsz as u32,
                    group: sw.group as u32,
                    groups: groups as u32,
                    keep_n: pattern.0,
                    pattern_m: pattern.1,
                    quant: quant.is_some() as u32,
                    as_reached: sw.upfront.is_none() as u32,
                    _pad: 0,
                };
                ctx.queue().write_buffer(&pbuf, 0, bytemuck::bytes_of(&p));
                ctx.dispatch("hessian sweep", &sweep, &bind, ctx.grid_2d(nr.div_ceil(64)));
                if b1 < n {
                    let gx = (n - b1).div_ceil(16) as u32;
                    let gy = nr.div_ceil(16) as u32;
                    ctx.dispatch("hessian update", &update, &bind, (gx, gy, 1));
                }
            }
            let back = |b: &wgpu::Buffer, len: usize| ctx.read_back(b, 0, len as u64);
            let wv = back(&wbuf, nr * n * 4)?;
            sw.w[span.clone()].copy_from_slice(bytemuck::cast_slice(&wv));
            let pv = back(&pruned, nr * n * 4)?;
            let pv: &[u32] = bytemuck::cast_slice(&pv);
            sw.pruned[span.clone()]
                .iter_mut()
                .zip(pv)
                .for_each(|(d, &s)| *d = s as u8);
            if quant.is_some() {
                let cv = back(&codes, nr * n * 4)?;
                let cv: &[i32] = bytemuck::cast_slice(&cv);
                sw.codes[span]
                    .iter_mut()
                    .zip(cv)
                    .for_each(|(d, &s)| *d = s as i8);
                let qv = back(&qp, nr * groups * 8)?;
                let qv: &[f32] = bytemuck::cast_slice(&qv);
                for (d, s) in sw.params[r0 * groups..(r0 + nr) * groups]
                    .iter_mut()
                    .zip(qv.chunks_exact(2))
                {
                    *d = QParams {
                        scale: s[0],
                        zero_point: s[1] as i32,
                    };
                }
            }
            r0 += nr;
        }
        Ok(())
    }
}

/// The override constants of the quantizing prelude.
fn constants(q: Option<&QuantJob>) -> Vec<(&'static str, f64)> {
    let Some(q) = q else {
        return vec![];
    };
    let dtype = match q.dtype {
        DType::F16 => 1.0,
        DType::BF16 => 2.0,
        _ => 0.0,
    };
    vec![
        ("DTYPE", dtype),
        ("BITS", q.spec.bits as f64),
        ("SYMMETRIC", if q.spec.symmetric { 1.0 } else { 0.0 }),
        (
            "CT_ROUNDING",
            if q.rounding == Rounding::CompressedTensors {
                1.0
            } else {
                0.0
            },
        ),
    ]
}

impl Hessian for GpuHessian<'_> {
    fn backend(&self) -> &'static str {
        "gpu"
    }

    fn factor(
        &self,
        gram: &[f32],
        n: usize,
        dampening: f64,
        order: ActOrder,
    ) -> shears_core::Result<Factor> {
        let (dead, idx) = prepare(gram, n, order)?;
        if n == 0 {
            return FastCpu.factor(gram, n, dampening, order);
        }
        let nb = self.panel.unwrap_or_else(|| factor::panel_width(n));
        factor::Kernels::new(self.ctx)
            .factor(gram, n, nb, dampening, order, dead, idx)
            .map_err(Self::gpu_err)?
    }

    fn solve(&self, w: &[f32], rows: usize, f: &Factor, job: &Job) -> shears_core::Result<Solved> {
        if block_sparsity(job).is_some() {
            return FastCpu.solve(w, rows, f, job);
        }
        let mut sw = Sweep::new(w, rows, f, job)?;
        if rows > 0 && f.n > 0 {
            self.sweep(&mut sw, f, job).map_err(Self::gpu_err)?;
        }
        Ok(sw.finish(f, job))
    }

    fn weighted_errors(
        &self,
        w: &[f32],
        candidates: &[&[f32]],
        rows: usize,
        gram: &[f32],
    ) -> shears_core::Result<Vec<f64>> {
        FastCpu.weighted_errors(w, candidates, rows, gram)
    }

    fn gram(&self, n: usize) -> shears_core::Result<Box<dyn GramSum + '_>> {
        Ok(Box::new(factor::GpuGram::new(self.ctx, n)))
    }
}
