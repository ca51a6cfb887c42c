//! GPU pipelines of the `importance` family (`shaders/importance.wgsl`).
//! The CPU reference, `shears_core::reference::importance`, is the spec.

use std::ops::Range;

use shears_core::reference::importance::{Importance, TensorStats, TilePartial, LANES, TILE};
use shears_core::{DType, TensorView};

use crate::chunk::{groups, split, upload_window};
use crate::{source, Error, GpuContext, Result};

/// Uniform parameters of every importance entry point; mirrors `Params` in
/// the WGSL header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ImportanceParams {
    count: u32,
    first: u32,
    rows: u32,
    cols: u32,
    row0: u32,
    tile0: u32,
    _pad0: u32,
    _pad1: u32,
}
const _: () = assert!(std::mem::size_of::<ImportanceParams>() == 32);

/// One dispatch: which elements it reads and with what parameters.
struct Step {
    elems: Range<usize>,
    params: ImportanceParams,
    groups: (u32, u32),
}

/// Called after a step's work has finished, before the next step reuses
/// the output buffer (to read results back).
type AfterStep<'f> = &'f mut dyn FnMut(&Step) -> Result<()>;

/// The importance family on a GPU.
#[derive(Debug, Clone, Copy)]
pub struct GpuImportance<'a> {
    ctx: &'a GpuContext,
}

impl<'a> GpuImportance<'a> {
    /// Kernels running on `ctx`.
    pub fn new(ctx: &'a GpuContext) -> Self {
        GpuImportance { ctx }
    }

    fn layout(&self) -> std::sync::Arc<wgpu::BindGroupLayout> {
        use wgpu::BufferBindingType::{Storage, Uniform};
        self.ctx.buffer_layout(
            "importance: src(read) dst(read_write) params(uniform)",
            &[
                Storage { read_only: true },
                Storage { read_only: false },
                Uniform,
            ],
        )
    }

    /// Largest element count whose upload window fits one chunk.
    fn max_elems(&self, esize: usize) -> usize {
        (self.ctx.chunk_bytes() as usize - 4) / esize
    }

    /// Runs `entry` over `steps`, uploading each step's elements of `w`,
    /// with `dst` bound as output. `after` runs once each step's work is
    /// done (to read results back before the next step reuses `dst`).
    fn run(
        &self,
        entry: &'static str,
        w: &TensorView,
        dst: &wgpu::Buffer,
        steps: Vec<Step>,
        mut after: Option<AfterStep<'_>>,
    ) -> Result<()> {
        let esize = w.float_size()?;
        let dtype_code = match w.dtype() {
            DType::F32 => 0.0,
            DType::F16 => 1.0,
            _ => 2.0,
        };
        let layout = self.layout();
        let pipeline = self.ctx.pipeline(
            "importance",
            source::IMPORTANCE,
            entry,
            &layout,
            &[("DTYPE", dtype_code)],
        )?;
        let window = steps
            .iter()
            .map(|s| upload_window(&s.elems, esize, w.bytes().len()).0.len())
            .max()
            .unwrap_or(0);
        let src = self.ctx.buffer(
            "importance src",
            window as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let params = self.ctx.buffer(
            "importance params",
            std::mem::size_of::<ImportanceParams>() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let bind = self
            .ctx
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(entry),
                layout: &layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: src.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: dst.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: params.as_entire_binding(),
                    },
                ],
            });
        let mut pending = None;
        for step in &steps {
            let (bytes, first) = upload_window(&step.elems, esize, w.bytes().len());
            self.ctx.upload(&src, 0, &w.bytes()[bytes.clone()]);
            // The queue has copied the bytes: the mapped pages can go.
            w.release(bytes);
            let p = ImportanceParams {
                first,
                ..step.params
            };
            self.ctx
                .queue()
                .write_buffer(&params, 0, bytemuck::bytes_of(&p));
            let idx = self
                .ctx
                .dispatch(entry, &pipeline, &bind, (step.groups.0, step.groups.1, 1));
            // Keep at most two submissions in flight: uploads of the next
            // chunk overlap the compute of this one, staging stays bounded.
            if let Some(prev) = pending.replace(idx) {
                self.ctx.wait(Some(prev))?;
            }
            if let Some(f) = after.as_deref_mut() {
                self.ctx.wait(pending.take())?;
                f(step)?;
            }
        }
        self.ctx.wait(pending)?;
        Ok(())
    }

    fn elementwise(&self, entry: &'static str, w: &TensorView) -> Result<Vec<f32>> {
        let esize = w.float_size()?;
        let n = w.numel();
        let per = self
            .max_elems(esize)
            .min(self.ctx.chunk_bytes() as usize / 4);
        let max = self.ctx.max_groups();
        let steps: Vec<Step> = split(n, per)
            .map(|r| Step {
                params: ImportanceParams {
                    count: r.len() as u32,
                    ..Default::default()
                },
                groups: (groups(r.len(), 256, max), 1),
                elems: r,
            })
            .collect();
        let dst = self.ctx.buffer(
            "importance dst",
            (per.min(n) * 4) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let mut out = vec![0.0f32; n];
        let mut read = |s: &Step| -> Result<()> {
            let bytes = self.ctx.read_back(&dst, 0, (s.elems.len() * 4) as u64)?;
            out[s.elems.clone()].copy_from_slice(bytemuck::cast_slice(&bytes));
            Ok(())
        };
        self.run(entry, w, &dst, steps, Some(&mut read))?;
        Ok(out)
    }

    /// Rows per chunk for a matrix with `cols` columns.
    fn rows_per_chunk(&self, w: &TensorView, cols: usize) -> Result<usize> {
        let per = self.max_elems(w.float_size()?) / cols.max(1);
        if per == 0 {
            return Err(Error::Unsupported(format!(
                "a row of {cols} elements is larger than one GPU binding ({} bytes)",
                self.ctx.chunk_bytes()
            )));
        }
        Ok(per)
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

impl Importance for GpuImportance<'_> {
    fn backend(&self) -> &'static str {
        "gpu"
    }

    fn abs(&self, w: &TensorView) -> shears_core::Result<Vec<f32>> {
        Ok(self.elementwise("elem_abs", w)?)
    }

    fn square(&self, w: &TensorView) -> shears_core::Result<Vec<f32>> {
        Ok(self.elementwise("elem_square", w)?)
    }

    fn row_sumsq(&self, w: &TensorView) -> shears_core::Result<Vec<f32>> {
        let (rows, cols) = w.matrix_dims();
        if rows == 0 || cols == 0 {
            return Ok(vec![0.0; rows]);
        }
        let per = self.rows_per_chunk(w, cols)?;
        let max = self.ctx.max_groups();
        let dst = self.ctx.buffer(
            "importance row sums",
            (per.min(rows) * 4) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let steps: Vec<Step> = split(rows, per)
            .map(|r| Step {
                elems: r.start * cols..r.end * cols,
                params: ImportanceParams {
                    count: (r.len() * cols) as u32,
                    rows: r.len() as u32,
                    cols: cols as u32,
                    row0: r.start as u32,
                    ..Default::default()
                },
                groups: (groups(r.len(), 1, max), 1),
            })
            .collect();
        let mut out = vec![0.0f32; rows];
        let mut read = |s: &Step| -> Result<()> {
            let r = s.elems.start / cols..s.elems.end / cols;
            let bytes = self.ctx.read_back(&dst, 0, (r.len() * 4) as u64)?;
            out[r].copy_from_slice(bytemuck::cast_slice(&bytes));
            Ok(())
        };
        self.run("row_sumsq", w, &dst, steps, Some(&mut read))?;
        Ok(out)
    }

    fn col_sumsq(&self, w: &TensorView) -> shears_core::Result<Vec<f32>> {
        let (rows, cols) = w.matrix_dims();
        if rows == 0 || cols == 0 {
            return Ok(vec![0.0; cols]);
        }
        let partial_bytes = (LANES * cols * 4) as u64;
        if partial_bytes > self.ctx.limits.max_storage_buffer_binding_size {
            return Err(Error::Unsupported(format!(
                "{cols} columns need {partial_bytes} bytes of lane sums, more than one GPU binding"
            ))
            .into());
        }
        let per = self.rows_per_chunk(w, cols)?;
        let max = self.ctx.max_groups();
        // Lane sums start at zero (wgpu zero-fills new buffers).
        let dst = self.ctx.buffer(
            "importance column lane sums",
            partial_bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let steps: Vec<Step> = split(rows, per)
            .map(|r| Step {
                elems: r.start * cols..r.end * cols,
                params: ImportanceParams {
                    count: (r.len() * cols) as u32,
                    rows: r.len() as u32,
                    cols: cols as u32,
                    row0: r.start as u32,
                    ..Default::default()
                },
                groups: (groups(cols, 64, max), (LANES / 4) as u32),
            })
            .collect();
        self.run("col_partial", w, &dst, steps, None)?;
        let lanes = floats(&self.ctx.read_back(&dst, 0, partial_bytes)?);
        let mut out = Vec::with_capacity(cols);
        for j in 0..cols {
            let mut l = [0.0f32; LANES];
            for (p, v) in l.iter_mut().enumerate() {
                *v = lanes[p * cols + j];
            }
            out.push(shears_core::reference::importance::tree_reduce(&mut l));
        }
        Ok(out)
    }

    fn stats(&self, w: &TensorView) -> shears_core::Result<TensorStats> {
        let esize = w.float_size()?;
        let n = w.numel();
        if n == 0 {
            return Ok(TensorStats::from_tiles(0, []));
        }
        let tiles = n.div_ceil(TILE);
        let per_tiles = (self.max_elems(esize) / TILE).max(1);
        let max = self.ctx.max_groups();
        let dst = self.ctx.buffer(
            "importance tile stats",
            (tiles * 24) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let steps: Vec<Step> = split(tiles, per_tiles)
            .map(|t| {
                let elems = t.start * TILE..(t.end * TILE).min(n);
                Step {
                    params: ImportanceParams {
                        count: elems.len() as u32,
                        tile0: t.start as u32,
                        ..Default::default()
                    },
                    groups: (groups(t.len(), 1, max), 1),
                    elems,
                }
            })
            .collect();
        self.run("tile_stats", w, &dst, steps, None)?;
        let words: Vec<u32> =
            bytemuck::pod_collect_to_vec(&self.ctx.read_back(&dst, 0, (tiles * 24) as u64)?);
        let partials = words.chunks_exact(6).map(|c| TilePartial {
            sum: f32::from_bits(c[0]),
            sum_sq: f32::from_bits(c[1]),
            min: f32::from_bits(c[2]),
            max: f32::from_bits(c[3]),
            zeros: c[4],
            nonfinite: c[5],
        });
        Ok(TensorStats::from_tiles(n as u64, partials))
    }
}
