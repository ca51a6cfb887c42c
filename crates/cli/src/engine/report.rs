//! What a run reports: one row per compressed tensor, printed as a table
//! on stdout (`--report FILE.json` writes the same as JSON), and the
//! `quantization_config` the output's config.json gets.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use shears_core::formats::compressed_tensors::quantization_config as ct_config;
use shears_core::ops::quant::ErrorStats;
use shears_core::TensorInfo;

use super::config::{Mode, PruneConfig, QuantConfig};
use super::plan::{Action, Plan};
use crate::output::{human_bytes, Out};

/// GPTQ's / SparseGPT's figure of merit on one layer: the output error
/// over the calibration tokens, tr(ΔW·H·ΔWᵀ)/tr(W·H·Wᵀ), of the result and
/// of round-to-nearest / magnitude at the same settings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Weighted {
    pub baseline: f64,
    pub result: f64,
}

/// A pruned tensor (`shears prune`).
#[derive(Debug, serde::Serialize)]
pub struct PruneRow {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    action: String,
    numel: usize,
    pruned: u64,
    target_sparsity: f64,
    achieved_sparsity: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    relative_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_mismatches: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hessian_error: Option<Weighted>,
    seconds: f64,
}

impl PruneRow {
    /// The row with its Hessian-weighted errors.
    pub fn weighted(self, w: Weighted) -> Self {
        PruneRow {
            hessian_error: Some(w),
            ..self
        }
    }

    /// The row of `t` pruned under `p` with `keep`.
    pub fn new(
        t: &TensorInfo,
        p: &PruneConfig,
        keep: &[u8],
        relative_error: Option<f64>,
        verify_mismatches: Option<u64>,
        t0: Instant,
    ) -> Self {
        let pruned = shears_core::fast::mask::pruned_count(keep);
        PruneRow {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype.name().into(),
            action: p.describe(),
            numel: t.numel(),
            pruned,
            target_sparsity: p.mode.target(),
            achieved_sparsity: pruned as f64 / t.numel().max(1) as f64,
            relative_error,
            verify_mismatches,
            hessian_error: None,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }
}

/// A quantized (maybe first pruned) tensor.
#[derive(Debug, serde::Serialize)]
pub struct QuantRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    sparsity: Option<f64>,
    #[serde(skip)]
    zeros: u64,
    /// Exact zeros of the input weight (before any pruning of this run).
    #[serde(skip)]
    pub input_zeros: u64,
    name: String,
    shape: Vec<usize>,
    bits: u32,
    bytes_before: u64,
    bytes_after: u64,
    max_abs_error: f64,
    relative_error: f64,
    sqnr_db: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_mismatches: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hessian_error: Option<Weighted>,
    seconds: f64,
}

impl QuantRow {
    /// The row with its Hessian-weighted errors.
    pub fn weighted(self, w: Weighted) -> Self {
        QuantRow {
            hessian_error: Some(w),
            ..self
        }
    }

    /// The row of `t`, quantized to `bits` after pruning `zeros` weights
    /// (when the run prunes).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        t: &TensorInfo,
        bits: u32,
        zeros: Option<u64>,
        bytes_after: u64,
        stats: &ErrorStats,
        output_error: Option<f64>,
        verify_mismatches: Option<u64>,
        t0: Instant,
    ) -> Self {
        QuantRow {
            sparsity: zeros.map(|z| z as f64 / t.numel().max(1) as f64),
            zeros: zeros.unwrap_or(0),
            input_zeros: 0,
            name: t.name.clone(),
            shape: t.shape.clone(),
            bits,
            bytes_before: t.nbytes() as u64,
            bytes_after,
            max_abs_error: stats.max_abs,
            relative_error: stats.relative(),
            sqnr_db: stats.sqnr_db(),
            output_error,
            verify_mismatches,
            hessian_error: None,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }
}

/// One row of the report.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Row {
    Prune(PruneRow),
    Quant(QuantRow),
}

/// The report of a run.
pub struct Report {
    pub rows: Vec<Row>,
    pub seconds: f64,
    pub backend: String,
}

impl Report {
    fn prune_rows(&self) -> impl Iterator<Item = &PruneRow> {
        self.rows.iter().filter_map(|r| match r {
            Row::Prune(p) => Some(p),
            Row::Quant(_) => None,
        })
    }

    fn quant_rows(&self) -> impl Iterator<Item = &QuantRow> {
        self.rows.iter().filter_map(|r| match r {
            Row::Quant(q) => Some(q),
            Row::Prune(_) => None,
        })
    }

    /// Prints the table (or, with `--json`, the JSON) and writes
    /// `--report` when asked.
    pub fn emit(&self, plan: &Plan, out: &mut Out) -> Result<()> {
        let json = plan.cfg.json;
        let doc = match (&plan.cfg.quant, &plan.cfg.prune) {
            (Some(q), _) => {
                if !json {
                    self.print_quant(plan, q, out);
                }
                self.quant_json(plan, q)
            }
            (None, Some(p)) => {
                if !json {
                    self.print_prune(plan, out);
                }
                self.prune_json(plan, p)
            }
            (None, None) => return Ok(()),
        };
        if json {
            out.answer(&serde_json::to_string_pretty(&doc)?);
        }
        if let Some(path) = &plan.cfg.report {
            std::fs::write(path, serde_json::to_string_pretty(&doc)?)
                .with_context(|| format!("writing the report {}", path.display()))?;
        }
        Ok(())
    }

    fn print_prune(&self, plan: &Plan, out: &mut Out) {
        let rows: Vec<&PruneRow> = self.prune_rows().collect();
        let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(6);
        let weighted = rows.iter().any(|r| r.hessian_error.is_some());
        let h = |r: Option<&PruneRow>| match (weighted, r) {
            (false, _) => String::new(),
            (true, None) => format!(" {:>10} {:>10}", "H err", "magnitude"),
            (true, Some(r)) => r.hessian_error.map_or(String::new(), |e| {
                format!(" {:>10.3e} {:>10.3e}", e.result, e.baseline)
            }),
        };
        out.line(&format!(
            "{:<w$}  {:>8} {:>9} {:>11}{} {:>9}",
            "tensor",
            "target",
            "achieved",
            "rel. error",
            h(None),
            "time"
        ));
        let (mut numel, mut pruned) = (0u64, 0u64);
        for r in &rows {
            numel += r.numel as u64;
            pruned += r.pruned;
            out.line(&format!(
                "{:<w$}  {:>7.2}% {:>8.4}% {:>11}{} {:>7.1}ms",
                r.name,
                100.0 * r.target_sparsity,
                100.0 * r.achieved_sparsity,
                r.relative_error.map_or("-".into(), |e| format!("{e:.4e}")),
                h(Some(r)),
                1e3 * r.seconds
            ));
        }
        let all: u64 = plan.ckpt.tensors.iter().map(|t| t.numel() as u64).sum();
        out.line(&format!(
            "total: {} tensors, {pruned} of {numel} weights pruned ({:.2}% of them, {:.2}% of the checkpoint) in {:.2} s on {}",
            rows.len(),
            100.0 * pruned as f64 / numel.max(1) as f64,
            100.0 * pruned as f64 / all.max(1) as f64,
            self.seconds,
            self.backend
        ));
    }

    fn prune_json(&self, plan: &Plan, p: &PruneConfig) -> Value {
        let rows: Vec<&PruneRow> = self.prune_rows().collect();
        let numel: u64 = rows.iter().map(|r| r.numel as u64).sum();
        let pruned: u64 = rows.iter().map(|r| r.pruned).sum();
        json!({
            "model": plan.cfg.model,
            "output": plan.cfg.output,
            "backend": self.backend,
            "method": p.method_name(),
            "mode": p.describe(),
            "target_sparsity": p.mode.target(),
            "tensors": rows,
            "totals": {
                "tensors": rows.len(),
                "numel": numel,
                "pruned": pruned,
                "sparsity": pruned as f64 / numel.max(1) as f64,
                "checkpoint_numel": plan.ckpt.tensors.iter().map(|t| t.numel() as u64).sum::<u64>(),
                "seconds": self.seconds,
            },
        })
    }

    /// Checkpoint bytes after the run.
    fn bytes_after(&self, plan: &Plan) -> u64 {
        let kept: u64 = plan
            .ckpt
            .tensors
            .iter()
            .zip(&plan.actions)
            .filter(|(_, a)| matches!(a, Action::Keep(_)))
            .map(|(t, _)| t.nbytes() as u64)
            .sum();
        kept + self.quant_rows().map(|r| r.bytes_after).sum::<u64>()
    }

    fn print_quant(&self, plan: &Plan, q: &QuantConfig, out: &mut Out) {
        let rows: Vec<&QuantRow> = self.quant_rows().collect();
        let checks = &plan.cfg.checks;
        let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
        let pruned = rows.iter().any(|r| r.sparsity.is_some());
        let weighted = rows.iter().any(|r| r.hessian_error.is_some());
        let extra = |r: Option<&QuantRow>| {
            let mut e = String::new();
            if pruned {
                let v = r.map_or("sparsity".into(), |r| {
                    r.sparsity
                        .map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
                });
                e.push_str(&format!(" {v:>8}"));
            }
            if checks.validate {
                let v = r.map_or("out err".into(), |r| {
                    r.output_error.map_or("-".into(), |v| format!("{v:.3e}"))
                });
                e.push_str(&format!(" {v:>10}"));
            }
            if weighted {
                let v = r.map_or(format!("{:>10} {:>10}", "H err", "rtn H err"), |r| {
                    r.hessian_error.map_or("-".into(), |e| {
                        format!("{:>10.3e} {:>10.3e}", e.result, e.baseline)
                    })
                });
                e.push_str(&format!(" {v:>21}"));
            }
            if checks.verify {
                let v = r.map_or("verify".into(), |r| {
                    r.verify_mismatches.map_or("-".into(), |d| d.to_string())
                });
                e.push_str(&format!(" {v:>7}"));
            }
            e
        };
        out.line(&format!(
            "{:<w$}  {:>4} {:>10} {:>10} {:>10} {:>10} {:>8}{}",
            "tensor",
            "bits",
            "before",
            "after",
            "max err",
            "rel err",
            "SQNR dB",
            extra(None)
        ));
        for r in &rows {
            out.line(&format!(
                "{:<w$}  {:>4} {:>10} {:>10} {:>10.3e} {:>10.3e} {:>8.2}{}",
                r.name,
                r.bits,
                human_bytes(r.bytes_before),
                human_bytes(r.bytes_after),
                r.max_abs_error,
                r.relative_error,
                r.sqnr_db,
                extra(Some(r))
            ));
        }
        let before = plan.ckpt.total_bytes();
        let after = self.bytes_after(plan);
        out.line(&format!(
            "total: {} tensors quantized ({}); checkpoint {} -> {} (compression {:.2}x) in {:.2} s",
            rows.len(),
            q.scheme.name(),
            human_bytes(before),
            human_bytes(after),
            before as f64 / after.max(1) as f64,
            self.seconds
        ));
    }

    fn quant_json(&self, plan: &Plan, q: &QuantConfig) -> Value {
        let rows: Vec<&QuantRow> = self.quant_rows().collect();
        let before = plan.ckpt.total_bytes();
        let after = self.bytes_after(plan);
        json!({
            "model": plan.cfg.model,
            "output": plan.cfg.output,
            "scheme": q.scheme.name(),
            "group_size": q.spec.group,
            "rounding": q.rounding,
            "tensors": rows,
            "totals": { "bytes_before": before, "bytes_after": after,
                        "compression_ratio": before as f64 / after.max(1) as f64,
                        "seconds": self.seconds },
        })
    }
}

/// The `quantization_config` of the output: the scheme, the layers left
/// alone (`ignore`), and the `sparsity_config` when the run pruned.
pub fn quantization_config(plan: &Plan, q: &QuantConfig, rows: &[Row]) -> Value {
    let ignore: Vec<String> = plan
        .ckpt
        .tensors
        .iter()
        .zip(&plan.actions)
        .filter(|(_, a)| matches!(a, Action::Keep(_)))
        // compressed-tensors lists every module left dense; llm-compressor's
        // float presets list only the layers they were told to skip (the
        // 2-D weights), and the golden files follow each.
        .filter(|(t, _)| !q.scheme.is_float() || t.shape.len() == 2)
        .filter_map(|(t, _)| t.name.strip_suffix(".weight").map(str::to_string))
        .collect();
    let mut qc = ct_config(q.scheme, &q.spec, ignore.clone());
    if let Some(h) = plan.cfg.hessian.filter(|h| h.gptq) {
        use shears_core::reference::hessian::ActOrder;
        let order = match h.actorder {
            ActOrder::None => Value::Null,
            ActOrder::Static => json!("static"),
            ActOrder::Group => json!("group"),
        };
        qc["config_groups"]["group_0"]["weights"]["actorder"] = order;
    }
    let all: u64 = plan.ckpt.tensors.iter().map(|t| t.numel() as u64).sum();
    let input_zeros: u64 = rows
        .iter()
        .map(|r| match r {
            Row::Quant(q) => q.input_zeros,
            Row::Prune(_) => 0,
        })
        .sum();
    if plan.cfg.prune.is_none() && input_zeros as f64 >= SPARSE_INPUT * all as f64 {
        // An input pruned earlier (`shears prune`, then `quantize`): say so,
        // so that `distill layers` keeps its zeros and runtimes know.
        tracing::info!(
            "the quantized weights were {:.1}% zeros before quantization: recorded as sparsity_config",
            100.0 * input_zeros as f64 / all.max(1) as f64
        );
        qc["sparsity_config"] = sparsity_config(
            Mode::Unstructured {
                sparsity: 0.0,
                scope: super::config::Scope::Tensor,
            },
            input_zeros as f64 / all.max(1) as f64,
            ignore.clone(),
        );
    }
    if let Some(p) = &plan.cfg.prune {
        let zeros: u64 = rows
            .iter()
            .map(|r| match r {
                Row::Quant(q) => q.zeros,
                Row::Prune(p) => p.pruned,
            })
            .sum();
        qc["sparsity_config"] = sparsity_config(p.mode, zeros as f64 / all.max(1) as f64, ignore);
    }
    qc
}

/// Fraction of the checkpoint's weights that must be exact zeros before
/// quantization for the output to record them as pruned (a dense model
/// has almost none; a pruned one tens of percent).
const SPARSE_INPUT: f64 = 0.10;

/// The `sparsity_config` block describing pruned weights stored dense.
fn sparsity_config(mode: Mode, global_sparsity: f64, mut ignore: Vec<String>) -> Value {
    ignore.sort();
    let structure = match mode {
        Mode::Pattern { n, m } => format!("{n}:{m}"),
        Mode::Rows { .. } | Mode::Cols { .. } => "structured".to_string(),
        Mode::Unstructured { .. } => "unstructured".to_string(),
    };
    json!({
        "format": "dense",
        "global_sparsity": global_sparsity,
        "ignore": ignore,
        "sparsity_structure": structure,
        "targets": ["Linear"],
    })
}
