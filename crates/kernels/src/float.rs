//! GPU pipeline of the float-quant family (`shaders/float.wgsl`): FP8 E4M3
//! per channel or 128×128 block, NVFP4 and MXFP4, codes and scales
//! byte-identical to `shears_core::reference::{fp8, fp4}`.

use shears_core::ops::float::FloatQuant;
use shears_core::reference::fp4::Fp4;
use shears_core::reference::fp8::Fp8;
use shears_core::reference::quant::Rounding;
use shears_core::{DType, TensorView};

use crate::chunk::{split, upload_window};
use crate::context::entry;
use crate::{source, Error, GpuContext, Result};

/// Uniform parameters; mirrors `Params` in shaders/float.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct FloatParams {
    rows: u32,
    cols: u32,
    th: u32,
    tw: u32,
    scols: u32,
    first: u32,
    gs: f32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<FloatParams>() == 32);

/// Which float format a dispatch computes (the shader's FORMAT).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Fp8 {
        block: Option<usize>,
        rounding: Rounding,
    },
    Nvfp4(f32),
    Mxfp4,
}

impl Format {
    /// Rows × columns of one scale span on a weight of `cols` columns.
    fn span(self, cols: usize) -> (usize, usize) {
        match self {
            Format::Fp8 { block: None, .. } => (1, cols.max(1)),
            Format::Fp8 { block: Some(b), .. } => (b, b),
            Format::Nvfp4(_) => (1, 16),
            Format::Mxfp4 => (1, 32),
        }
    }
}

/// The float-quant family on a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuFloat<'a> {
    ctx: &'a GpuContext,
}

impl<'a> GpuFloat<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        GpuFloat { ctx }
    }

    /// FP8 E4M3 codes of a [rows, cols] float weight with a scale per row
    /// or per `block × block` tile.
    pub fn quantize_fp8(
        &self,
        w: &TensorView,
        block: Option<usize>,
        rounding: Rounding,
    ) -> Result<Fp8> {
        let (rows, cols) = w.matrix_dims();
        let (codes, scales) = self.run(w, Format::Fp8 { block, rounding })?;
        Ok(Fp8 {
            rows,
            cols,
            block,
            codes,
            scales: scales.into_iter().map(f32::from_bits).collect(),
        })
    }

    /// FP4 E2M1 codes (one per byte) of a [rows, cols] float weight: NVFP4
    /// under `global_scale`, MXFP4 without one.
    pub fn quantize_fp4(&self, w: &TensorView, global_scale: Option<f32>) -> Result<Fp4> {
        let (rows, cols) = w.matrix_dims();
        let format = match global_scale {
            Some(gs) => Format::Nvfp4(gs),
            None => Format::Mxfp4,
        };
        let (codes, scales) = self.run(w, format)?;
        Ok(Fp4 {
            rows,
            cols,
            group: format.span(cols).1,
            codes,
            scales: scales.into_iter().map(|b| b as u8).collect(),
            global_scale,
        })
    }

    /// Codes (a byte per element) and scale words (one per span, row-major
    /// over the span grid) of `w` in `format`, chunk by chunk of whole
    /// rows (whole bands of tiles).
    fn run(&self, w: &TensorView, format: Format) -> Result<(Vec<u8>, Vec<u32>)> {
        let ctx = self.ctx;
        let (rows, cols) = w.matrix_dims();
        let esize = w.float_size()?;
        let (th, tw) = format.span(cols);
        let scols = cols.div_ceil(tw);
        let mut codes = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(rows.div_ceil(th) * scols);
        if rows == 0 || cols == 0 {
            codes.resize(rows * cols, 0);
            scales.resize(rows.div_ceil(th) * scols, 0);
            return Ok((codes, scales));
        }
        let budget = ctx.chunk_bytes() as usize - 4;
        // Rows per chunk: whole bands of `th`, the source within one binding.
        let per = (budget / (cols * esize) / th * th).min(rows.next_multiple_of(th));
        if per == 0 {
            return Err(Error::Unsupported(format!(
                "{th} row(s) of {cols} elements are larger than one GPU binding ({} bytes)",
                ctx.chunk_bytes()
            )));
        }
        let spans_per = per.div_ceil(th) * scols;
        let src = ctx.storage(
            "float src",
            per * cols * esize + 4,
            wgpu::BufferUsages::empty(),
        );
        let sbuf = ctx.storage("float scales", spans_per * 4, wgpu::BufferUsages::COPY_SRC);
        let cbuf = ctx.storage(
            "float codes",
            (per * cols).next_multiple_of(4),
            wgpu::BufferUsages::COPY_SRC,
        );
        let pbuf = ctx.uniform("float uniforms", 32);
        use wgpu::BufferBindingType::{Storage, Uniform};
        let layout = ctx.buffer_layout(
            "float: src params(uniform) scales codes",
            &[
                Storage { read_only: true },
                Uniform,
                Storage { read_only: false },
                Storage { read_only: false },
            ],
        );
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("float"),
            layout: &layout,
            entries: &[
                entry(0, &src),
                entry(1, &pbuf),
                entry(2, &sbuf),
                entry(3, &cbuf),
            ],
        });
        let (fmt, ct, gs) = match format {
            Format::Fp8 { rounding, .. } => (0.0, rounding == Rounding::CompressedTensors, 0.0),
            Format::Nvfp4(gs) => (1.0, false, gs),
            Format::Mxfp4 => (2.0, false, 0.0),
        };
        let dtype = match w.dtype() {
            DType::F16 => 1.0,
            DType::BF16 => 2.0,
            _ => 0.0,
        };
        let constants = [
            ("FORMAT", fmt),
            ("DTYPE", dtype),
            ("CT_ROUNDING", if ct { 1.0 } else { 0.0 }),
        ];
        let scale_entry = if fmt == 0.0 {
            "fp8_scales"
        } else {
            "fp4_scales"
        };
        let scale_pipe = ctx.pipeline("float", source::FLOAT, scale_entry, &layout, &constants)?;
        let encode_pipe = ctx.pipeline("float", source::FLOAT, "encode", &layout, &constants)?;
        for rr in split(rows, per) {
            let elems = rr.start * cols..rr.end * cols;
            let (bytes, first) = upload_window(&elems, esize, w.bytes().len());
            ctx.upload(&src, 0, &w.bytes()[bytes.clone()]);
            w.release(bytes);
            let p = FloatParams {
                rows: rr.len() as u32,
                cols: cols as u32,
                th: th as u32,
                tw: tw as u32,
                scols: scols as u32,
                first,
                gs,
                _pad: 0,
            };
            ctx.queue().write_buffer(&pbuf, 0, bytemuck::bytes_of(&p));
            let spans = rr.len().div_ceil(th) * scols;
            let scale_groups = if fmt == 0.0 {
                spans
            } else {
                spans.div_ceil(64)
            };
            ctx.dispatch(scale_entry, &scale_pipe, &bind, ctx.grid_2d(scale_groups));
            let n = rr.len() * cols;
            let words = n.div_ceil(4);
            let idx = ctx.dispatch(
                "encode",
                &encode_pipe,
                &bind,
                ctx.grid_2d(words.div_ceil(256)),
            );
            ctx.wait(Some(idx))?;
            codes.extend(ctx.read_back(&cbuf, 0, n as u64)?);
            scales.extend(bytemuck::pod_collect_to_vec::<u8, u32>(&ctx.read_back(
                &sbuf,
                0,
                (spans * 4) as u64,
            )?));
        }
        Ok((codes, scales))
    }
}

impl FloatQuant for GpuFloat<'_> {
    fn backend(&self) -> &'static str {
        "gpu"
    }

    fn fp8(
        &self,
        w: &TensorView,
        block: Option<usize>,
        rounding: Rounding,
    ) -> shears_core::Result<Fp8> {
        self.quantize_fp8(w, block, rounding).map_err(Into::into)
    }

    fn fp4(&self, w: &TensorView, global_scale: Option<f32>) -> shears_core::Result<Fp4> {
        self.quantize_fp4(w, global_scale).map_err(Into::into)
    }
}
