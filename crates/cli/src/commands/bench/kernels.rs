//! What `shears bench` measures: the seeded inputs, the kernels of each
//! family, one call of a kernel on a target, the check of its result
//! against the CPU reference, and the yardsticks.

use std::time::{Duration, Instant};

use crate::backend::Backend;
use anyhow::{bail, Result};
use shears_core::ops::float::FloatQuant;
use shears_core::ops::quant::Quant;
use shears_core::reference::fp4::Fp4;
use shears_core::reference::fp8::Fp8;
use shears_core::reference::importance::Importance;
use shears_core::reference::mask::Mask;
use shears_core::reference::matmul::{probe_inputs, Matmul, PackedParts, MATMUL_RTOL};
use shears_core::reference::quant::{QuantSpec, Quantized, Rounding};
use shears_core::reference::score::Scorer;
use shears_core::reference::select::Select;
use shears_core::reference::Reference;
use shears_core::{DType, TensorBuf, TensorView};

use super::Measured;

/// Probe rows of the products (tokens × inputs).
const PROBES: usize = 64;

/// The seeded tensors every target measures on.
pub(super) struct Input {
    n: usize,
    /// A bf16 [n, n] weight.
    w: TensorBuf,
    /// Probe rows for the products, [PROBES, n].
    x: Vec<f32>,
    /// A 2:4 mask of `w` (the masked product).
    mask: Vec<u8>,
    /// `w` as packed int4 (groups of 128) for the dequant product.
    packed: PackedParts,
}

impl Input {
    pub(super) fn new(n: usize) -> Input {
        let values = probe_inputs(n, n, 0x5eed);
        let w = TensorBuf::from_f32(DType::BF16, vec![n, n], &values).expect("bf16 weight");
        let spec = int4();
        let q = shears_core::fast::quant::quantize_view(&spec, &w.view(), Rounding::Nearest)
            .expect("int4 codes");
        Input {
            n,
            x: probe_inputs(PROBES, n, 0xbead),
            mask: (0..n * n).map(|i| ((i % 4) < 2) as u8).collect(),
            packed: PackedParts::from_quantized(&q, spec.bits, spec.symmetric),
            w,
        }
    }
}

fn int8() -> QuantSpec {
    QuantSpec {
        bits: 8,
        group: None,
        symmetric: true,
    }
}

fn int4() -> QuantSpec {
    QuantSpec {
        bits: 4,
        group: Some(128),
        symmetric: true,
    }
}

/// A float scheme.
#[derive(Debug, Clone, Copy)]
pub(super) enum FloatKind {
    Fp8(Option<usize>),
    Nvfp4,
    Mxfp4,
}

/// One kernel of one family.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kernel {
    /// |w| (exact) or the column sums of squares (within MATMUL_RTOL).
    Importance(&'static str),
    /// Per-row cuts keeping half of each row by magnitude (exact).
    Select(&'static str),
    /// A 2:4 mask by magnitude (exact).
    Mask(&'static str),
    Quant(&'static str, fn() -> QuantSpec),
    Float(&'static str, FloatKind),
    /// Dense (the products' yardstick), 2:4 masked, or int4 dequant.
    Matmul(&'static str),
}

impl Kernel {
    pub(super) fn family(self) -> &'static str {
        match self {
            Kernel::Importance(_) => "importance",
            Kernel::Select(_) => "select",
            Kernel::Mask(_) => "mask",
            Kernel::Quant(..) => "quant",
            Kernel::Float(..) => "float",
            Kernel::Matmul(..) => "matmul",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kernel::Quant(n, _) | Kernel::Float(n, ..) => n,
            Kernel::Importance(n) | Kernel::Select(n) | Kernel::Mask(n) | Kernel::Matmul(n) => n,
        }
    }
}

pub(super) fn kernels(families: &[String]) -> Vec<Kernel> {
    let all = [
        Kernel::Importance("abs"),
        Kernel::Importance("col-sumsq"),
        Kernel::Select("row-cuts-50%"),
        Kernel::Mask("2:4"),
        Kernel::Quant("int8-channel", int8),
        Kernel::Quant("int4-group128", int4),
        Kernel::Float("fp8", FloatKind::Fp8(None)),
        Kernel::Float("fp8-block", FloatKind::Fp8(Some(128))),
        Kernel::Float("nvfp4", FloatKind::Nvfp4),
        Kernel::Float("mxfp4", FloatKind::Mxfp4),
        Kernel::Matmul("dense"),
        Kernel::Matmul("masked-2:4"),
        Kernel::Matmul("dequant-int4"),
    ];
    all.into_iter()
        .filter(|k| families.iter().any(|f| f == k.family()))
        .collect()
}

/// What one call returned, compared with the reference's answer.
enum Output {
    Bytes(Vec<u8>, Vec<u32>),
    Floats(Vec<f32>),
}

/// One timed call: wall time, upload and readback wall time, and the GPU
/// timestamps' sum of its compute passes (when the adapter has them).
type Timed = (Duration, Duration, Duration, Option<Duration>);

/// The yardsticks of one target, measured once on first use.
#[derive(Default)]
pub(super) struct Yardsticks {
    copy: Option<f64>,
    dense: Option<f64>,
}

/// Runs `k` on the target (`on`: a GPU or the fast CPU path) once to warm up and
/// `repeat` times timed, checking every run's result against the reference.
pub(super) fn measure(
    k: &Kernel,
    on: &Backend,
    target: &str,
    input: &Input,
    repeat: usize,
    yard: &mut Yardsticks,
) -> Measured {
    let gpu = on.gpu();
    let n = input.n;
    let bytes = (n * n * 2) as f64;
    let flops = 2.0 * (PROBES * n * n) as f64;
    let (work, unit) = match k {
        Kernel::Matmul(_) => (flops, "GFLOP/s"),
        _ => (bytes, "GB/s"),
    };
    let mut m = Measured {
        target: target.into(),
        family: k.family().into(),
        kernel: k.name().into(),
        status: "ok".into(),
        error: None,
        work,
        unit: unit.into(),
        median_ms: 0.0,
        min_ms: 0.0,
        max_ms: 0.0,
        upload_ms: None,
        readback_ms: None,
        compute_ms: None,
        gpu_ms: None,
        rate: 0.0,
        yardstick: String::new(),
        yardstick_rate: 0.0,
        ratio: 0.0,
    };
    let result = (|| -> Result<Vec<Timed>> {
        let mut outs = Outs::default();
        call(k, None, input, &mut outs)?;
        let want = output(k, &outs);
        let mut outs = Outs::default();
        let mut times = Vec::with_capacity(repeat);
        for i in 0..=repeat {
            if let Some(ctx) = gpu {
                ctx.take_transfer_times();
                ctx.start_gpu_timing();
            }
            let t = Instant::now();
            call(k, Some(on), input, &mut outs)?;
            let dt = t.elapsed();
            let (up, back) = gpu.map(|c| c.take_transfer_times()).unwrap_or_default();
            let passes = match gpu {
                Some(ctx) => ctx.gpu_time()?,
                None => None,
            };
            check(k, &output(k, &outs), &want)?;
            if i > 0 {
                times.push((dt, up, back, passes));
            }
        }
        Ok(times)
    })();
    let times = match result {
        Ok(t) => t,
        Err(e) => {
            m.status = "failed".into();
            m.error = Some(format!("{e:#}"));
            return m;
        }
    };
    let wall: Vec<Duration> = times.iter().map(|t| t.0).collect();
    let (median, min, max) = spread(&wall);
    if gpu.is_some() {
        let up = spread(&times.iter().map(|t| t.1).collect::<Vec<_>>()).0;
        let back = spread(&times.iter().map(|t| t.2).collect::<Vec<_>>()).0;
        m.upload_ms = Some(up * 1e3);
        m.readback_ms = Some(back * 1e3);
        m.compute_ms = Some(((median - up - back) * 1e3).max(0.0));
        let passes: Option<Vec<Duration>> = times.iter().map(|t| t.3).collect();
        m.gpu_ms = passes.map(|p| spread(&p).0 * 1e3);
    }
    m.median_ms = median * 1e3;
    m.min_ms = min * 1e3;
    m.max_ms = max * 1e3;
    m.rate = work / median / 1e9;
    let (name, rate) = match k {
        Kernel::Matmul(_) => {
            let r = *yard.dense.get_or_insert_with(|| {
                let mut outs = Outs::default();
                let dense = Kernel::Matmul("dense");
                let t = timed(repeat, || call(&dense, Some(on), input, &mut outs));
                t.map_or(f64::NAN, |s| flops / s / 1e9)
            });
            ("dense product", r)
        }
        _ => {
            let r = *yard.copy.get_or_insert_with(|| {
                let s = match gpu {
                    Some(ctx) => ctx
                        .time_buffer_copy(bytes as usize, repeat + 1)
                        .map(|t| spread(&t[1..]).0)
                        .unwrap_or(f64::NAN),
                    None => memcpy_seconds(bytes as usize, repeat),
                };
                bytes / s / 1e9
            });
            (
                if gpu.is_some() {
                    "device buffer copy"
                } else {
                    "memcpy"
                },
                r,
            )
        }
    };
    m.yardstick = name.into();
    m.yardstick_rate = rate;
    m.ratio = m.rate / rate;
    m
}

/// The median of `repeat` timed calls after a warm-up, in seconds.
fn timed(repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed());
    }
    Ok(spread(&t).0)
}

/// Median, min and max, in seconds.
fn spread(t: &[Duration]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = t.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        0.5 * (s[s.len() / 2 - 1] + s[s.len() / 2])
    };
    (median, s[0], s[s.len() - 1])
}

/// The median time of copying `bytes` into a reused buffer, in seconds.
fn memcpy_seconds(bytes: usize, repeat: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src);
    let t: Vec<Duration> = (0..repeat)
        .map(|_| {
            let s = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            s.elapsed()
        })
        .collect();
    spread(&t).0
}

/// What calls write into, reused from call to call (as memcpy copies into
/// a reused buffer: a fresh output would add its page faults to the time).
#[derive(Default)]
struct Outs {
    /// Masks and other byte outputs.
    b: Vec<u8>,
    /// Per-row cuts (key, ties).
    cuts: Vec<u32>,
    q: Quantized,
    f8: Fp8,
    f4: Fp4,
    y: Vec<f32>,
}

/// One call of `k`, the only work timed: on the backend `on`'s family, or
/// the CPU reference's (`on` = None).
fn call(k: &Kernel, on: Option<&Backend>, input: &Input, outs: &mut Outs) -> Result<()> {
    let w: TensorView = input.w.view();
    let n = input.n;
    let mag = Scorer::magnitude();
    match *k {
        Kernel::Importance(kind) => {
            let fam = on.map_or_else(
                || Box::new(Reference) as Box<dyn Importance>,
                |b| b.importance(),
            );
            outs.y = match kind {
                "abs" => fam.abs(&w)?,
                _ => fam.col_sumsq(&w)?,
            };
        }
        Kernel::Select(_) => {
            let fam = on.map_or_else(|| Box::new(Reference) as Box<dyn Select>, |b| b.select());
            let cuts = fam.row_cuts(&w, &mag, (n / 2) as u64)?;
            outs.cuts = cuts.iter().flat_map(|c| [c.key, c.ties as u32]).collect();
        }
        Kernel::Mask(_) => {
            let fam = on.map_or_else(|| Box::new(Reference) as Box<dyn Mask>, |b| b.mask());
            outs.b = fam.nm(&w, &mag, 2, 4)?;
        }
        Kernel::Quant(_, spec) => {
            let fam = on.map_or_else(|| Box::new(Reference) as Box<dyn Quant>, |b| b.quant());
            fam.quantize(&spec(), &w, None, Rounding::Nearest, &mut outs.q)?;
        }
        Kernel::Float(_, kind) => {
            let fam = on.map_or_else(|| Box::new(Reference) as Box<dyn FloatQuant>, |b| b.float());
            match kind {
                FloatKind::Fp8(block) => {
                    fam.fp8_into(&w, block, Rounding::Nearest, &mut outs.f8)?
                }
                // A global scale as a weight of maximum 4 would get.
                FloatKind::Nvfp4 => fam.fp4_into(&w, Some(448.0 * 6.0 / 4.0), &mut outs.f4)?,
                FloatKind::Mxfp4 => fam.fp4_into(&w, None, &mut outs.f4)?,
            }
        }
        Kernel::Matmul(kind) => {
            let fam = on.map_or_else(|| Box::new(Reference) as Box<dyn Matmul>, |b| b.matmul());
            outs.y = match kind {
                "dense" => fam.masked_matmul(&input.x, PROBES, &w, None)?,
                "masked-2:4" => fam.masked_matmul(&input.x, PROBES, &w, Some(&input.mask))?,
                _ => fam.dequant_matmul(&input.x, PROBES, &input.packed.view())?,
            };
        }
    }
    Ok(())
}

/// What the last call of `k` wrote, for the check (not timed).
fn output(k: &Kernel, outs: &Outs) -> Output {
    match *k {
        Kernel::Importance("abs") => {
            Output::Bytes(Vec::new(), outs.y.iter().map(|v| v.to_bits()).collect())
        }
        Kernel::Importance(_) => Output::Floats(outs.y.clone()),
        Kernel::Select(_) => Output::Bytes(Vec::new(), outs.cuts.clone()),
        Kernel::Mask(_) => Output::Bytes(outs.b.clone(), Vec::new()),
        Kernel::Quant(..) => {
            let params = outs
                .q
                .params
                .iter()
                .flat_map(|p| [p.scale.to_bits(), p.zero_point as u32])
                .collect();
            Output::Bytes(outs.q.codes.iter().map(|&c| c as u8).collect(), params)
        }
        Kernel::Float(_, FloatKind::Fp8(_)) => Output::Bytes(
            outs.f8.codes.clone(),
            outs.f8.scales.iter().map(|s| s.to_bits()).collect(),
        ),
        Kernel::Float(..) => Output::Bytes(
            outs.f4.codes.clone(),
            outs.f4.scales.iter().map(|&b| b as u32).collect(),
        ),
        Kernel::Matmul(_) => Output::Floats(outs.y.clone()),
    }
}

/// A test seam: `SHEARS_BENCH_BREAK=<family>[,<family>…]` corrupts those
/// families' results after the call (as a broken kernel would), so the
/// check must catch it.
fn broken(k: &Kernel) -> bool {
    std::env::var("SHEARS_BENCH_BREAK").is_ok_and(|f| f.split(',').any(|f| f == k.family()))
}

/// Whether `got` is the reference's answer: integer codes and scales
/// byte for byte, products within MATMUL_RTOL (relative, in norm).
fn check(k: &Kernel, got: &Output, want: &Output) -> Result<()> {
    let flip = broken(k);
    match (got, want) {
        (Output::Bytes(c, s), Output::Bytes(wc, ws)) => {
            let (mut c, mut s) = (c.clone(), s.clone());
            if flip {
                match c.first_mut() {
                    Some(b) => *b ^= 1,
                    None => s.iter_mut().take(1).for_each(|w| *w ^= 1),
                }
            }
            let codes = c.iter().zip(wc).filter(|(a, b)| a != b).count();
            let scales = s.iter().zip(ws).filter(|(a, b)| a != b).count();
            if codes + scales > 0 || c.len() != wc.len() || s.len() != ws.len() {
                bail!("{codes} code(s) and {scales} scale(s) differ from the CPU reference");
            }
        }
        (Output::Floats(y), Output::Floats(wy)) => {
            let mut y = y.clone();
            if flip {
                y.iter_mut().for_each(|v| *v *= 1.01);
            }
            let (mut e2, mut n2) = (0.0f64, 0.0f64);
            for (&a, &b) in y.iter().zip(wy) {
                e2 += ((a - b) as f64).powi(2);
                n2 += (b as f64).powi(2);
            }
            let rel = (e2 / n2.max(f64::MIN_POSITIVE)).sqrt();
            if rel.is_nan() || rel > MATMUL_RTOL as f64 || y.len() != wy.len() {
                bail!("product differs from the CPU reference by {rel:.2e} (tolerance {MATMUL_RTOL:e})");
            }
        }
        _ => bail!("mismatched outputs"),
    }
    Ok(())
}
