//! The checks of the quant family's parity tests: one backend's families
//! against the CPU reference for codes, scales and zero points
//! (bit-exact), dequantized values (bytes), the dequant-matmul (within
//! named tolerances), and GPU GGUF blocks against ggml's reference.

use libtest_mimic::Failed;
use shears::core::fast::quant::error_stats;
use shears::core::ops::quant::Quant;
use shears::core::reference::gguf::GgufType;
use shears::core::reference::imatrix::quantize_row;
use shears::core::reference::matmul::{probe_inputs, Matmul, PackedParts, Reference, MATMUL_RTOL};
use shears::core::reference::quant::round_to;
use shears::core::reference::quant::{quantize_matrix, QuantSpec, Quantized, Rounding};
use shears::core::{DType, TensorBuf};
use shears::kernels::{GpuContext, GpuQuant};

use crate::parity::{expect_row_refusal, refuses_row, Families};
use shears::testing::test_values;

/// The report's error statistics (max |x − x̂|, Σe², Σx²): f32 sums per
/// group in other orders, f64 across groups.
const STATS_RTOL: f64 = 1e-4;

pub fn check(
    fam: &Families,
    spec: QuantSpec,
    buf: &TensorBuf,
    rounding: Rounding,
) -> Result<(), Failed> {
    let w = buf.view();
    let (rows, cols) = w.matrix_dims();
    let x = w.to_f32().map_err(|e| e.to_string())?;
    let want = quantize_matrix(&spec, &x, rows, cols, w.dtype(), rounding);
    let mut got = Quantized::default();
    let result = fam.quant.quantize(&spec, &w, None, rounding, &mut got);
    if refuses_row(fam, cols * w.dtype().bits() / 8) {
        return expect_row_refusal(result);
    }
    let stats = result.map_err(|e| e.to_string())?;
    // The report's statistics: f32 sums in another order than the CPU's.
    let cpu = error_stats(&w, &want).map_err(|e| e.to_string())?;
    let near = |a: f64, b: f64| (a - b).abs() <= STATS_RTOL * a.abs().max(b.abs()) + 1e-30;
    if !(near(cpu.max_abs, stats.max_abs)
        && near(cpu.sum_sq_err, stats.sum_sq_err)
        && near(cpu.sum_sq, stats.sum_sq))
    {
        return Err(format!(
            "error statistics: CPU {cpu:?}, GPU {stats:?}; tolerance {STATS_RTOL:e} relative"
        )
        .into());
    }
    same_codes(&want, &got, &x)
}

/// Parameters bit-exact and codes exact between the reference and the GPU.
fn same_codes(
    want: &shears::core::reference::quant::Quantized,
    got: &shears::core::reference::quant::Quantized,
    x: &[f32],
) -> Result<(), Failed> {
    for (i, (a, b)) in want.params.iter().zip(&got.params).enumerate() {
        if a.scale.to_bits() != b.scale.to_bits() || a.zero_point != b.zero_point {
            return Err(
                format!("group {i}: expected {a:?}, got {b:?}; tolerance: bit-exact").into(),
            );
        }
    }
    for (i, (a, b)) in want.codes.iter().zip(&got.codes).enumerate() {
        if a != b {
            return Err(format!(
                "code {i} (x = {:e}): expected {a}, got {b}; tolerance: exact",
                x[i]
            )
            .into());
        }
    }
    if want.codes.len() != got.codes.len() {
        return Err("code count differs".into());
    }
    Ok(())
}

/// Rows spanning more than f32::MAX (±3e38, ±1e38) under asymmetric
/// schemes: max − min would overflow; both backends halve the range first
/// and give the same finite scales and codes.
pub fn check_huge_range(fam: &Families, spec: QuantSpec, dtype: DType) -> Result<(), Failed> {
    let cols = spec.group.unwrap_or(33).max(33);
    let rows = 4;
    let mut x = test_values(rows * cols, 77, false);
    for (r, (lo, hi)) in [
        (-3e38f32, 3e38f32),
        (-1e38, 2e38),
        (-3.3e38, 1.0),
        (0.5, 3.3e38),
    ]
    .into_iter()
    .enumerate()
    {
        x[r * cols] = lo;
        x[r * cols + cols - 1] = hi;
    }
    let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &x).map_err(|e| e.to_string())?;
    let w = buf.view();
    let x = w.to_f32().map_err(|e| e.to_string())?;
    let want = quantize_matrix(&spec, &x, rows, cols, dtype, Rounding::Nearest);
    if let Some(p) = want.params.iter().find(|p| !p.scale.is_finite()) {
        return Err(format!("reference scale not finite: {p:?}").into());
    }
    let mut got = Quantized::default();
    fam.quant
        .quantize(&spec, &w, None, Rounding::Nearest, &mut got)
        .map_err(|e| e.to_string())?;
    same_codes(&want, &got, &x)
}

/// GGUF blocks from the GPU against the reference, on values placed next
/// to the boundaries where x·(1/d) rounds (Q8_0) or x·(1/d) + 8.5
/// truncates (Q4_0) to another code, nudged by −1, 0, +1 ulp.
pub fn check_gguf(
    ctx: &GpuContext,
    kind: GgufType,
    dtype: DType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<(), Failed> {
    let noise = test_values(rows * cols, seed, false);
    let mut x = vec![0.0f32; rows * cols];
    for (b, block) in x.chunks_mut(32).enumerate() {
        let a = round_to(dtype, 0.5 + (noise[b * 32].abs() % 0.5));
        let (lead, d, top) = match kind {
            GgufType::Q8_0 => (a, a / 127.0, 126.0),
            GgufType::Q4_0 => (-a, -a / -8.0, 7.0),
            other => return Err(format!("{other:?} has no boundary check here").into()),
        };
        block[0] = lead;
        for (j, v) in block.iter_mut().enumerate().skip(1) {
            let k = (noise[b * 32 + j] * 20.0).round().clamp(-top, top - 1.0);
            let t = (k + 0.5) * d;
            let nudged = f32::from_bits((t.to_bits() as i64 + (j as i64 % 3) - 1) as u32);
            *v = round_to(dtype, nudged);
        }
    }
    let (buf, want) = gguf_input(kind, dtype, rows, cols, &x)?;
    let got = GpuQuant::new(ctx)
        .quantize_gguf(&buf.view(), kind)
        .map_err(|e| e.to_string())?;
    same_blocks(kind, &want, &got)
}

/// `x` stored as a `dtype` tensor, and the reference's blocks of the
/// values it holds.
fn gguf_input(
    kind: GgufType,
    dtype: DType,
    rows: usize,
    cols: usize,
    x: &[f32],
) -> Result<(TensorBuf, Vec<u8>), Failed> {
    let buf = TensorBuf::from_f32(dtype, vec![rows, cols], x).map_err(|e| e.to_string())?;
    let decoded = buf.view().to_f32().map_err(|e| e.to_string())?;
    Ok((buf, kind.quantize(&decoded)))
}

/// Exact equality of GGUF blocks, naming the first differing byte.
fn same_blocks(kind: GgufType, want: &[u8], got: &[u8]) -> Result<(), Failed> {
    if want.len() != got.len() {
        return Err(format!("{} bytes, expected {}", got.len(), want.len()).into());
    }
    if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
        let bb = kind.block_bytes();
        return Err(format!(
            "block {} byte {}: expected {:#04x}, got {:#04x}; tolerance: exact",
            i / bb,
            i % bb,
            want[i],
            got[i]
        )
        .into());
    }
    Ok(())
}

/// K-quant and Q5 blocks from the GPU against the reference on seeded
/// Gaussian values with zeros, tiny and large entries mixed in: the bytes
/// are exact, and no block of such values needs the CPU (only subnormal,
/// infinite or NaN arithmetic sends one back there). Rows wider than one
/// binding are refused clearly.
pub fn check_kquant(
    ctx: &GpuContext,
    kind: GgufType,
    dtype: DType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<(), Failed> {
    let x = test_values(rows * cols, seed, false);
    let (buf, want) = gguf_input(kind, dtype, rows, cols, &x)?;
    let got = GpuQuant::new(ctx).quantize_gguf_counted(&buf.view(), kind);
    if cols * dtype.bits() / 8 + 4 > ctx.chunk_bytes() as usize {
        return expect_row_refusal(got);
    }
    let got = got.map_err(|e| e.to_string())?;
    same_blocks(kind, &want, &got.bytes)?;
    if got.on_cpu > 0 {
        return Err(format!("{} blocks fell back to the CPU", got.on_cpu).into());
    }
    Ok(())
}

/// The GPU's dense values from packed codes against the CPU's.
pub fn check_dense(
    fam: &Families,
    spec: QuantSpec,
    dtype: DType,
    cols: usize,
    seed: u64,
) -> Result<(), Failed> {
    let rows = 9;
    let values = test_values(rows * cols, seed, true);
    let q = quantize_matrix(&spec, &values, rows, cols, dtype, Rounding::Nearest);
    let parts = PackedParts::from_quantized(&q, spec.bits, spec.symmetric);
    let want = Reference
        .dequantize_packed(&parts.view(), dtype)
        .map_err(|e| e.to_string())?;
    let result = fam.quant.dequantize_packed(&parts.view(), dtype);
    if refuses_row(fam, cols * dtype.bits() / 8) {
        return expect_row_refusal(result);
    }
    let got = result.map_err(|e| e.to_string())?;
    if want.len() != got.len() {
        return Err(format!("{} bytes, expected {}", got.len(), want.len()).into());
    }
    if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
        return Err(format!(
            "byte {i}: expected {}, got {}; tolerance: exact",
            want[i], got[i]
        )
        .into());
    }
    Ok(())
}

/// The GPU's dequantizing product against the reference's.
pub fn check_dequant(
    fam: &Families,
    spec: QuantSpec,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<(), Failed> {
    let values = test_values(rows * cols, seed, false);
    let q = quantize_matrix(&spec, &values, rows, cols, DType::F32, Rounding::Nearest);
    let parts = PackedParts::from_quantized(&q, spec.bits, spec.symmetric);
    let p = 19;
    let x = probe_inputs(p, cols, seed);
    let want = Reference
        .dequant_matmul(&x, p, &parts.view())
        .map_err(|e| e.to_string())?;
    let got = fam
        .matmul
        .dequant_matmul(&x, p, &parts.view())
        .map_err(|e| e.to_string())?;
    let deq = q.dequantized();
    for i in 0..p {
        for o in 0..rows {
            let scale: f32 = (0..cols)
                .map(|k| (x[i * cols + k] * deq[o * cols + k]).abs())
                .sum();
            let (a, b) = (want[i * rows + o], got[i * rows + o]);
            let tol = MATMUL_RTOL * scale + 1e-30;
            if (a - b).abs() > tol {
                return Err(format!("[{i}, {o}]: expected {a}, got {b}, tolerance {tol}").into());
            }
        }
    }
    Ok(())
}

/// Importance-weighted GGUF blocks from the GPU against the
/// reference (`reference::imatrix`) on seeded values, half of them zero as
/// in a pruned weight, and importances over four orders of magnitude, as
/// real importance matrices have: exact bytes, no CPU fallback. (The
/// pruned assets layers of tests/imatrix_golden.rs are what caught a
/// one-ulp grid on lavapipe; these add rows and Q5_K / Q6_K.)
pub fn check_kquant_weighted(
    ctx: &GpuContext,
    kind: GgufType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<(), Failed> {
    let x: Vec<f32> = test_values(rows * cols, seed, false)
        .iter()
        .enumerate()
        .map(|(i, &v)| if (i * 7 + i / 3) % 2 == 0 { 0.0 } else { v })
        .collect();
    let qw: Vec<f32> = test_values(cols, seed ^ 0x5eed, false)
        .iter()
        .map(|v| 10f32.powf(v.abs().min(2.0) * 2.0) * 0.5)
        .collect();
    let buf = TensorBuf::from_f32(DType::F32, vec![rows, cols], &x).map_err(|e| e.to_string())?;
    let got = GpuQuant::new(ctx).quantize_gguf_weighted(&buf.view(), kind, &qw);
    // A row and the importances share one binding.
    if 2 * cols * 4 + 4 > ctx.chunk_bytes() as usize {
        return expect_row_refusal(got);
    }
    let per_row = cols / kind.block_elems() * kind.block_bytes();
    let mut want = vec![0u8; rows * per_row];
    for (r, out) in want.chunks_exact_mut(per_row).enumerate() {
        quantize_row(kind, &x[r * cols..(r + 1) * cols], &qw, out);
    }
    let got = got.map_err(|e| e.to_string())?;
    same_blocks(kind, &want, &got.bytes)?;
    if got.on_cpu > 0 {
        return Err(format!("{} blocks fell back to the CPU", got.on_cpu).into());
    }
    Ok(())
}
