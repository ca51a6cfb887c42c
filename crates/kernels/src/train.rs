//! GPU training operations (`shaders/train.wgsl`, and the matmul family's
//! tiled product for the three products): the [`Device`] trait of
//! shears-core on wgpu buffers, so the training loops run unchanged on the
//! GPU. Each op records one dispatch and submits it without waiting; the
//! queue keeps them in order, and only a download (or a loss, which comes
//! back as per-row values summed on the host like the CPU's) waits.

use std::sync::Arc;

use shears_core::train::device::Device;

use crate::context::entry;
use crate::{source, Error, GpuContext};

/// Uniform parameters; mirrors `Params` in the WGSL header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct TrainParams {
    m: u32,
    k: u32,
    n: u32,
    flags: u32,
    f: [f32; 6],
    u4: u32,
    u5: u32,
}
const _: () = assert!(std::mem::size_of::<TrainParams>() == 48);

/// Tile edge of the matmul family's product.
const TS: usize = 16;
/// Workgroup size of the elementwise entry points.
const WG: usize = 256;

/// A buffer of f32 on the GPU.
#[derive(Debug)]
pub struct GpuBuf {
    buf: wgpu::Buffer,
    len: usize,
}

impl GpuBuf {
    /// Number of f32 values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wgpu buffer, for other families' bind groups.
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        &self.buf
    }
}

/// The training operations on a GPU.
#[derive(Debug)]
pub struct GpuTrain<'a> {
    ctx: &'a GpuContext,
    dummy: wgpu::Buffer,
    spares: [wgpu::Buffer; 3],
    params: wgpu::Buffer,
    mm_params: wgpu::Buffer,
    layout: Arc<wgpu::BindGroupLayout>,
}

impl<'a> GpuTrain<'a> {
    /// Training operations running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        use wgpu::BufferBindingType::{Storage, Uniform};
        let (ro, rw) = (Storage { read_only: true }, Storage { read_only: false });
        let layout = ctx.buffer_layout(
            "train: in0 in1 in2 out0 out1 out2 params(uniform)",
            &[ro, ro, ro, rw, rw, rw, Uniform],
        );
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        GpuTrain {
            ctx,
            dummy: ctx.buffer("train dummy", 16, storage),
            // One per writable slot: a buffer may not be bound writable twice.
            spares: std::array::from_fn(|_| ctx.buffer("train spare", 16, storage)),
            params: ctx.uniform("train params", 48),
            mm_params: ctx.uniform("train product params", 32),
            layout,
        }
    }

    fn storage(&self, len: usize) -> GpuBuf {
        GpuBuf {
            buf: self.ctx.buffer(
                "train buffer",
                (len * 4) as u64,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            ),
            len,
        }
    }

    /// Records and submits one dispatch of `entry`.
    fn run(
        &self,
        entry_point: &'static str,
        ins: [Option<&GpuBuf>; 3],
        outs: [Option<&GpuBuf>; 3],
        params: TrainParams,
        groups: (u32, u32),
    ) -> shears_core::Result<()> {
        self.run_module(
            "train",
            source::TRAIN,
            entry_point,
            ins,
            outs,
            params,
            groups,
        )
    }

    /// Records and submits one dispatch of `entry` of the module `source`
    /// (named `shader`), which uses this family's bind layout.
    #[allow(clippy::too_many_arguments)]
    fn run_module(
        &self,
        shader: &'static str,
        source: &'static str,
        entry_point: &'static str,
        ins: [Option<&GpuBuf>; 3],
        outs: [Option<&GpuBuf>; 3],
        params: TrainParams,
        groups: (u32, u32),
    ) -> shears_core::Result<()> {
        let ctx = self.ctx;
        let pipeline = ctx.pipeline(shader, source, entry_point, &self.layout, &[])?;
        ctx.queue()
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        let in_buf = |i: usize| ins[i].map_or(&self.dummy, |b| &b.buf);
        let out_buf = |i: usize| outs[i].map_or(&self.spares[i], |b| &b.buf);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry_point),
            layout: &self.layout,
            entries: &[
                entry(0, in_buf(0)),
                entry(1, in_buf(1)),
                entry(2, in_buf(2)),
                entry(3, out_buf(0)),
                entry(4, out_buf(1)),
                entry(5, out_buf(2)),
                entry(6, &self.params),
            ],
        });
        ctx.dispatch(entry_point, &pipeline, &bind, (groups.0, groups.1, 1));
        Ok(())
    }

    /// Workgroups for `n` invocations of 256, as a 2-D grid.
    fn grid(&self, n: usize) -> (u32, u32) {
        let (x, y, _) = self.ctx.grid_2d(n.div_ceil(WG));
        (x, y)
    }

    /// An elementwise op over `n` values.
    fn elementwise(
        &self,
        entry_point: &'static str,
        ins: [Option<&GpuBuf>; 3],
        out: &GpuBuf,
        n: usize,
    ) -> shears_core::Result<()> {
        let p = TrainParams {
            m: n as u32,
            ..Default::default()
        };
        self.run(entry_point, ins, [Some(out), None, None], p, self.grid(n))
    }

    /// Sums per-row values in f64, in row order, as the CPU does.
    fn row_total(&self, rows: &GpuBuf) -> shears_core::Result<f64> {
        let v = self.download(rows)?;
        Ok(v.iter().map(|&x| x as f64).sum())
    }
}

fn check_len(what: &str, b: &GpuBuf, need: usize) -> shears_core::Result<()> {
    if b.len < need {
        return Err(Error::Unsupported(format!(
            "{what}: a buffer of {} values where {need} are needed",
            b.len
        ))
        .into());
    }
    Ok(())
}

mod block;
mod device;
