//! `shears bench`: the kernel families on the fast CPU path and on every
//! GPU adapter wgpu offers, each result checked against the CPU reference
//! before its time counts, beside a yardstick measured in the same run on
//! the same target (memcpy or a device buffer copy for the bandwidth-bound
//! families; the plain dense product for the products). `--compare`
//! tabulates saved runs and draws them (`bench/compare.rs`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shears_kernels::GpuContext;

use crate::args::{BackendChoice, BenchArgs};
use crate::backend::Backend;
use crate::output::Out;
use crate::CheckFailed;

mod compare;
mod kernels;

use kernels::{kernels, measure, Input, Yardsticks};

/// One saved run: the machine, what was measured on, and every result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchFile {
    pub shears: String,
    pub machine: Machine,
    /// Rows and columns of every weight.
    pub size: usize,
    pub repeat: usize,
    pub targets: Vec<Target>,
    pub results: Vec<Measured>,
}

/// The host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub os: String,
}

/// A CPU path or a GPU adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// "cpu" or the adapter's name with its API, e.g. "llvmpipe (…) [Vulkan]".
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// The adapter's limits and features (GPU targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<serde_json::Value>,
    /// How times are taken: wall clock around each call (for a GPU: the
    /// upload, the dispatches and the readback together).
    pub timing: String,
}

/// One kernel on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub target: String,
    pub family: String,
    pub kernel: String,
    /// "ok", or "failed" (a result that differed from the reference, or an
    /// error): then there is no speed.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tensor bytes per call (bandwidth) or FLOPs per call (products).
    pub work: f64,
    /// "GB/s" or "GFLOP/s".
    pub unit: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// GPU targets: the median wall time of the host → device writes
    /// (staging; the device-side copy runs with the dispatches) and of the
    /// readbacks (waiting included) inside each call; the rest of the call
    /// is `compute_ms` (dispatches, waits, host work between them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readback_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_ms: Option<f64>,
    /// GPU targets with timestamp queries: the median summed duration of
    /// the call's compute passes, by the GPU's own clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_ms: Option<f64>,
    /// Work per second at the median, in `unit`.
    pub rate: f64,
    pub yardstick: String,
    pub yardstick_rate: f64,
    /// rate / yardstick_rate.
    pub ratio: f64,
}

pub fn run(args: &BenchArgs, backend: BackendChoice, out: &mut Out) -> Result<()> {
    if !args.compare.is_empty() {
        return compare::run(&args.compare, args.svg.as_deref(), out);
    }
    let size = match args.size.as_str() {
        "small" => 1024,
        "medium" => 2048,
        "large" => 4096,
        n => n
            .parse::<usize>()
            .ok()
            .filter(|&n| (32..=16384).contains(&n) && n % 32 == 0)
            .with_context(|| {
                format!("--size {n}: small, medium, large, or a multiple of 32 from 32 to 16384")
            })?,
    };
    if args.repeat == 0 {
        bail!("--repeat 0: at least one timed run");
    }
    for f in &args.family {
        if !FAMILIES.contains(&f.as_str()) {
            bail!("--family {f}: not one of {}", FAMILIES.join(", "));
        }
    }
    let adapter = match backend {
        BackendChoice::Cpu => "none",
        _ => args.adapter.as_str(),
    };
    // Each target beside the backend it measures (the CPU path first).
    let mut runs = vec![(
        Target {
            name: "cpu".into(),
            backend: format!("fast CPU path ({} threads)", rayon::current_num_threads()),
            device_type: "Cpu".into(),
            driver: String::new(),
            adapter: None,
            timing: "wall clock per call".into(),
        },
        Backend::Cpu,
    )];
    for (ctx, summary) in open_gpus(adapter, &args.api)? {
        let target = Target {
            name: format!("{} [{:?}]", ctx.info.name, ctx.info.backend),
            backend: format!("{:?}", ctx.info.backend),
            device_type: format!("{:?}", ctx.info.device_type),
            driver: format!("{} {}", ctx.info.driver, ctx.info.driver_info)
                .trim()
                .to_string(),
            adapter: Some(serde_json::to_value(&summary)?),
            timing: if ctx.has_timestamps() {
                "wall clock per call; upload and readback wall time inside it; compute passes by GPU timestamps"
            } else {
                "wall clock per call; upload and readback wall time inside it (no timestamp queries on this adapter)"
            }
            .into(),
        };
        runs.push((target, Backend::Gpu(Box::new(ctx))));
    }
    let input = Input::new(size);
    let kernels = kernels(&args.family);
    let total = (kernels.len() * runs.len()) as u64;
    let mut progress = crate::progress::Progress::steps(total, "bench", false);
    let mut results = Vec::new();
    for (target, on) in &runs {
        let mut yard = Yardsticks::default();
        for k in &kernels {
            let m = measure(k, on, &target.name, &input, args.repeat, &mut yard);
            results.push(m);
            progress.set(results.len() as u64);
        }
    }
    progress.finish();
    let file = BenchFile {
        shears: env!("CARGO_PKG_VERSION").into(),
        machine: Machine::here(),
        size,
        repeat: args.repeat,
        targets: runs.into_iter().map(|(t, _)| t).collect(),
        results,
    };
    print(&file, out);
    if let Some(path) = &args.json {
        write_whole(path, serde_json::to_string_pretty(&file)?.as_bytes())?;
    }
    let failed: Vec<String> = file
        .results
        .iter()
        .filter(|m| m.status != "ok")
        .map(|m| format!("{} {}/{}", m.target, m.family, m.kernel))
        .collect();
    if !failed.is_empty() {
        return Err(CheckFailed(format!(
            "{} result(s) differ from the CPU reference or failed: {}",
            failed.len(),
            failed.join("; ")
        ))
        .into());
    }
    Ok(())
}

const FAMILIES: [&str; 6] = ["importance", "select", "mask", "quant", "float", "matmul"];

/// Writes `bytes` to `path` whole or not at all (a temporary file beside
/// it, renamed).
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot write in {}", path.display(), dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.error))?;
    Ok(())
}

/// The compute adapters asked for, opened.
fn open_gpus(
    adapter: &str,
    backend: &str,
) -> Result<Vec<(GpuContext, shears_kernels::AdapterSummary)>> {
    if adapter == "none" {
        return Ok(Vec::new());
    }
    let backends = shears_kernels::parse_backends(backend)
        .map_err(|e| anyhow::anyhow!("--api {backend}: {e}"))?;
    let mut out = Vec::new();
    let found = shears_kernels::compute_adapters(backends);
    let names: Vec<String> = found.iter().map(|(_, s)| s.name.clone()).collect();
    for (a, s) in found {
        if adapter != "all" && !s.name.to_lowercase().contains(&adapter.to_lowercase()) {
            continue;
        }
        match GpuContext::from_adapter(a) {
            Ok(ctx) => out.push((ctx, s)),
            Err(e) => tracing::warn!("{} ({}): cannot open: {e}", s.name, s.backend),
        }
    }
    if adapter != "all" && out.is_empty() {
        bail!(
            "--adapter {adapter} matches none of: {}",
            if names.is_empty() {
                "(no adapter)".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(out)
}

impl Machine {
    fn here() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.into(),
        }
    }
}

/// The table of one run.
fn print(f: &BenchFile, out: &mut Out) {
    out.answer(&format!(
        "shears {} bench: {}×{} bf16 weights, {} timed runs each; {} ({} cores, {})",
        f.shears, f.size, f.size, f.repeat, f.machine.cpu, f.machine.cores, f.machine.os
    ));
    for t in &f.targets {
        out.answer(&format!(
            "  target {}: {} {} {} — {}",
            t.name, t.backend, t.device_type, t.driver, t.timing
        ));
    }
    out.answer(&format!(
        "{:<44} {:<22} {:>10} {:>19} {:>14} {:>8}  yardstick",
        "target", "kernel", "median ms", "min–max ms", "rate", "ratio"
    ));
    for m in &f.results {
        let kernel = format!("{}/{}", m.family, m.kernel);
        if m.status != "ok" {
            out.answer(&format!(
                "{:<44} {:<22} FAILED: {}",
                m.target,
                kernel,
                m.error.as_deref().unwrap_or("")
            ));
            continue;
        }
        let transfers = match (m.upload_ms, m.readback_ms, m.compute_ms) {
            (Some(u), Some(r), Some(c)) => {
                let passes = m.gpu_ms.map_or(String::new(), |g| {
                    format!("; passes {g:.3} ms by timestamps")
                });
                format!("  (up {u:.3} + compute {c:.3} + back {r:.3} ms{passes})")
            }
            _ => String::new(),
        };
        out.answer(&format!(
            "{:<44} {:<22} {:>10.3} {:>19} {:>14} {:>8.3}  {} {:.2} {}{transfers}",
            m.target,
            kernel,
            m.median_ms,
            format!("{:.3}–{:.3}", m.min_ms, m.max_ms),
            format!("{:.2} {}", m.rate, m.unit),
            m.ratio,
            m.yardstick,
            m.yardstick_rate,
            m.unit
        ));
    }
}
