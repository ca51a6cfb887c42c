//! The quant family's way back on the GPU: packed compressed-tensors codes
//! to dense values, and the family behind shears-core's `Quant` trait.

use shears_core::ops::quant::ErrorStats;
use shears_core::reference::matmul::PackedWeight;
use shears_core::reference::quant::{QuantSpec, Quantized, Rounding};
use shears_core::{DType, TensorView};

use super::{GpuQuant, QuantParams};
use crate::chunk::split;
use crate::context::entry;
use crate::{source, Error, GpuContext, Result};

impl GpuQuant<'_> {
    /// The dense values, as bytes of `dtype` (f32, f16 or bf16), of a
    /// packed compressed-tensors weight: (q − zp)·scale rounded to the
    /// dtype, byte-identical to the CPU's `dequantize_packed`.
    pub fn dequantize_packed(&self, w: &PackedWeight, dtype: DType) -> Result<Vec<u8>> {
        w.check()?;
        let ctx = self.ctx;
        let (rows, cols) = (w.rows, w.cols);
        let esize = match dtype {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            other => {
                return Err(Error::Unsupported(format!(
                    "dequantization to {other}: only f32, f16 and bf16"
                )))
            }
        };
        let mut out = Vec::with_capacity(rows * cols * esize);
        if rows == 0 || cols == 0 {
            return Ok(out);
        }
        let (wpr, groups) = (w.words_per_row(), w.groups());
        let budget = ctx.chunk_bytes() as usize;
        let per = (budget / (wpr * 4).max(cols * esize + 4))
            .min(budget / (groups * 4))
            .min(rows);
        if per == 0 {
            return Err(Error::Unsupported(format!(
                "a row of {cols} elements is larger than one GPU binding ({budget} bytes)"
            )));
        }
        let src = ctx.storage("dequant codes", per * wpr * 4, wgpu::BufferUsages::empty());
        let sbuf = ctx.storage(
            "dequant scales",
            per * groups * 4,
            wgpu::BufferUsages::empty(),
        );
        let zbuf = ctx.storage(
            "dequant zero points",
            if w.zero_points.is_some() {
                per * groups * 4
            } else {
                4
            },
            wgpu::BufferUsages::empty(),
        );
        let obuf = ctx.storage(
            "dequant out",
            (per * cols * esize).next_multiple_of(4),
            wgpu::BufferUsages::COPY_SRC,
        );
        let pbuf = ctx.uniform("dequant uniforms", 32);
        let layout = dequant_layout(ctx);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dequantize_packed"),
            layout: &layout,
            entries: &[
                entry(0, &src),
                entry(1, &pbuf),
                entry(4, &sbuf),
                entry(5, &zbuf),
                entry(6, &obuf),
            ],
        });
        let code = match dtype {
            DType::F16 => 1.0,
            DType::BF16 => 2.0,
            _ => 0.0,
        };
        let pipeline = ctx.pipeline(
            "quant",
            source::QUANT,
            "dequantize_packed",
            &layout,
            &[
                ("DTYPE", code),
                ("BITS", w.bits as f64),
                ("SYMMETRIC", if w.zero_points.is_some() { 0.0 } else { 1.0 }),
            ],
        )?;
        for rr in split(rows, per) {
            ctx.upload(
                &src,
                0,
                bytemuck::cast_slice(&w.words[rr.start * wpr..rr.end * wpr]),
            );
            ctx.upload(
                &sbuf,
                0,
                bytemuck::cast_slice(&w.scales[rr.start * groups..rr.end * groups]),
            );
            if let Some(z) = w.zero_points {
                ctx.upload(
                    &zbuf,
                    0,
                    bytemuck::cast_slice(&z[rr.start * groups..rr.end * groups]),
                );
            }
            let p = QuantParams {
                rows: rr.len() as u32,
                cols: cols as u32,
                group: w.group as u32,
                groups: groups as u32,
                first: 0,
                ..Default::default()
            };
            ctx.queue().write_buffer(&pbuf, 0, bytemuck::bytes_of(&p));
            let n = rr.len() * cols;
            let words = if esize == 4 { n } else { n.div_ceil(2) };
            let dims = ctx.grid_2d(words.div_ceil(256));
            let idx = ctx.dispatch("dequantize_packed", &pipeline, &bind, dims);
            ctx.wait(Some(idx))?;
            out.extend(ctx.read_back(&obuf, 0, (n * esize) as u64)?);
        }
        Ok(out)
    }
}

/// Bindings 0, 1, 4, 5, 6 of quant.wgsl, as dequantize_packed uses them.
fn dequant_layout(ctx: &GpuContext) -> std::sync::Arc<wgpu::BindGroupLayout> {
    let buffer = |binding: u32, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    use wgpu::BufferBindingType::{Storage, Uniform};
    let ro = Storage { read_only: true };
    ctx.layout(
        "quant dequantize: src params _ _ scale zp out",
        &[
            buffer(0, ro),
            buffer(1, Uniform),
            buffer(4, ro),
            buffer(5, ro),
            buffer(6, Storage { read_only: false }),
        ],
    )
}

/// The GPU's quant family behind the shared trait. Pruned elements
/// (`keep` 0) are zeroed in a copy before the upload.
impl shears_core::ops::quant::Quant for GpuQuant<'_> {
    fn backend(&self) -> &'static str {
        "gpu"
    }

    fn quantize(
        &self,
        spec: &QuantSpec,
        w: &TensorView,
        keep: Option<&[u8]>,
        rounding: Rounding,
        out: &mut Quantized,
    ) -> shears_core::Result<ErrorStats> {
        let (q, stats) = match keep {
            None => self.quantize_view_with_stats(spec, w, rounding)?,
            Some(k) => {
                let pruned = shears_core::TensorBuf {
                    dtype: w.dtype(),
                    shape: w.shape().to_vec(),
                    data: shears_core::reference::mask::zero_pruned(w.dtype(), w.bytes(), k),
                };
                self.quantize_view_with_stats(spec, &pruned.view(), rounding)?
            }
        };
        *out = q;
        Ok(stats)
    }

    fn dequantize_packed(&self, w: &PackedWeight, dtype: DType) -> shears_core::Result<Vec<u8>> {
        Ok(GpuQuant::dequantize_packed(self, w, dtype)?)
    }
}
