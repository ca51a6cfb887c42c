//! GPU side of the `forward` family (`shaders/forward.wgsl`, and the matmul
//! family's tiled product for the linear layers): the `Forward` trait of
//! shears-core on wgpu. Each call uploads its inputs, records its
//! dispatches and reads its result back; a weight wider than one binding
//! is multiplied in blocks of output rows. Agrees with the CPU reference
//! within `FORWARD_RTOL` of the largest magnitude.

use std::sync::Arc;

use shears_core::model::rope::RopeTable;
use shears_core::reference::forward::{AttnShape, Forward};
use shears_core::train::device::Device;

use crate::context::entry;
use crate::{source, GpuBuf, GpuContext, GpuTrain};

/// Uniform parameters; mirrors `Params` in shaders/forward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ForwardParams {
    n: u32,
    width: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    seq_len: u32,
    f0: f32,
    u0: u32,
}
const _: () = assert!(std::mem::size_of::<ForwardParams>() == 32);

/// Workgroup size of every forward entry point.
const WG: usize = 64;

/// The forward operations on a GPU.
pub struct GpuForward<'a> {
    ctx: &'a GpuContext,
    train: GpuTrain<'a>,
    layout: Arc<wgpu::BindGroupLayout>,
}

impl<'a> GpuForward<'a> {
    /// Forward operations running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        use wgpu::BufferBindingType::{Storage, Uniform};
        let (ro, rw) = (Storage { read_only: true }, Storage { read_only: false });
        let layout = ctx.buffer_layout(
            "forward: in0 in1 in2 out0 params",
            &[ro, ro, ro, rw, Uniform],
        );
        GpuForward {
            ctx,
            train: GpuTrain::new(ctx),
            layout,
        }
    }

    /// Uploads `data` (a one-value dummy when empty).
    fn up(&self, data: &[f32]) -> shears_core::Result<GpuBuf> {
        if data.is_empty() {
            return self.train.zeros(1);
        }
        self.train.upload(data)
    }

    /// Runs `entry` over `p.n` invocations and returns `out` read back.
    fn run(
        &self,
        entry_point: &'static str,
        ins: [&GpuBuf; 3],
        out: &GpuBuf,
        p: ForwardParams,
    ) -> shears_core::Result<Vec<f32>> {
        let ctx = self.ctx;
        let pipeline = ctx.pipeline("forward", source::FORWARD, entry_point, &self.layout, &[])?;
        let params = ctx.uniform("forward params", 32);
        ctx.queue().write_buffer(&params, 0, bytemuck::bytes_of(&p));
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry_point),
            layout: &self.layout,
            entries: &[
                entry(0, ins[0].raw()),
                entry(1, ins[1].raw()),
                entry(2, ins[2].raw()),
                entry(3, out.raw()),
                entry(4, &params),
            ],
        });
        let groups = ctx.grid_2d((p.n as usize).div_ceil(WG));
        ctx.dispatch(entry_point, &pipeline, &bind, groups);
        self.train.download(out)
    }
}

impl Forward for GpuForward<'_> {
    fn backend(&self) -> &'static str {
        "gpu"
    }

    fn linear(
        &self,
        x: &[f32],
        p: usize,
        w: &[f32],
        out: usize,
        bias: Option<&[f32]>,
    ) -> shears_core::Result<Vec<f32>> {
        let inn = x.len().checked_div(p).unwrap_or(0);
        let mut y = vec![0.0f32; p * out];
        if p == 0 || out == 0 || inn == 0 {
            return Ok(y);
        }
        {
            let xb = self.up(x)?;
            // Blocks of weight rows that fit one binding (and the output).
            let limit = (self.ctx.chunk_bytes() as usize / 4).max(inn);
            let rows = (limit / inn).min(limit / p).max(1);
            let mut o0 = 0;
            while o0 < out {
                let n = rows.min(out - o0);
                let wb = self.up(&w[o0 * inn..(o0 + n) * inn])?;
                let mut yb = self.train.zeros(p * n)?;
                self.train
                    .matmul(&xb, &wb, &mut yb, p, inn, n, false, true)?;
                let part = self.train.download(&yb)?;
                for (r, row) in part.chunks_exact(n).enumerate() {
                    y[r * out + o0..r * out + o0 + n].copy_from_slice(row);
                }
                o0 += n;
            }
        }
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(out) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        Ok(y)
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> shears_core::Result<Vec<f32>> {
        {
            let (xb, wb, dummy) = (self.up(x)?, self.up(w)?, self.up(&[])?);
            let out = self.train.zeros(x.len().max(1))?;
            let p = ForwardParams {
                n: (x.len() / w.len().max(1)) as u32,
                width: w.len() as u32,
                f0: eps,
                ..Default::default()
            };
            let mut y = self.run("rms_norm", [&xb, &wb, &dummy], &out, p)?;
            y.truncate(x.len());
            Ok(y)
        }
    }

    fn rope(
        &self,
        x: &mut [f32],
        _seqs: usize,
        seq_len: usize,
        heads: usize,
        t: &RopeTable,
    ) -> shears_core::Result<()> {
        let half = t.half;
        if x.is_empty() || half == 0 {
            return Ok(());
        }
        let y = {
            let (cos, sin): (Vec<f32>, Vec<f32>) = (
                (0..seq_len).flat_map(|p| t.cos(p).to_vec()).collect(),
                (0..seq_len).flat_map(|p| t.sin(p).to_vec()).collect(),
            );
            let (cb, sb, dummy) = (self.up(&cos)?, self.up(&sin)?, self.up(&[])?);
            let xb = self.up(x)?;
            let p = ForwardParams {
                n: (x.len() / 2) as u32,
                heads: heads as u32,
                head_dim: (2 * half) as u32,
                seq_len: seq_len as u32,
                ..Default::default()
            };
            self.run("rope", [&cb, &sb, &dummy], &xb, p)?
        };
        x.copy_from_slice(&y[..x.len()]);
        Ok(())
    }

    fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttnShape,
    ) -> shears_core::Result<Vec<f32>> {
        {
            let (qb, kb, vb) = (self.up(q)?, self.up(k)?, self.up(v)?);
            let out = self.train.zeros(q.len().max(1))?;
            let p = ForwardParams {
                n: (s.seqs * s.seq_len * s.heads) as u32,
                heads: s.heads as u32,
                kv_heads: s.kv_heads as u32,
                head_dim: s.head_dim as u32,
                seq_len: s.seq_len as u32,
                f0: 1.0 / (s.head_dim as f32).sqrt(),
                ..Default::default()
            };
            let mut y = self.run("attention", [&qb, &kb, &vb], &out, p)?;
            y.truncate(q.len());
            Ok(y)
        }
    }

    fn silu_mul(&self, gate: &[f32], up: &[f32]) -> shears_core::Result<Vec<f32>> {
        {
            let (gb, ub, dummy) = (self.up(gate)?, self.up(up)?, self.up(&[])?);
            let out = self.train.zeros(gate.len().max(1))?;
            let p = ForwardParams {
                n: gate.len() as u32,
                ..Default::default()
            };
            let mut y = self.run("silu_mul", [&gb, &ub, &dummy], &out, p)?;
            y.truncate(gate.len());
            Ok(y)
        }
    }

    fn nll(&self, logits: &[f32], vocab: usize, targets: &[u32]) -> shears_core::Result<Vec<f32>> {
        {
            let t: Vec<f32> = targets.iter().map(|&t| t as f32).collect();
            let (lb, tb, dummy) = (self.up(logits)?, self.up(&t)?, self.up(&[])?);
            let out = self.train.zeros(targets.len().max(1))?;
            let p = ForwardParams {
                n: targets.len() as u32,
                width: vocab as u32,
                ..Default::default()
            };
            let mut y = self.run("nll", [&lb, &tb, &dummy], &out, p)?;
            y.truncate(targets.len());
            Ok(y)
        }
    }
}
