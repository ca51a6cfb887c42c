//! GGUF blocks on the GPU (shaders/quant.wgsl's Q8_0 / Q4_0 and
//! shaders/kquant.wgsl's Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), byte-identical to
//! ggml's reference quantizers (shears' `reference::gguf` and
//! `reference::kquants`).
//!
//! The K-quant and Q5 kernels flag each block whose arithmetic met a
//! subnormal, an infinity or a NaN (where GPUs may flush or differ; real
//! weights never get there); the host recomputes those blocks with the CPU
//! reference, so the bytes are exact on any GPU.

use shears_core::reference::gguf::GgufType;
use shears_core::reference::imatrix::quantize_row;
use shears_core::TensorView;

use super::{quant_layout, GpuQuant, QuantParams};
use crate::chunk::{split, upload_window};
use crate::context::entry;
use crate::{source, Error, Result};

/// GGUF blocks of one tensor and how many of them the CPU recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufBlocks {
    /// The blocks' bytes, row after row.
    pub bytes: Vec<u8>,
    /// Blocks the GPU flagged (subnormal, infinite or NaN arithmetic) and
    /// the CPU reference computed instead.
    pub on_cpu: usize,
}

/// The entry point and values per invocation of a kind (weighted by an
/// importance matrix or not).
fn entry_point(kind: GgufType, weighted: bool) -> (&'static str, usize) {
    match (kind, weighted) {
        (GgufType::Q4_K, true) => ("quantize_q4_k_w", 32),
        (GgufType::Q5_K, true) => ("quantize_q5_k_w", 32),
        (GgufType::Q6_K, true) => ("quantize_q6_k_w", 16),
        (GgufType::Q4_K, false) => ("quantize_q4_k", 32),
        (GgufType::Q5_K, false) => ("quantize_q5_k", 32),
        (GgufType::Q6_K, false) => ("quantize_q6_k", 16),
        (GgufType::Q4_0, true) => ("quantize_q4_0_w", 32),
        (GgufType::Q5_0, true) => ("quantize_q5_0_w", 32),
        (GgufType::Q5_1, true) => ("quantize_q5_1_w", 32),
        // Q8_0 ignores importances (refused before).
        (GgufType::Q8_0, _) => ("quantize_q8_0", 32),
        (GgufType::Q4_0, false) => ("quantize_q4_0", 32),
        (GgufType::Q5_0, false) => ("quantize_q5_0", 32),
        (GgufType::Q5_1, false) => ("quantize_q5_1", 32),
    }
}

impl GpuQuant<'_> {
    /// GGUF blocks of a float tensor whose rows are whole blocks,
    /// byte-identical to ggml's reference functions.
    pub fn quantize_gguf(&self, w: &TensorView, kind: GgufType) -> Result<Vec<u8>> {
        Ok(self.quantize_gguf_counted(w, kind)?.bytes)
    }

    /// [`GpuQuant::quantize_gguf`], saying how many blocks the CPU
    /// recomputed.
    pub fn quantize_gguf_counted(&self, w: &TensorView, kind: GgufType) -> Result<GgufBlocks> {
        self.blocks(w, kind, None)
    }

    /// The blocks of `w` weighted by one importance per column (K-quants,
    /// Q4_0, Q5_0, Q5_1), byte-identical to ggml's `quantize_*(…,
    /// quant_weights)` (shears' `reference::imatrix`). Q8_0 takes none.
    pub fn quantize_gguf_weighted(
        &self,
        w: &TensorView,
        kind: GgufType,
        importance: &[f32],
    ) -> Result<GgufBlocks> {
        if kind == GgufType::Q8_0 {
            return Err(Error::Unsupported(format!(
                "no GPU kernel for importance-weighted {kind:?}"
            )));
        }
        if importance.len() != w.matrix_dims().1 {
            return Err(Error::Unsupported(format!(
                "{} importances for rows of {}",
                importance.len(),
                w.matrix_dims().1
            )));
        }
        self.blocks(w, kind, Some(importance))
    }

    fn blocks(&self, w: &TensorView, kind: GgufType, qw: Option<&[f32]>) -> Result<GgufBlocks> {
        let ctx = self.ctx;
        let (rows, cols) = w.matrix_dims();
        let esize = w.float_size()?;
        let (n, bb) = (kind.block_elems(), kind.block_bytes());
        if !cols.is_multiple_of(n) {
            return Err(Error::Unsupported(format!(
                "GGUF {kind:?} blocks need rows of whole blocks of {n}; rows hold {cols}"
            )));
        }
        let row_bytes = cols / n * bb;
        let mut out = GgufBlocks {
            bytes: Vec::with_capacity(rows * row_bytes),
            on_cpu: 0,
        };
        if rows == 0 || cols == 0 {
            return Ok(out);
        }
        // The weighted 32-value blocks need each row's σ² (a first pass
        // leaves it in the flags buffer, after the flags).
        let row_sigma = qw.is_some() && n == 32;
        let flags_per_row = cols / n * 4 + if row_sigma { 4 } else { 0 };
        // The importances sit after the chunk's rows in the same binding.
        let qw_bytes = qw.map_or(0, |q| q.len() * 4);
        let per = ((ctx.chunk_bytes() as usize).saturating_sub(4 + qw_bytes)
            / (cols * esize).max(row_bytes + 4).max(flags_per_row))
        .min(rows);
        if per == 0 {
            return Err(Error::Unsupported(format!(
                "a row of {cols} elements is larger than one GPU binding ({} bytes)",
                ctx.chunk_bytes()
            )));
        }
        let qw_at = (per * cols * esize + 4).next_multiple_of(4);
        let src = ctx.storage("gguf src", qw_at + qw_bytes, wgpu::BufferUsages::empty());
        if let Some(q) = qw {
            ctx.upload(&src, qw_at as u64, bytemuck::cast_slice(q));
        }
        let blocks = ctx.storage(
            "gguf blocks",
            (per * row_bytes).next_multiple_of(4),
            wgpu::BufferUsages::COPY_SRC,
        );
        let flags = ctx.storage(
            "gguf flags",
            per * flags_per_row,
            wgpu::BufferUsages::COPY_SRC,
        );
        let pbuf = ctx.uniform("gguf uniforms", 32);
        let layout = quant_layout(ctx);
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("gguf"),
            layout: &layout,
            entries: &[
                entry(0, &src),
                entry(1, &pbuf),
                entry(2, &blocks),
                entry(3, &flags),
            ],
        });
        let (name, per_invocation) = entry_point(kind, qw.is_some());
        let dtype = match w.dtype() {
            shears_core::DType::F16 => 1.0,
            shears_core::DType::BF16 => 2.0,
            _ => 0.0,
        };
        let pipeline = ctx.pipeline("quant", source::QUANT, name, &layout, &[("DTYPE", dtype)])?;
        let sigma = match row_sigma {
            true => Some(ctx.pipeline(
                "quant",
                source::QUANT,
                "row_sigma2",
                &layout,
                &[("DTYPE", dtype)],
            )?),
            false => None,
        };
        let flagged = qw.is_some() || !matches!(kind, GgufType::Q8_0 | GgufType::Q4_0);
        let mut x = vec![0.0f32; n];
        for rr in split(rows, per) {
            let elems = rr.start * cols..rr.end * cols;
            let (bytes, first) = upload_window(&elems, esize, w.bytes().len());
            ctx.upload(&src, 0, &w.bytes()[bytes]);
            let p = QuantParams {
                rows: rr.len() as u32,
                cols: cols as u32,
                first,
                qw_at: (qw_at / 4) as u32,
                sig_at: (rr.len() * cols / n) as u32,
                ..Default::default()
            };
            ctx.queue().write_buffer(&pbuf, 0, bytemuck::bytes_of(&p));
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("gguf clear"),
                });
            enc.clear_buffer(&blocks, 0, None);
            ctx.queue().submit([enc.finish()]);
            let n_blocks = rr.len() * cols / n;
            if let Some(sp) = &sigma {
                let idx = ctx.dispatch("row_sigma2", sp, &bind, ctx.grid_2d(rr.len().div_ceil(64)));
                ctx.wait(Some(idx))?;
            }
            let dims = ctx.grid_2d((rr.len() * cols / per_invocation).div_ceil(64));
            let idx = ctx.dispatch(name, &pipeline, &bind, dims);
            ctx.wait(Some(idx))?;
            let mut got = ctx.read_back(&blocks, 0, (n_blocks * bb) as u64)?;
            if flagged {
                let words = ctx.read_back(&flags, 0, (n_blocks * 4) as u64)?;
                let block = kind.block_fn();
                let mut redone = None;
                for (b, f) in words.chunks_exact(4).enumerate() {
                    if f != [0, 0, 0, 0] && row_sigma {
                        // σ² is the whole row's: the row again on the CPU.
                        let r = b * n / cols;
                        out.on_cpu += 1;
                        if redone == Some(r) {
                            continue;
                        }
                        redone = Some(r);
                        let at = elems.start + r * cols;
                        let mut row = vec![0.0f32; cols];
                        w.decode_into(at..at + cols, &mut row)?;
                        let q = qw.expect("weighted");
                        quantize_row(kind, &row, q, &mut got[r * row_bytes..(r + 1) * row_bytes]);
                    } else if f != [0, 0, 0, 0] {
                        let at = elems.start + b * n;
                        w.decode_into(at..at + n, &mut x)?;
                        let o = &mut got[b * bb..(b + 1) * bb];
                        match qw {
                            Some(q) => {
                                let c = at % cols;
                                quantize_row(kind, &x, &q[c..c + n], o);
                            }
                            None => block(&x, o),
                        }
                        out.on_cpu += 1;
                    }
                }
            }
            out.bytes.extend(got);
        }
        Ok(out)
    }
}
