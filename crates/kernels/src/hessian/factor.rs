//! GPU Gram sums and factor of the `hessian` family (shaders/factor.wgsl).
//!
//! The factor is the fast CPU path's, blocked for a device: the damped,
//! permuted H turned half way round ([`Reversed`]) is padded to N = T·NB
//! and uploaded as T column panels (no binding holds more than N·NB
//! values, so n = 16384 needs 8 MiB bindings, not 1 GiB), factored
//! right-looking (per panel: its diagonal tile, that tile's inverse, the
//! rows below, then the later panels' trailing update) and inverted in
//! place one column panel at a time by forward substitution. U is read
//! back turned round again. Everything stays on the device between the
//! upload and the readback; the host only orders dispatches.
//!
//! The Gram sums keep XᵀX on the device in row panels across every chunk
//! of rows added, computing the tiles on and above the diagonal and
//! mirroring the rest when read back.

use std::sync::Arc;

use shears_core::reference::gram::{check_chunk, GramSum};
use shears_core::reference::hessian::{not_positive_definite, ActOrder, Factor, Reversed};

use crate::context::entry;
use crate::{source, Error, GpuContext, Result};

/// Uniform parameters; mirrors `Params` in shaders/factor.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct FactorParams {
    n: u32,
    a_row0: u32,
    b_row0: u32,
    k0: u32,
    rows: u32,
    tokens: u32,
    tile: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<FactorParams>() == 32);

/// No pivot failed (status's initial value).
const NO_FAILURE: u32 = u32::MAX;

/// Panel width: wider panels mean fewer dispatches on large matrices.
pub(super) fn panel_width(n: usize) -> usize {
    if n > 2048 {
        128
    } else {
        64
    }
}

/// The buffers and pipelines every factor and Gram dispatch binds.
pub(super) struct Kernels<'a> {
    ctx: &'a GpuContext,
    layout: Arc<wgpu::BindGroupLayout>,
    params: wgpu::Buffer,
    /// Bound where a dispatch reads no second panel.
    dummy: wgpu::Buffer,
    /// Bound as `dinv` and `status` by the Gram sums, which use neither.
    spare: [wgpu::Buffer; 2],
}

impl<'a> Kernels<'a> {
    pub(super) fn new(ctx: &'a GpuContext) -> Self {
        use wgpu::BufferBindingType::{Storage, Uniform};
        let (ro, rw) = (Storage { read_only: true }, Storage { read_only: false });
        let layout =
            ctx.buffer_layout("factor: a b dinv status params", &[rw, ro, rw, rw, Uniform]);
        Kernels {
            ctx,
            layout,
            params: ctx.uniform("factor params", 32),
            dummy: ctx.storage("factor dummy", 16, wgpu::BufferUsages::empty()),
            spare: [0, 1].map(|_| ctx.storage("factor spare", 16, wgpu::BufferUsages::empty())),
        }
    }

    /// One dispatch of `entry` (panel width `nb`) over `groups`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        entry_point: &'static str,
        nb: usize,
        a: &wgpu::Buffer,
        b: Option<&wgpu::Buffer>,
        dinv: &wgpu::Buffer,
        status: &wgpu::Buffer,
        p: FactorParams,
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let ctx = self.ctx;
        let pipeline = ctx.pipeline(
            "factor",
            source::FACTOR,
            entry_point,
            &self.layout,
            &[("NB", nb as f64)],
        )?;
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("factor"),
            layout: &self.layout,
            entries: &[
                entry(0, a),
                entry(1, b.unwrap_or(&self.dummy)),
                entry(2, dinv),
                entry(3, status),
                entry(4, &self.params),
            ],
        });
        ctx.queue()
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        ctx.dispatch(entry_point, &pipeline, &bind, groups);
        Ok(())
    }

    /// [`shears_core::reference::hessian::Hessian::factor`] on the device;
    /// `Ok(Err(refusal))` when a pivot failed. Panels of `nb` (a multiple
    /// of 16, at most 256) columns.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn factor(
        &self,
        gram: &[f32],
        n: usize,
        nb: usize,
        dampening: f64,
        act_order: ActOrder,
        dead: Vec<bool>,
        order: Vec<usize>,
    ) -> Result<std::result::Result<Factor, shears_core::Error>> {
        let ctx = self.ctx;
        let t = n.div_ceil(nb).max(1);
        let big = t * nb;
        let panel_bytes = big * nb * 4;
        if panel_bytes as u64 > ctx.limits.max_storage_buffer_binding_size {
            return Err(Error::Unsupported(format!(
                "a {big}×{nb} panel of the Hessian's factor exceeds one GPU binding"
            )));
        }
        let h = Reversed::new(gram, n, &dead, &order, dampening);
        let usage = wgpu::BufferUsages::COPY_SRC;
        let mut panels = Vec::with_capacity(t);
        for k in 0..t {
            let k0 = k * nb;
            let mut host = vec![0.0f32; (big - k0) * nb];
            for (ri, row) in host.chunks_exact_mut(nb).enumerate() {
                let r = k0 + ri;
                for (c, v) in row.iter_mut().enumerate() {
                    let cg = k0 + c;
                    *v = match (r < n && cg < n, r.cmp(&cg)) {
                        (_, std::cmp::Ordering::Less) => 0.0,
                        (true, _) => h.at(r, cg),
                        (false, std::cmp::Ordering::Equal) => 1.0,
                        (false, _) => 0.0,
                    };
                }
            }
            let buf = ctx.storage("factor panel", host.len() * 4, usage);
            ctx.upload(&buf, 0, bytemuck::cast_slice(&host));
            panels.push(buf);
        }
        let dinv = ctx.storage("factor dinv", t * nb * nb * 4, wgpu::BufferUsages::COPY_SRC);
        let status = ctx.storage("factor status", 4, usage);
        ctx.upload(&status, 0, bytemuck::bytes_of(&NO_FAILURE));
        let scratch = ctx.storage("factor column", panel_bytes, usage);
        let p = |a_row0: usize, b_row0: usize, k0: usize, tile: usize| FactorParams {
            n: big as u32,
            a_row0: a_row0 as u32,
            b_row0: b_row0 as u32,
            k0: k0 as u32,
            tile: tile as u32,
            ..Default::default()
        };
        let tiles = (nb / 16) as u32;
        // L, right-looking.
        for k in 0..t {
            let k0 = k * nb;
            let pk = &panels[k];
            let one = (1, 1, 1);
            for step in ["potrf_diag", "invert_diag"] {
                let pr = p(k0, 0, k0, k);
                self.run(step, nb, pk, None, &dinv, &status, pr, one)?;
            }
            if k + 1 == t {
                continue;
            }
            let below = ctx.grid_2d(big - k0 - nb);
            self.run("trsm", nb, pk, None, &dinv, &status, p(k0, 0, k0, k), below)?;
            for (j, pj) in panels.iter().enumerate().skip(k + 1) {
                let j0 = j * nb;
                let groups = (tiles, ((big - j0) / 16) as u32, 1);
                self.run(
                    "syrk",
                    nb,
                    pj,
                    Some(pk),
                    &dinv,
                    &status,
                    p(j0, k0, j0, k),
                    groups,
                )?;
            }
        }
        // L⁻¹, a column panel at a time into `scratch`, then over panel k
        // (which no later column reads).
        for k in 0..t {
            let k0 = k * nb;
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("factor column"),
                });
            enc.clear_buffer(&scratch, 0, None);
            let tile_bytes = (nb * nb * 4) as u64;
            enc.copy_buffer_to_buffer(&dinv, k as u64 * tile_bytes, &scratch, 0, tile_bytes);
            ctx.queue().submit([enc.finish()]);
            for (s, ps) in panels.iter().enumerate().skip(k) {
                let s0 = s * nb;
                if s > k {
                    let one = (1, 1, 1);
                    self.run(
                        "inv_apply",
                        nb,
                        &scratch,
                        None,
                        &dinv,
                        &status,
                        p(k0, 0, s0, s),
                        one,
                    )?;
                }
                if s + 1 < t {
                    let groups = (tiles, ((big - s0 - nb) / 16) as u32, 1);
                    let pr = p(k0, s0, s0, s);
                    self.run(
                        "inv_update",
                        nb,
                        &scratch,
                        Some(ps),
                        &dinv,
                        &status,
                        pr,
                        groups,
                    )?;
                }
            }
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("factor column back"),
                });
            let len = ((big - k0) * nb * 4) as u64;
            enc.copy_buffer_to_buffer(&scratch, 0, &panels[k], 0, len);
            ctx.queue().submit([enc.finish()]);
        }
        ctx.check("the Hessian's factor")?;
        let failed: u32 = *bytemuck::from_bytes(&ctx.read_back(&status, 0, 4)?);
        if failed != NO_FAILURE {
            let pivot = (failed as usize).min(n.saturating_sub(1));
            return Ok(Err(not_positive_definite(n - 1 - pivot, dampening)));
        }
        // U[i][j] = L⁻¹[n−1−i][n−1−j].
        let mut u = vec![0.0f32; n * n];
        for (k, pk) in panels.iter().enumerate() {
            let k0 = k * nb;
            if k0 >= n {
                break;
            }
            let bytes = ctx.read_back(pk, 0, ((n - k0) * nb * 4) as u64)?;
            let x: &[f32] = bytemuck::cast_slice(&bytes);
            for (ri, row) in x.chunks_exact(nb).enumerate() {
                let r = k0 + ri;
                for (c, &v) in row.iter().enumerate().take((n - k0).min(nb)) {
                    let cg = k0 + c;
                    if cg <= r {
                        u[(n - 1 - r) * n + (n - 1 - cg)] = v;
                    }
                }
            }
        }
        if u.iter().any(|v| !v.is_finite()) {
            return Ok(Err(not_positive_definite(0, dampening)));
        }
        Ok(Ok(Factor {
            n,
            u,
            dead,
            order,
            act_order,
        }))
    }
}

/// XᵀX summed on the device; see the module docs.
pub(super) struct GpuGram<'a> {
    k: Kernels<'a>,
    n: usize,
    /// (first row, rows, buffer [rows, n]) of each row panel of the sum.
    panels: Vec<(usize, usize, wgpu::Buffer)>,
    x: wgpu::Buffer,
    /// Rows of X one upload holds.
    x_rows: usize,
}

impl<'a> GpuGram<'a> {
    pub(super) fn new(ctx: &'a GpuContext, n: usize) -> Self {
        let k = Kernels::new(ctx);
        let per = (ctx.chunk_bytes() as usize / (4 * n.max(1))).clamp(1, n.max(1));
        let usage = wgpu::BufferUsages::COPY_SRC;
        let panels = (0..n)
            .step_by(per)
            .map(|r0| {
                let rows = per.min(n - r0);
                let buf = ctx.storage("gram panel", rows * n * 4, usage);
                (r0, rows, buf)
            })
            .collect();
        let x = ctx.storage("gram x", per * n * 4, wgpu::BufferUsages::empty());
        GpuGram {
            k,
            n,
            panels,
            x,
            x_rows: per,
        }
    }
}

impl GramSum for GpuGram<'_> {
    fn add(&mut self, x: &[f32], rows: usize) -> shears_core::Result<()> {
        check_chunk(self.n, x, rows)?;
        let n = self.n;
        let ctx = self.k.ctx;
        let mut t0 = 0;
        while t0 < rows {
            let tr = self.x_rows.min(rows - t0);
            ctx.upload(&self.x, 0, bytemuck::cast_slice(&x[t0 * n..(t0 + tr) * n]));
            for (r0, pr, buf) in &self.panels {
                let p = FactorParams {
                    n: n as u32,
                    k0: *r0 as u32,
                    rows: *pr as u32,
                    tokens: tr as u32,
                    ..Default::default()
                };
                let groups = (n.div_ceil(16) as u32, pr.div_ceil(16) as u32, 1);
                let [s0, s1] = &self.k.spare;
                self.k
                    .run("gram", 64, buf, Some(&self.x), s0, s1, p, groups)
                    .map_err(super::GpuHessian::gpu_err)?;
            }
            t0 += tr;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> shears_core::Result<Vec<f32>> {
        let n = self.n;
        let ctx = self.k.ctx;
        let mut g = vec![0.0f32; n * n];
        for (r0, rows, buf) in &self.panels {
            let bytes = ctx
                .read_back(buf, 0, (rows * n * 4) as u64)
                .map_err(super::GpuHessian::gpu_err)?;
            g[r0 * n..(r0 + rows) * n].copy_from_slice(bytemuck::cast_slice(&bytes));
        }
        for i in 0..n {
            for j in 0..i {
                g[i * n + j] = g[j * n + i];
            }
        }
        Ok(g)
    }
}
