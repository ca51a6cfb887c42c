//! The GPU as a training device: every op of shears-core's `Device` trait
//! on `shaders/train.wgsl` (products on the matmul family's tiled kernel).

use shears_core::train::device::{AdamStep, Device, GridShape, Levels};

use super::{check_len, GpuBuf, GpuTrain, TrainParams, TS};
use crate::context::entry;
use crate::matmul::{matmul_layout, MatmulParams};
use crate::{source, Error};

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
        if !grid.is_supported() {
            return Err(Error::Unsupported(format!(
                "fake quantization on {:?} in groups of {}",
                grid.levels, grid.group
            ))
            .into());
        }
        let (bits, float_flag) = match grid.levels {
            Levels::Int { bits } => (bits, 0),
            Levels::E4M3 => (0, 2),
            Levels::E2M1 => (0, 4),
        };
        let p = TrainParams {
            m: rows as u32,
            n: cols as u32,
            flags: zero_points.is_some() as u32 | float_flag,
            u4: bits,
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
