//! GPU pipeline of the `quant` family (`shaders/quant.wgsl`): per-group
//! parameters and codes, byte-identical to
//! `shears_core::reference::quant::quantize_matrix`.

use shears_core::fast::quant::ErrorStats;
use shears_core::reference::quant::{QParams, QuantSpec, Quantized, Rounding};
use shears_core::{DType, TensorView};

use crate::chunk::{split, upload_window};
use crate::context::entry;
use crate::{source, Error, GpuContext, Result};

/// Uniform parameters; mirrors `Params` in the WGSL header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct QuantParams {
    rows: u32,
    cols: u32,
    group: u32,
    groups: u32,
    first: u32,
    /// Word offset in `src` of the importances (GGUF with an
    /// importance matrix).
    qw_at: u32,
    /// Always 0: kexact.wgsl's `opaque` ORs it into values so the shader
    /// compiler cannot regroup adds of constants.
    zero: u32,
    /// Weighted 32-value GGUF blocks: word offset in `qp` of each row's σ².
    sig_at: u32,
}
const _: () = assert!(std::mem::size_of::<QuantParams>() == 32);

/// The quant family on a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuQuant<'a> {
    ctx: &'a GpuContext,
}

impl<'a> GpuQuant<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        GpuQuant { ctx }
    }

    /// Quantizes a [rows, cols] float tensor.
    pub fn quantize_view(
        &self,
        spec: &QuantSpec,
        w: &TensorView,
        rounding: Rounding,
    ) -> Result<Quantized> {
        self.quantize_view_with_stats(spec, w, rounding)
            .map(|(q, _)| q)
    }

    /// Quantizes a [rows, cols] float tensor and measures what it lost in
    /// the same dispatch (per-group sums reduced in f64 on the host; not
    /// bit-identical to the CPU's statistics, which sum in another order).
    pub fn quantize_view_with_stats(
        &self,
        spec: &QuantSpec,
        w: &TensorView,
        rounding: Rounding,
    ) -> Result<(Quantized, ErrorStats)> {
        let mut stats = ErrorStats::default();
        let ctx = self.ctx;
        let (rows, cols) = w.matrix_dims();
        let esize = w.float_size()?;
        let group = spec.group_len(cols);
        let groups = cols.div_ceil(group);
        let mut codes = Vec::with_capacity(rows * cols);
        let mut params = Vec::with_capacity(rows * groups);
        if rows == 0 || cols == 0 {
            return Ok((
                Quantized {
                    rows,
                    cols,
                    group,
                    codes: vec![0; rows * cols],
                    params: vec![QParams::default(); rows * groups],
                },
                stats,
            ));
        }
        let per = (ctx.chunk_bytes() as usize - 4) / (cols * esize);
        if per == 0 {
            return Err(Error::Unsupported(format!(
                "a row of {cols} elements is larger than one GPU binding ({} bytes)",
                ctx.chunk_bytes()
            )));
        }
        let per = per.min(rows);
        let src = ctx.storage(
            "quant src",
            per * cols * esize + 4,
            wgpu::BufferUsages::empty(),
        );
        let code_buf = ctx.storage(
            "quant codes",
            (per * cols).div_ceil(4) * 4,
            wgpu::BufferUsages::COPY_SRC,
        );
        let qp_buf = ctx.storage(
            "quant params",
            per * groups * 20,
            wgpu::BufferUsages::COPY_SRC,
        );
        let pbuf = ctx.uniform("quant uniforms", 32);
        let layout = quant_layout(ctx);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("quant"),
            layout: &layout,
            entries: &[
                entry(0, &src),
                entry(1, &pbuf),
                entry(2, &code_buf),
                entry(3, &qp_buf),
            ],
        });
        let dtype = match w.dtype() {
            DType::F16 => 1.0,
            DType::BF16 => 2.0,
            _ => 0.0,
        };
        let pipeline = ctx.pipeline(
            "quant",
            source::QUANT,
            "quantize_groups",
            &layout,
            &[
                ("DTYPE", dtype),
                ("BITS", spec.bits as f64),
                ("SYMMETRIC", if spec.symmetric { 1.0 } else { 0.0 }),
                (
                    "CT_ROUNDING",
                    if rounding == Rounding::CompressedTensors {
                        1.0
                    } else {
                        0.0
                    },
                ),
            ],
        )?;
        for rr in split(rows, per) {
            let elems = rr.start * cols..rr.end * cols;
            let (bytes, first) = upload_window(&elems, esize, w.bytes().len());
            ctx.upload(&src, 0, &w.bytes()[bytes.clone()]);
            w.release(bytes);
            let p = QuantParams {
                rows: rr.len() as u32,
                cols: cols as u32,
                group: group as u32,
                groups: groups as u32,
                first,
                ..Default::default()
            };
            ctx.queue().write_buffer(&pbuf, 0, bytemuck::bytes_of(&p));
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("quant clear"),
                });
            enc.clear_buffer(&code_buf, 0, None);
            ctx.queue().submit([enc.finish()]);
            let work = rr.len() * groups;
            let g = (work as u32).clamp(1, ctx.max_groups());
            let idx = ctx.dispatch("quantize_groups", &pipeline, &bind, (g, 1, 1));
            ctx.wait(Some(idx))?;
            let n = rr.len() * cols;
            codes.extend(
                ctx.read_back(&code_buf, 0, n as u64)?
                    .iter()
                    .map(|&b| b as i8),
            );
            let words: Vec<u32> =
                bytemuck::pod_collect_to_vec(&ctx.read_back(&qp_buf, 0, (work * 20) as u64)?);
            for c in words.chunks_exact(5) {
                params.push(QParams {
                    scale: f32::from_bits(c[0]),
                    zero_point: c[1] as i32,
                });
                stats = stats.merge(ErrorStats {
                    max_abs: f32::from_bits(c[2]) as f64,
                    sum_sq_err: f32::from_bits(c[3]) as f64,
                    sum_sq: f32::from_bits(c[4]) as f64,
                });
            }
        }
        Ok((
            Quantized {
                rows,
                cols,
                group,
                codes,
                params,
            },
            stats,
        ))
    }
}

/// Bindings 0–3 of quant.wgsl (quantize_groups and the GGUF entry points).
pub(crate) fn quant_layout(ctx: &GpuContext) -> std::sync::Arc<wgpu::BindGroupLayout> {
    use wgpu::BufferBindingType::{Storage, Uniform};
    ctx.buffer_layout(
        "quant: src params(uniform) codes qp",
        &[
            Storage { read_only: true },
            Uniform,
            Storage { read_only: false },
            Storage { read_only: false },
        ],
    )
}

mod dequant;
mod gguf;
pub use gguf::GgufBlocks;
