//! GPU training operations (`shaders/train.wgsl`, and the matmul family's
//! tiled product for the three products): the [`Device`] trait of
//! shears-core on wgpu buffers, so the training loops run unchanged on the
//! GPU. Each op records one dispatch and submits it without waiting; the
//! queue keeps them in order, and only a download (or a loss, which comes
//! back as per-row values summed on the host like the CPU's) waits.

use std::sync::Arc;

use shears_core::train::device::{AdamStep, Device, GridShape};

use crate::context::entry;
use crate::matmul::{matmul_layout, MatmulParams};
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
        let ctx = self.ctx;
        let pipeline = ctx.pipeline("train", source::TRAIN, entry_point, &self.layout, &[])?;
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

impl Device for GpuTrain<'_> {
    type Buf = GpuBuf;

    fn upload(&self, data: &[f32]) -> shears_core::Result<GpuBuf> {
        let b = self.storage(data.len());
        self.ctx.upload(&b.buf, 0, bytemuck::cast_slice(data));
        Ok(b)
    }

    fn zeros(&self, n: usize) -> shears_core::Result<GpuBuf> {
        // New buffers are zero-initialised by wgpu.
        Ok(self.storage(n))
    }

    fn write(&self, b: &mut GpuBuf, data: &[f32]) -> shears_core::Result<()> {
        check_len("write", b, data.len())?;
        self.ctx.upload(&b.buf, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    fn download(&self, b: &GpuBuf) -> shears_core::Result<Vec<f32>> {
        let bytes = self.ctx.read_back(&b.buf, 0, (b.len * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn matmul(
        &self,
        a: &GpuBuf,
        b: &GpuBuf,
        c: &mut GpuBuf,
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
    ) -> shears_core::Result<()> {
        check_len("matmul a", a, m * k)?;
        check_len("matmul b", b, k * n)?;
        check_len("matmul c", c, m * n)?;
        let max = self.ctx.max_groups() as usize;
        if m.div_ceil(TS) > max || n.div_ceil(TS) > max {
            return Err(Error::Unsupported(format!(
                "a [{m}, {k}] × [{k}, {n}] product needs more workgroups than the GPU allows"
            ))
            .into());
        }
        // The matmul family's tiled product (shaders/matmul.wgsl), whole
        // f32 matrices: Y = op(X)·op(W)ᵀ with X = a and W = op(b)ᵀ.
        let ctx = self.ctx;
        let layout = matmul_layout(ctx);
        let pipeline = ctx.pipeline(
            "matmul",
            source::MATMUL,
            "product_f32",
            &layout,
            &[
                ("X_T", if ta { 1.0 } else { 0.0 }),
                ("W_T", if tb { 0.0 } else { 1.0 }),
            ],
        )?;
        let params = MatmulParams {
            p: m as u32,
            inn: k as u32,
            rows: n as u32,
            ..Default::default()
        };
        ctx.queue()
            .write_buffer(&self.mm_params, 0, bytemuck::bytes_of(&params));
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("train product"),
            layout: &layout,
            entries: &[
                entry(0, &b.buf),
                entry(1, &a.buf),
                entry(2, &self.mm_params),
                entry(3, &self.dummy),
                entry(4, &c.buf),
                entry(5, &self.dummy),
            ],
        });
        let groups = (
            n.div_ceil(TS).max(1) as u32,
            m.div_ceil(TS).max(1) as u32,
            1,
        );
        ctx.dispatch("product_f32", &pipeline, &bind, groups);
        Ok(())
    }

    fn add_bias(
        &self,
        y: &mut GpuBuf,
        bias: &GpuBuf,
        rows: usize,
        cols: usize,
    ) -> shears_core::Result<()> {
        check_len("add_bias y", y, rows * cols)?;
        check_len("add_bias bias", bias, cols)?;
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            ..Default::default()
        };
        let g = self.grid(rows * cols);
        self.run(
            "add_bias",
            [Some(bias), None, None],
            [Some(y), None, None],
            p,
            g,
        )
    }

    fn bias_grad(
        &self,
        dy: &GpuBuf,
        db: &mut GpuBuf,
        rows: usize,
        cols: usize,
    ) -> shears_core::Result<()> {
        check_len("bias_grad dy", dy, rows * cols)?;
        check_len("bias_grad db", db, cols)?;
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            ..Default::default()
        };
        let g = self.grid(cols);
        self.run(
            "bias_grad",
            [Some(dy), None, None],
            [Some(db), None, None],
            p,
            g,
        )
    }

    fn relu(&self, z: &GpuBuf, h: &mut GpuBuf, n: usize) -> shears_core::Result<()> {
        check_len("relu", z, n)?;
        check_len("relu", h, n)?;
        self.elementwise("relu", [Some(z), None, None], h, n)
    }

    fn relu_backward(
        &self,
        z: &GpuBuf,
        dh: &GpuBuf,
        dz: &mut GpuBuf,
        n: usize,
    ) -> shears_core::Result<()> {
        check_len("relu_backward", z, n)?;
        check_len("relu_backward", dh, n)?;
        check_len("relu_backward", dz, n)?;
        self.elementwise("relu_backward", [Some(z), Some(dh), None], dz, n)
    }

    fn gelu(&self, z: &GpuBuf, h: &mut GpuBuf, n: usize) -> shears_core::Result<()> {
        check_len("gelu", z, n)?;
        check_len("gelu", h, n)?;
        self.elementwise("gelu", [Some(z), None, None], h, n)
    }

    fn gelu_backward(
        &self,
        z: &GpuBuf,
        dh: &GpuBuf,
        dz: &mut GpuBuf,
        n: usize,
    ) -> shears_core::Result<()> {
        check_len("gelu_backward", z, n)?;
        check_len("gelu_backward", dh, n)?;
        check_len("gelu_backward", dz, n)?;
        self.elementwise("gelu_backward", [Some(z), Some(dh), None], dz, n)
    }

    fn softmax(
        &self,
        z: &GpuBuf,
        p: &mut GpuBuf,
        rows: usize,
        cols: usize,
        t: f32,
    ) -> shears_core::Result<()> {
        check_len("softmax", z, rows * cols)?;
        check_len("softmax", p, rows * cols)?;
        let params = TrainParams {
            m: rows as u32,
            n: cols as u32,
            f: [t, 0.0, 0.0, 0.0, 0.0, 0.0],
            ..Default::default()
        };
        let g = self.grid(rows);
        self.run(
            "softmax",
            [Some(z), None, None],
            [Some(p), None, None],
            params,
            g,
        )
    }

    fn classification_loss(
        &self,
        z: &GpuBuf,
        teacher: Option<&GpuBuf>,
        labels: &GpuBuf,
        dz: &mut GpuBuf,
        rows: usize,
        cols: usize,
        temperature: f32,
        alpha: f32,
    ) -> shears_core::Result<f64> {
        check_len("classification_loss z", z, rows * cols)?;
        check_len("classification_loss labels", labels, rows)?;
        check_len("classification_loss dz", dz, rows * cols)?;
        if let Some(t) = teacher {
            check_len("classification_loss teacher", t, rows * cols)?;
        }
        let losses = self.storage(rows);
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            flags: teacher.is_some() as u32,
            f: [temperature, alpha, 0.0, 0.0, 0.0, 0.0],
            ..Default::default()
        };
        let g = self.grid(rows);
        self.run(
            "classification_loss",
            [Some(z), teacher, Some(labels)],
            [Some(dz), Some(&losses), None],
            p,
            g,
        )?;
        Ok(self.row_total(&losses)? / rows.max(1) as f64)
    }

    fn mse(
        &self,
        y: &GpuBuf,
        target: &GpuBuf,
        dy: &mut GpuBuf,
        rows: usize,
        cols: usize,
    ) -> shears_core::Result<f64> {
        check_len("mse y", y, rows * cols)?;
        check_len("mse target", target, rows * cols)?;
        check_len("mse dy", dy, rows * cols)?;
        let losses = self.storage(rows);
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            ..Default::default()
        };
        let g = self.grid(rows);
        self.run(
            "mse",
            [Some(y), Some(target), None],
            [Some(dy), Some(&losses), None],
            p,
            g,
        )?;
        Ok(self.row_total(&losses)? / (rows * cols).max(1) as f64)
    }

    fn adam(
        &self,
        w: &mut GpuBuf,
        g: &GpuBuf,
        m: &mut GpuBuf,
        v: &mut GpuBuf,
        mask: Option<&GpuBuf>,
        n: usize,
        step: AdamStep,
    ) -> shears_core::Result<()> {
        for (what, b) in [("w", &*w), ("g", g), ("m", &*m), ("v", &*v)] {
            check_len(what, b, n)?;
        }
        if let Some(k) = mask {
            check_len("adam mask", k, n)?;
        }
        let p = TrainParams {
            m: n as u32,
            flags: mask.is_some() as u32,
            f: [step.lr, step.beta1, step.beta2, step.eps, step.c1, step.c2],
            ..Default::default()
        };
        let groups = self.grid(n);
        self.run(
            "adam",
            [Some(g), mask, None],
            [Some(w), Some(m), Some(v)],
            p,
            groups,
        )
    }

    fn fake_quant(
        &self,
        w: &GpuBuf,
        scales: &GpuBuf,
        zero_points: Option<&GpuBuf>,
        wq: &mut GpuBuf,
        rows: usize,
        cols: usize,
        grid: GridShape,
    ) -> shears_core::Result<()> {
        let groups = cols.div_ceil(grid.group.max(1));
        check_len("fake_quant w", w, rows * cols)?;
        check_len("fake_quant wq", wq, rows * cols)?;
        check_len("fake_quant scales", scales, rows * groups)?;
        if let Some(z) = zero_points {
            check_len("fake_quant zero points", z, rows * groups)?;
        }
        if !matches!(grid.bits, 4 | 8) || grid.group == 0 {
            return Err(Error::Unsupported(format!(
                "fake quantization to {} bits in groups of {}",
                grid.bits, grid.group
            ))
            .into());
        }
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            flags: zero_points.is_some() as u32,
            u4: grid.bits,
            u5: grid.group as u32,
            ..Default::default()
        };
        let g = self.grid(rows * cols);
        self.run(
            "fake_quant",
            [Some(w), Some(scales), zero_points],
            [Some(wq), None, None],
            p,
            g,
        )
    }
}
