//! Machinery shared by the scored kernels (select and mask families): the
//! bind group layout of `shaders/score.wgsl`, its uniform parameters, and
//! uploading a chunk of weights with the scorer's auxiliary inputs.

use std::ops::Range;

use shears_core::reference::score::{Method, Scorer};
use shears_core::{DType, TensorView};

use crate::chunk::upload_window;
use crate::context::entry;
use crate::{GpuContext, Result};

/// Uniform parameters of every scored entry point; mirrors `Params` in
/// `shaders/score.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ScoredParams {
    pub count: u32,
    pub first: u32,
    pub aux_first: u32,
    pub base: u32,
    pub cols: u32,
    pub salt: u32,
    pub lo: u32,
    pub hi: u32,
    pub ties: u32,
    pub k: u32,
    pub hi16: u32,
    pub cap: u32,
    pub rows: u32,
    pub n: u32,
    pub m: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<ScoredParams>() == 64);

fn dtype_code(d: DType) -> f64 {
    match d {
        DType::F16 => 1.0,
        DType::BF16 => 2.0,
        _ => 0.0,
    }
}

/// One tensor being processed by a scored family on the GPU.
pub(crate) struct ScoredJob<'a> {
    ctx: &'a GpuContext,
    family: &'static str,
    source: &'static str,
    w: &'a TensorView<'a>,
    scorer: &'a Scorer<'a>,
    src: wgpu::Buffer,
    aux: wgpu::Buffer,
    params: wgpu::Buffer,
    pub out0: wgpu::Buffer,
    pub out1: wgpu::Buffer,
    bind: wgpu::BindGroup,
    layout: std::sync::Arc<wgpu::BindGroupLayout>,
    /// Parameters common to every chunk (cols, salt).
    pub base: ScoredParams,
}

impl<'a> ScoredJob<'a> {
    /// Largest chunk (elements) whose weight and gradient windows fit one
    /// binding.
    pub fn max_elems(ctx: &GpuContext, w: &TensorView, scorer: &Scorer) -> Result<usize> {
        let mut size = w.float_size()?;
        if let (Method::Taylor, Some(g)) = (scorer.method, &scorer.grad) {
            size = size.max(g.float_size()?);
        }
        Ok((ctx.chunk_bytes() as usize - 4) / size)
    }

    /// Whole rows of `cols` elements per chunk, or a clear error when one
    /// row does not fit a binding.
    pub fn rows_per_chunk(
        ctx: &GpuContext,
        w: &TensorView,
        scorer: &Scorer,
        cols: usize,
    ) -> Result<usize> {
        let per = Self::max_elems(ctx, w, scorer)? / cols.max(1);
        if per == 0 {
            return Err(crate::Error::Unsupported(format!(
                "a row of {cols} elements is larger than one GPU binding ({} bytes)",
                ctx.chunk_bytes()
            )));
        }
        Ok(per)
    }

    /// Prepares buffers for chunks of up to `max_elems` elements of `w`
    /// for the shader (family name, source), with
    /// outputs of `out0_bytes` and `out1_bytes`.
    pub fn new(
        ctx: &'a GpuContext,
        (family, source): (&'static str, &'static str),
        w: &'a TensorView<'a>,
        scorer: &'a Scorer<'a>,
        max_elems: usize,
        out0_bytes: u64,
        out1_bytes: u64,
    ) -> Result<Self> {
        scorer.check(w)?;
        let esize = w.float_size()?;
        let (_, cols) = w.matrix_dims();
        let storage = |label: &str, size: u64, extra: wgpu::BufferUsages| {
            ctx.buffer(
                label,
                size,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
            )
        };
        let src = storage(
            "scored src",
            (max_elems * esize + 4) as u64,
            wgpu::BufferUsages::empty(),
        );
        let aux = match (scorer.method, scorer.norms, &scorer.grad) {
            (Method::Wanda, Some(norms), _) => {
                let b = storage(
                    "scored aux (input norms)",
                    (norms.len() * 4) as u64,
                    wgpu::BufferUsages::empty(),
                );
                ctx.upload(&b, 0, bytemuck::cast_slice(norms));
                b
            }
            (Method::Taylor, _, Some(g)) => storage(
                "scored aux (gradient)",
                (max_elems * g.float_size()? + 4) as u64,
                wgpu::BufferUsages::empty(),
            ),
            _ => storage("scored aux (unused)", 4, wgpu::BufferUsages::empty()),
        };
        let params = ctx.buffer(
            "scored params",
            std::mem::size_of::<ScoredParams>() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let out0 = storage("scored out0", out0_bytes, wgpu::BufferUsages::COPY_SRC);
        let out1 = storage("scored out1", out1_bytes, wgpu::BufferUsages::COPY_SRC);
        let layout = scored_layout(ctx);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(family),
            layout: &layout,
            entries: &[
                entry(0, &src),
                entry(1, &aux),
                entry(2, &params),
                entry(3, &out0),
                entry(4, &out1),
            ],
        });
        Ok(ScoredJob {
            ctx,
            family,
            source,
            w,
            scorer,
            src,
            aux,
            params,
            out0,
            out1,
            bind,
            layout,
            base: ScoredParams {
                cols: cols as u32,
                salt: scorer.salt,
                ..Default::default()
            },
        })
    }

    /// Uploads elements `range` (and the matching gradient window) and
    /// returns the chunk's parameters, to be completed by the caller.
    pub fn load(&self, range: Range<usize>) -> Result<ScoredParams> {
        let esize = self.w.float_size()?;
        let (bytes, first) = upload_window(&range, esize, self.w.bytes().len());
        self.ctx
            .upload(&self.src, 0, &self.w.bytes()[bytes.clone()]);
        self.w.release(bytes);
        let mut aux_first = 0;
        if let (Method::Taylor, Some(g)) = (self.scorer.method, &self.scorer.grad) {
            let (gb, gf) = upload_window(&range, g.float_size()?, g.bytes().len());
            self.ctx.upload(&self.aux, 0, &g.bytes()[gb]);
            aux_first = gf;
        }
        Ok(ScoredParams {
            count: range.len() as u32,
            first,
            aux_first,
            base: range.start as u32,
            ..self.base
        })
    }

    /// Zero-fills the first `bytes` of `buf`.
    pub fn clear(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<()> {
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("clear"),
            });
        enc.clear_buffer(buf, 0, Some(bytes.next_multiple_of(4)));
        self.ctx.queue().submit([enc.finish()]);
        Ok(())
    }

    /// Runs `entry` with parameters `p` over `groups` workgroups and waits.
    pub fn dispatch(&self, entry: &'static str, p: &ScoredParams, groups: u32) -> Result<()> {
        let aux_dtype = match (self.scorer.method, &self.scorer.grad) {
            (Method::Taylor, Some(g)) => dtype_code(g.dtype()),
            _ => 0.0,
        };
        let pipeline = self.ctx.pipeline(
            self.family,
            self.source,
            entry,
            &self.layout,
            &[
                ("DTYPE", dtype_code(self.w.dtype())),
                ("AUX_DTYPE", aux_dtype),
                ("METHOD", self.scorer.method.code() as f64),
            ],
        )?;
        self.ctx
            .queue()
            .write_buffer(&self.params, 0, bytemuck::bytes_of(p));
        let idx = self
            .ctx
            .dispatch(entry, &pipeline, &self.bind, (groups.max(1), 1, 1));
        self.ctx.wait(Some(idx))
    }

    /// Reads `bytes` from the start of `buf`.
    pub fn read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.ctx.read_back(buf, 0, bytes)
    }

    /// Writes `words` at the start of `buf`.
    pub fn write(&self, buf: &wgpu::Buffer, words: &[u32]) {
        self.ctx.upload(buf, 0, bytemuck::cast_slice(words));
    }
}

fn scored_layout(ctx: &GpuContext) -> std::sync::Arc<wgpu::BindGroupLayout> {
    use wgpu::BufferBindingType::{Storage, Uniform};
    let (ro, rw) = (Storage { read_only: true }, Storage { read_only: false });
    ctx.buffer_layout(
        "scored: src aux params(uniform) out0 out1",
        &[ro, ro, Uniform, rw, rw],
    )
}
