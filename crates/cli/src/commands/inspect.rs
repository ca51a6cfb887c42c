//! `shears inspect MODEL`: the tensors of a checkpoint as a table (or JSON),
//! with per-tensor statistics computed on the chosen backend on request.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use shears_core::reference::importance::TensorStats;
use shears_core::{Checkpoint, DType};

use crate::args::{BackendChoice, InspectArgs};
use crate::backend::Backend;
use crate::output::{human_bytes, thousands, Out};
use crate::progress::Progress;

pub fn run(args: &InspectArgs, choice: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    if super::gguf::is_gguf(&args.model) {
        if args.stats {
            anyhow::bail!("--stats is not available for GGUF files");
        }
        return super::gguf::import::inspect(&args.model, args.json, args.report.as_deref(), out);
    }
    let ckpt = Checkpoint::open(&args.model)?;
    let stats = if args.stats {
        Some(compute_stats(&ckpt, choice, quiet)?)
    } else {
        None
    };
    let doc = json_doc(&ckpt, stats.as_ref());
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    if args.json {
        out.answer(&serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&ckpt, stats.as_ref(), out);
    }
    Ok(())
}

struct StatsRun {
    backend: String,
    seconds: f64,
    /// One entry per tensor; `None` for tensors of non-float dtypes.
    per_tensor: Vec<Option<TensorStats>>,
}

fn compute_stats(ckpt: &Checkpoint, choice: BackendChoice, quiet: bool) -> Result<StatsRun> {
    let backend = Backend::open(choice)?;
    let kernels = backend.importance();
    let mut progress = Progress::bytes(ckpt.total_bytes(), "stats", quiet);
    let start = Instant::now();
    let mut done = 0u64;
    let mut per_tensor = Vec::with_capacity(ckpt.tensors.len());
    for (ti, info) in ckpt.tensors.iter().enumerate() {
        progress.tensor(ti, ckpt.tensors.len(), &info.name);
        let view = ckpt.view(info);
        let s = if info.dtype.is_float_computable() {
            let ctx = |e: shears_core::Error| {
                anyhow::anyhow!(
                    "{}: tensor '{}': {e}",
                    ckpt.path_of(info).display(),
                    info.name
                )
            };
            let mut s = kernels.stats(&view).map_err(ctx)?;
            if s.overflowed() {
                // Values near 1e30 overflow the tiles' f32 sums: redo them in f64.
                s = TensorStats::exact(&view).map_err(ctx)?;
            }
            Some(s)
        } else {
            None
        };
        view.release(0..info.nbytes());
        per_tensor.push(s);
        done += info.nbytes() as u64;
        progress.set(done);
    }
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        "statistics of {} in {seconds:.2} s ({:.2} GB/s) on {}",
        human_bytes(done),
        done as f64 / seconds.max(1e-9) / 1e9,
        backend.describe()
    );
    Ok(StatsRun {
        backend: backend.describe(),
        seconds,
        per_tensor,
    })
}

fn shape_str(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn layout_str(ckpt: &Checkpoint) -> String {
    let files = ckpt.shards.len();
    let kind = match ckpt.layout {
        shears_core::checkpoint::Layout::File => "single file",
        shears_core::checkpoint::Layout::Indexed => "sharded, with index",
        shears_core::checkpoint::Layout::Folder => "folder, no index",
    };
    format!("{files} file{} ({kind})", if files == 1 { "" } else { "s" })
}

fn totals(ckpt: &Checkpoint) -> BTreeMap<DType, (usize, u64, u64)> {
    let mut by: BTreeMap<DType, (usize, u64, u64)> = BTreeMap::new();
    for t in &ckpt.tensors {
        let e = by.entry(t.dtype).or_default();
        e.0 += 1;
        e.1 += t.numel() as u64;
        e.2 += t.nbytes() as u64;
    }
    by
}

fn print_table(ckpt: &Checkpoint, stats: Option<&StatsRun>, out: &mut Out) {
    out.answer(&format!(
        "{}: {} tensors in {}",
        ckpt.root.display(),
        ckpt.tensors.len(),
        layout_str(ckpt)
    ));
    if let Some(s) = stats {
        out.answer(&format!(
            "statistics on {} in {:.2} s",
            s.backend, s.seconds
        ));
    }
    let w = ckpt
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut head = format!(
        "{:<w$}  {:<7} {:<16} {:>13} {:>11}",
        "name", "dtype", "shape", "params", "bytes"
    );
    if stats.is_some() {
        head += &format!(
            "  {:>11} {:>11} {:>11} {:>7}",
            "absmax", "mean", "std", "zeros"
        );
    }
    out.answer(&head);
    for (i, t) in ckpt.tensors.iter().enumerate() {
        let mut line = format!(
            "{:<w$}  {:<7} {:<16} {:>13} {:>11}",
            t.name,
            t.dtype.name(),
            shape_str(&t.shape),
            thousands(t.numel() as u64),
            human_bytes(t.nbytes() as u64)
        );
        if let Some(s) = stats {
            match &s.per_tensor[i] {
                Some(st) => {
                    line += &format!(
                        "  {:>11.4e} {:>11.4e} {:>11.4e} {:>6.2}%",
                        st.absmax,
                        st.mean(),
                        st.std(),
                        100.0 * st.zero_fraction()
                    );
                    if st.nonfinite > 0 {
                        line += &format!("  ({} NaN/inf)", st.nonfinite);
                    }
                }
                None => line += "  (not a float tensor)",
            }
        }
        out.answer(&line);
    }
    out.answer("");
    out.answer("totals by dtype:");
    let (mut n, mut p, mut b) = (0usize, 0u64, 0u64);
    for (dtype, (count, params, bytes)) in totals(ckpt) {
        out.answer(&format!(
            "  {:<6} {:>6} tensors {:>16} params {:>11}",
            dtype.name(),
            count,
            thousands(params),
            human_bytes(bytes)
        ));
        n += count;
        p += params;
        b += bytes;
    }
    out.answer(&format!(
        "  {:<6} {:>6} tensors {:>16} params {:>11}",
        "all",
        n,
        thousands(p),
        human_bytes(b)
    ));
}

/// The inspection as JSON (`--json`, `--report`).
fn json_doc(ckpt: &Checkpoint, stats: Option<&StatsRun>) -> serde_json::Value {
    let tensors: Vec<_> = ckpt
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut v = json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "params": t.numel(),
                "bytes": t.nbytes(),
                "file": ckpt.shards[t.shard].file_name(),
            });
            if let Some(Some(st)) = stats.map(|s| &s.per_tensor[i]) {
                v["stats"] = json!({
                    "min": st.min,
                    "max": st.max,
                    "absmax": st.absmax,
                    "mean": st.mean(),
                    "std": st.std(),
                    "zero_fraction": st.zero_fraction(),
                    "zeros": st.zeros,
                    "nonfinite": st.nonfinite,
                    "sum": st.sum,
                    "sum_sq": st.sum_sq,
                });
            }
            v
        })
        .collect();
    let by_dtype: serde_json::Map<String, serde_json::Value> = totals(ckpt)
        .into_iter()
        .map(|(d, (count, params, bytes))| {
            (
                d.name().to_string(),
                json!({"tensors": count, "params": params, "bytes": bytes}),
            )
        })
        .collect();
    let mut doc = json!({
        "checkpoint": ckpt.root,
        "files": ckpt.shards.iter().map(|s| s.file_name()).collect::<Vec<_>>(),
        "tensors": tensors,
        "totals": {
            "by_dtype": by_dtype,
            "tensors": ckpt.tensors.len(),
            "params": ckpt.tensors.iter().map(|t| t.numel() as u64).sum::<u64>(),
            "bytes": ckpt.total_bytes(),
        },
    });
    if let Some(s) = stats {
        doc["backend"] = json!(s.backend);
        doc["seconds"] = json!(s.seconds);
    }
    doc
}
