//! The operations training is made of, as one trait. The CPU reference
//! ([`crate::reference::Reference`], buffers are `Vec<f32>`) is their
//! specification; the GPU (`shears_kernels::GpuTrain`, `shaders/train.wgsl`)
//! implements the same trait. The training loops (MLP classifiers,
//! layer-wise distillation) are written once, generic over [`Device`], so
//! both backends run the same steps in the same order and differ only in
//! the order of f32 sums (loss curves agree within 1e-4 relative).
//!
//! Conventions: every matrix is row-major f32; class labels travel as f32
//! (exact for class indices); a mask is 1.0 (kept) / 0.0 (pruned); an op
//! writes its output buffer completely (no accumulation unless it says
//! so). Shapes are the caller's promise: implementations may panic on
//! buffers that are too short (a programming error, not bad input).

use crate::Result;

/// Adam's hyper-parameters for one step. `c1 = 1/(1 − β1ᵗ)` and
/// `c2 = 1/(1 − β2ᵗ)` are the bias corrections of step t (1-based),
/// computed by [`AdamStep::at`] in f64 and rounded to f32 once, so both
/// backends use the same constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
}

impl AdamStep {
    /// The constants of step `t` (1-based).
    pub fn at(lr: f32, beta1: f32, beta2: f32, eps: f32, t: u32) -> Self {
        let c1 = 1.0 / (1.0 - (beta1 as f64).powi(t as i32));
        let c2 = 1.0 / (1.0 - (beta2 as f64).powi(t as i32));
        AdamStep {
            lr,
            beta1,
            beta2,
            eps,
            c1: c1 as f32,
            c2: c2 as f32,
        }
    }
}

/// A layer's fixed quantization grid for fake quantization: the values a
/// quotient rounds to ([`Levels`]), `group` inputs per scale; scales
/// [rows, groups] and optional zero points [rows, groups] (as f32
/// integers; integer grids only) live in device buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridShape {
    pub levels: Levels,
    pub group: usize,
}

impl GridShape {
    /// An integer grid of `bits` (4 or 8) in groups of `group` inputs.
    pub const fn int(bits: u32, group: usize) -> Self {
        GridShape {
            levels: Levels::Int { bits },
            group,
        }
    }

    /// Whether the device ops take this grid: 4- or 8-bit integers or a
    /// float format, and groups of at least one input.
    pub fn is_supported(&self) -> bool {
        self.group > 0 && !matches!(self.levels, Levels::Int { bits } if !matches!(bits, 4 | 8))
    }
}

/// What a quotient w / s is rounded to on a fixed grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// Integers of `bits` bits, two's complement range (with a zero point
    /// when the grid has them).
    Int { bits: u32 },
    /// FP8 E4M3 values (±448 at most; the fp8 and fp8-block schemes).
    E4M3,
    /// FP4 E2M1 values (±6 at most; nvfp4a16 and mxfp4a16).
    E2M1,
}

/// One backend's training operations.
pub trait Device {
    /// A buffer of f32 on the device.
    type Buf;

    /// A buffer holding `data`.
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// A buffer of `n` zeros.
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// Overwrites the first `data.len()` values of `b`.
    fn write(&self, b: &mut Self::Buf, data: &[f32]) -> Result<()>;
    /// The buffer's values.
    fn download(&self, b: &Self::Buf) -> Result<Vec<f32>>;

    /// c [m, n] = op(a)·op(b), op(a) [m, k], op(b) [k, n]. `a` is stored
    /// [m, k], or [k, m] when `ta`; `b` is stored [k, n], or [n, k] when
    /// `tb`. Reference: each c element sums its k products in increasing k
    /// in f32 (no FMA). The three uses: forward X·Wᵀ (tb), input gradient
    /// dY·W, weight gradient dYᵀ·X (ta).
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        a: &Self::Buf,
        b: &Self::Buf,
        c: &mut Self::Buf,
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
    ) -> Result<()>;

    /// y[r, j] += bias[j] for a [rows, cols] y.
    fn add_bias(&self, y: &mut Self::Buf, bias: &Self::Buf, rows: usize, cols: usize)
        -> Result<()>;
    /// db[j] = Σ_r dy[r, j] (sum in increasing r, f32).
    fn bias_grad(&self, dy: &Self::Buf, db: &mut Self::Buf, rows: usize, cols: usize)
        -> Result<()>;

    /// h = max(z, 0) elementwise over the first `n` values.
    fn relu(&self, z: &Self::Buf, h: &mut Self::Buf, n: usize) -> Result<()>;
    /// dz = dh where z > 0, else 0.
    fn relu_backward(
        &self,
        z: &Self::Buf,
        dh: &Self::Buf,
        dz: &mut Self::Buf,
        n: usize,
    ) -> Result<()>;
    /// h = GELU(z), tanh form: ½z(1 + tanh(√(2/π)(z + 0.044715z³))).
    fn gelu(&self, z: &Self::Buf, h: &mut Self::Buf, n: usize) -> Result<()>;
    /// dz = dh · GELU'(z) of the tanh form.
    fn gelu_backward(
        &self,
        z: &Self::Buf,
        dh: &Self::Buf,
        dz: &mut Self::Buf,
        n: usize,
    ) -> Result<()>;

    /// p = softmax(z / t) per row of a [rows, cols] z: s_j = fl32(z_j / t),
    /// p_j = exp(s_j − max s) / Σ exp(s − max s), exp in f32, the row sum
    /// in increasing column order.
    fn softmax(
        &self,
        z: &Self::Buf,
        p: &mut Self::Buf,
        rows: usize,
        cols: usize,
        t: f32,
    ) -> Result<()>;

    /// Classification loss of student logits z [rows, cols]:
    /// mean over rows of  T²·KL(softmax(t_z/T) ‖ softmax(z/T)) (only when
    /// `teacher` logits are given) + α·CE(softmax(z), label).
    /// Writes dz, the gradient of that mean:
    /// (T·(softmax(z/T) − softmax(t_z/T)) + α·(softmax(z) − onehot)) / rows.
    /// Returns the loss: per-row losses in f32, summed in f64 in row order,
    /// divided by rows. Labels are class indices stored as f32. The logs in
    /// KL and CE are log-softmax, s_j − max s − ln Σ exp(s − max s) (never
    /// the log of a rounded probability); a teacher probability of exactly
    /// 0 contributes 0 to the KL sum.
    #[allow(clippy::too_many_arguments)]
    fn classification_loss(
        &self,
        z: &Self::Buf,
        teacher: Option<&Self::Buf>,
        labels: &Self::Buf,
        dz: &mut Self::Buf,
        rows: usize,
        cols: usize,
        temperature: f32,
        alpha: f32,
    ) -> Result<f64>;

    /// Mean squared error of y against target over [rows, cols]; writes
    /// dy = s·(y − target) with s = 2/(rows·cols) rounded to f32 once. Returns the loss: per-row sums of
    /// squares in f32, summed in f64 in row order, divided by rows·cols.
    fn mse(
        &self,
        y: &Self::Buf,
        target: &Self::Buf,
        dy: &mut Self::Buf,
        rows: usize,
        cols: usize,
    ) -> Result<f64>;

    /// One Adam step on the first `n` values, in f32:
    /// m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g·g;
    /// w = w − lr·(m·c1) / (sqrt(v·c2) + eps).
    /// Where `mask` is 0 the weight, m and v are set to exactly 0.
    #[allow(clippy::too_many_arguments)]
    fn adam(
        &self,
        w: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        mask: Option<&Self::Buf>,
        n: usize,
        step: AdamStep,
    ) -> Result<()>;

    /// Fake quantization on a fixed grid (straight-through estimator: the
    /// caller applies the gradient of wq to w unchanged):
    /// wq = (q − zp)·s with q = rne(clamp(fl32(w / s) + zp, qmin, qmax)),
    /// the correctly rounded quotient (as `reference::quant` with
    /// `Rounding::Nearest`); s and zp of element (r, c) are
    /// scales[r·groups + c/group] and zero_points[…] (0 when absent).
    /// On a float grid (E4M3, E2M1; no zero points) wq = v·s with v the
    /// format's value nearest clamp(fl32(w / s), ±max) (ties to even, as
    /// `reference::fp8::e4m3` and `reference::fp4::e2m1` round); a NaN w
    /// gives 0 on every grid.
    #[allow(clippy::too_many_arguments)]
    fn fake_quant(
        &self,
        w: &Self::Buf,
        scales: &Self::Buf,
        zero_points: Option<&Self::Buf>,
        wq: &mut Self::Buf,
        rows: usize,
        cols: usize,
        grid: GridShape,
    ) -> Result<()>;
}
