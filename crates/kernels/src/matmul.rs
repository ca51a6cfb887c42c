//! GPU pipelines of the `matmul` family (`shaders/matmul.wgsl`): Y =
//! X·(W⊙M)ᵀ and Y = X·dequant(Q)ᵀ in chunks of weight rows, X resident.

use shears_core::reference::matmul::{check_packed, check_shapes, Matmul, PackedWeight};
use shears_core::{DType, TensorView};

use crate::chunk::{split, upload_window};
use crate::context::entry;
use crate::{source, Error, GpuContext};

/// Uniform parameters; mirrors `Params` in the WGSL header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MatmulParams {
    pub p: u32,
    pub inn: u32,
    pub rows: u32,
    pub first: u32,
    pub group: u32,
    pub groups: u32,
    pub wpr: u32,
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 32);

/// Tile edge of the shader.
const TS: usize = 16;

/// The matmul family on a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuMatmul<'a> {
    ctx: &'a GpuContext,
}

impl<'a> GpuMatmul<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        GpuMatmul { ctx }
    }
}

impl Matmul for GpuMatmul<'_> {
    fn masked_matmul(
        &self,
        x: &[f32],
        p: usize,
        w: &TensorView,
        mask: Option<&[u8]>,
    ) -> shears_core::Result<Vec<f32>> {
        let (out, inn) = check_shapes(x, p, w, mask)?;
        let mut y = vec![0.0f32; p * out];
        if p == 0 || out == 0 || inn == 0 {
            return Ok(y);
        }
        let ctx = self.ctx;
        let esize = w.float_size()?;
        let budget = ctx.chunk_bytes() as usize - 4;
        // Rows per chunk: weight window, mask window and outputs must fit.
        let per = (budget / (inn * esize.max(1)))
            .min(budget / (p * 4))
            .min(ctx.max_groups() as usize * TS);
        if per == 0 || x.len() * 4 > ctx.limits.max_storage_buffer_binding_size as usize {
            return Err(Error::Unsupported(format!(
                "a [{p}, {inn}] × [{out}, {inn}] product does not fit the GPU's bindings"
            ))
            .into());
        }
        let per = per.min(out);
        let wbuf = ctx.storage(
            "matmul w",
            per * inn * esize + 4,
            wgpu::BufferUsages::empty(),
        );
        let xbuf = ctx.storage("matmul x", x.len() * 4, wgpu::BufferUsages::empty());
        let mbuf = ctx.storage(
            "matmul mask",
            (per * inn).div_ceil(4) * 4,
            wgpu::BufferUsages::empty(),
        );
        let ybuf = ctx.storage("matmul y", p * per * 4, wgpu::BufferUsages::COPY_SRC);
        let zbuf = ctx.storage("matmul unused zps", 4, wgpu::BufferUsages::empty());
        let pbuf = ctx.uniform("matmul params", 32);
        ctx.upload(&xbuf, 0, bytemuck::cast_slice(x));
        let layout = matmul_layout(ctx);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("matmul"),
            layout: &layout,
            entries: &[
                entry(0, &wbuf),
                entry(1, &xbuf),
                entry(2, &pbuf),
                entry(3, &mbuf),
                entry(4, &ybuf),
                entry(5, &zbuf),
            ],
        });
        let dtype = match w.dtype() {
            DType::F16 => 1.0,
            DType::BF16 => 2.0,
            _ => 0.0,
        };
        let has_mask = if mask.is_some() { 1.0 } else { 0.0 };
        let pipeline = ctx.pipeline(
            "matmul",
            source::MATMUL,
            "masked_matmul",
            &layout,
            &[("DTYPE", dtype), ("HAS_MASK", has_mask)],
        )?;
        for rr in split(out, per) {
            let elems = rr.start * inn..rr.end * inn;
            let (bytes, first) = upload_window(&elems, esize, w.bytes().len());
            ctx.upload(&wbuf, 0, &w.bytes()[bytes]);
            if let Some(m) = mask {
                ctx.upload(&mbuf, 0, &m[elems.clone()]);
            }
            let params = MatmulParams {
                p: p as u32,
                inn: inn as u32,
                rows: rr.len() as u32,
                first,
                ..Default::default()
            };
            ctx.queue()
                .write_buffer(&pbuf, 0, bytemuck::bytes_of(&params));
            run_chunk(
                ctx,
                "masked_matmul",
                &pipeline,
                &bind,
                &ybuf,
                &mut y,
                p,
                out,
                rr,
            )?;
        }
        Ok(y)
    }

    fn dequant_matmul(
        &self,
        x: &[f32],
        p: usize,
        w: &PackedWeight,
    ) -> shears_core::Result<Vec<f32>> {
        let (out, inn) = check_packed(x, p, w)?;
        let mut y = vec![0.0f32; p * out];
        if p == 0 || out == 0 || inn == 0 {
            return Ok(y);
        }
        let ctx = self.ctx;
        let (wpr, groups) = (w.words_per_row(), w.groups());
        let budget = ctx.chunk_bytes() as usize;
        // Rows per chunk: code words, scales, zero points and outputs fit.
        let per = (budget / (wpr * 4))
            .min(budget / (groups * 4))
            .min(budget / (p * 4))
            .min(ctx.max_groups() as usize * TS);
        if per == 0 || x.len() * 4 > ctx.limits.max_storage_buffer_binding_size as usize {
            return Err(Error::Unsupported(format!(
                "a [{p}, {inn}] × [{out}, {inn}] product does not fit the GPU's bindings"
            ))
            .into());
        }
        let per = per.min(out);
        let wbuf = ctx.storage("dequant codes", per * wpr * 4, wgpu::BufferUsages::empty());
        let xbuf = ctx.storage("dequant x", x.len() * 4, wgpu::BufferUsages::empty());
        let sbuf = ctx.storage(
            "dequant scales",
            per * groups * 4,
            wgpu::BufferUsages::empty(),
        );
        let zbuf = ctx.storage(
            "dequant zps",
            if w.zero_points.is_some() {
                per * groups * 4
            } else {
                4
            },
            wgpu::BufferUsages::empty(),
        );
        let ybuf = ctx.storage("dequant y", p * per * 4, wgpu::BufferUsages::COPY_SRC);
        let pbuf = ctx.uniform("dequant params", 32);
        ctx.upload(&xbuf, 0, bytemuck::cast_slice(x));
        let layout = matmul_layout(ctx);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dequant_matmul"),
            layout: &layout,
            entries: &[
                entry(0, &wbuf),
                entry(1, &xbuf),
                entry(2, &pbuf),
                entry(3, &sbuf),
                entry(4, &ybuf),
                entry(5, &zbuf),
            ],
        });
        let pipeline = ctx.pipeline(
            "matmul",
            source::MATMUL,
            "dequant_matmul",
            &layout,
            &[
                ("BITS", w.bits as f64),
                ("HAS_ZP", if w.zero_points.is_some() { 1.0 } else { 0.0 }),
            ],
        )?;
        for rr in split(out, per) {
            ctx.upload(
                &wbuf,
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
            let params = MatmulParams {
                p: p as u32,
                inn: inn as u32,
                rows: rr.len() as u32,
                first: 0,
                group: w.group as u32,
                groups: groups as u32,
                wpr: wpr as u32,
                pad: 0,
            };
            ctx.queue()
                .write_buffer(&pbuf, 0, bytemuck::bytes_of(&params));
            run_chunk(
                ctx,
                "dequant_matmul",
                &pipeline,
                &bind,
                &ybuf,
                &mut y,
                p,
                out,
                rr,
            )?;
        }
        Ok(y)
    }
}

/// Dispatches one chunk of weight rows `rr` (outputs [p, rr.len()] in
/// `ybuf`) and copies its columns into Y [p, out].
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    ctx: &GpuContext,
    entry_point: &str,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    ybuf: &wgpu::Buffer,
    y: &mut [f32],
    p: usize,
    out: usize,
    rr: std::ops::Range<usize>,
) -> shears_core::Result<()> {
    let dims = (rr.len().div_ceil(TS) as u32, p.div_ceil(TS) as u32, 1);
    let idx = ctx.dispatch(entry_point, pipeline, bind, dims);
    ctx.wait(Some(idx))?;
    let yc: Vec<f32> =
        bytemuck::pod_collect_to_vec(&ctx.read_back(ybuf, 0, (p * rr.len() * 4) as u64)?);
    for i in 0..p {
        y[i * out + rr.start..i * out + rr.end]
            .copy_from_slice(&yc[i * rr.len()..(i + 1) * rr.len()]);
    }
    Ok(())
}

pub(crate) fn matmul_layout(ctx: &GpuContext) -> std::sync::Arc<wgpu::BindGroupLayout> {
    use wgpu::BufferBindingType::{Storage, Uniform};
    let (ro, rw) = (Storage { read_only: true }, Storage { read_only: false });
    ctx.buffer_layout(
        "matmul: w x params(uniform) side y zps",
        &[ro, ro, Uniform, ro, rw, ro],
    )
}
