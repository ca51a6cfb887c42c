//! `shears quantize MODEL -o OUT --scheme S`: int8 / int4 weights in the
//! compressed-tensors format (or dense dequantized safetensors), with a
//! report of what each layer lost.
//!
//! Codes come from the fast CPU path or the GPU (`shaders/quant.wgsl`,
//! with its correctly rounded quotient); both equal the reference.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use shears_core::calibration::Calibration;
use shears_core::checkpoint::{CheckpointWriter, OutputTensor};
use shears_core::fast::quant::{quantize_masked_into, quantize_view};
use shears_core::formats::compressed_tensors::{
    layer_bytes, layer_tensors, quantization_config, Scheme,
};
use shears_core::reference::mask::{check_nm, zero_pruned};
use shears_core::reference::matmul::{probe_inputs, relative_error, PackedParts};
use shears_core::reference::quant::{quantize_matrix, QuantSpec, Quantized, Rounding};
use shears_core::{encode_f32, Checkpoint, TensorBuf, TensorInfo, TensorView};
use shears_kernels::GpuQuant;

use shears_core::reference::select::Cut;

use crate::args::{BackendChoice, PruneArgs, QuantizeArgs};
use crate::backend::Backend;
use crate::commands::prune::{self, Mode};
use crate::output::{human_bytes, Out};
use crate::pipeline::{self, Piece};
use crate::plan::{self, Decision};
use crate::progress::Progress;
use crate::CheckFailed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    CompressedTensors,
    Dense,
}

/// One row of the report.
#[derive(Debug, serde::Serialize)]
struct Row {
    #[serde(skip_serializing_if = "Option::is_none")]
    sparsity: Option<f64>,
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
    seconds: f64,
}

pub fn run(a: &QuantizeArgs, choice: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    run_with(a, None, choice, quiet, out)
}

/// Quantizes, first pruning each selected tensor when `prune` is given
/// (`shears compress`): one read and one write per tensor, and pruned
/// zeros stay exactly zero (a zero's code dequantizes to zero).
pub fn run_with(
    a: &QuantizeArgs,
    prune: Option<&PruneArgs>,
    choice: BackendChoice,
    quiet: bool,
    out: &mut Out,
) -> Result<()> {
    let scheme = Scheme::parse(&a.scheme)?;
    let rounding = match a.rounding.as_str() {
        "nearest" => Rounding::Nearest,
        "compressed-tensors" => Rounding::CompressedTensors,
        other => bail!("--rounding '{other}' is not nearest or compressed-tensors"),
    };
    let format = match a.format.as_str() {
        "compressed-tensors" => Format::CompressedTensors,
        "dense" => Format::Dense,
        other => bail!("--format '{other}' is not compressed-tensors or dense"),
    };
    if a.group_size.is_some() && matches!(scheme, Scheme::W8A16 | Scheme::W8A8) {
        bail!(
            "--group-size applies to the int4 schemes; {} is per channel",
            scheme.name()
        );
    }
    if a.group_size == Some(0) {
        bail!("--group-size must be positive");
    }
    let spec = scheme.spec(a.group_size);
    let ckpt = Checkpoint::open(&a.model)?;
    let mut selection = plan::select(&ckpt, &a.select.include, &a.select.exclude)?;
    for g in &selection.unmatched {
        tracing::warn!("pattern '{g}' matched no tensor");
    }
    plan::apply_non_finite(&ckpt, &mut selection, a.select.non_finite);
    let chosen: Vec<bool> = selection
        .decisions
        .iter()
        .map(|d| *d == Decision::Compress)
        .collect();
    if !chosen.contains(&true) {
        tracing::warn!("no tensor is selected for quantization; the output is a copy");
    }
    // The output's config, validated before any work: the input's own
    // (a JSON object) or, when there is none, one holding only the
    // quantization_config, so the output still says how to read it.
    let config = match format {
        Format::CompressedTensors => Some(match ckpt.config()? {
            Some(c) => c,
            None => {
                tracing::warn!(
                    "{} has no config.json: the output's config.json holds only the \
                     quantization_config; add the model's own fields (architectures, \
                     model_type, …) before loading it in vLLM or transformers",
                    a.model.display()
                );
                serde_json::Map::new()
            }
        }),
        Format::Dense => None,
    };
    // Refuse what cannot be quantized before any work.
    for (t, &c) in ckpt.tensors.iter().zip(&chosen) {
        if !c {
            continue;
        }
        let path = ckpt.path_of(t).display();
        if !t.dtype.is_float_computable() {
            bail!(
                "{path}: tensor '{}': dtype {} cannot be quantized",
                t.name,
                t.dtype
            );
        }
        if !t.name.ends_with(".weight") {
            bail!(
                "{path}: tensor '{}': only `.weight` tensors of Linear layers can be quantized",
                t.name
            );
        }
        let inn = t.shape[1];
        if let Some(g) = spec.group {
            if inn % g != 0 {
                bail!(
                    "{path}: tensor '{}': group size {g} does not divide its {inn} input columns",
                    t.name
                );
            }
        }
    }
    if a.dry_run {
        for (t, d) in ckpt.tensors.iter().zip(&selection.decisions) {
            let what = match d {
                Decision::Compress => format!("quantize {} ({} bits)", scheme.name(), spec.bits),
                Decision::Keep(why) => format!("keep ({why})"),
            };
            out.line(&format!(
                "{}  {:?}  {}  {what}",
                t.name,
                t.shape,
                human_bytes(t.nbytes() as u64)
            ));
        }
        return Ok(());
    }

    // The pruning stage of `compress`, validated before any write.
    let prune_settings = prune.map(prune::settings).transpose()?;
    if let Some(Mode::Pattern { n, m }) = prune_settings.as_ref().map(|ps| ps.mode) {
        for (t, &c) in ckpt.tensors.iter().zip(&chosen) {
            if c {
                check_nm(n, m, t.shape[1]).map_err(|e| {
                    anyhow::anyhow!("{}: tensor '{}': {e}", ckpt.path_of(t).display(), t.name)
                })?;
            }
        }
    }
    let calib = a
        .calibration
        .as_ref()
        .map(|p| Calibration::open(p))
        .transpose()?;
    let chosen_idx: Vec<usize> = (0..chosen.len()).filter(|&i| chosen[i]).collect();
    if let (Some(c), true) = (&calib, a.checks.validate) {
        // The calibration rows --validate will read, checked before any work.
        for &i in &chosen_idx {
            let t = &ckpt.tensors[i];
            c.input_rows(&t.name, t.shape[1])?;
        }
    }
    let aux = match (prune, &prune_settings) {
        (Some(p), Some(ps)) => prune::load_aux(&ckpt, &chosen_idx, ps, calib.as_ref(), p)?,
        _ => Vec::new(),
    };

    let prefix = |t: &TensorInfo| {
        t.name
            .strip_suffix(".weight")
            .unwrap_or(&t.name)
            .to_string()
    };
    let mut shards = plan::empty_shards(&ckpt);
    for (t, &c) in ckpt.tensors.iter().zip(&chosen) {
        let list = &mut shards[t.shard].tensors;
        if c && format == Format::CompressedTensors {
            list.extend(layer_tensors(
                &prefix(t),
                t.shape[0],
                t.shape[1],
                t.dtype,
                scheme,
                &spec,
            ));
        } else {
            list.push(OutputTensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            });
        }
    }
    let opts = plan::writer_options(&ckpt, &a.model, a.force);
    let writer = CheckpointWriter::create(&a.output, shards, opts)?;
    let backend = Backend::open(choice)?;
    let (select, mask) = (backend.select(), backend.mask());
    let (verify_select, verify_mask) = backend.verifier();
    // Global scope: one cut over every selected tensor, found by a first
    // (read-only) pass; ties at the cut are pruned in tensor order.
    let global = match &prune_settings {
        Some(ps) => prune::global_scope_cut(&ckpt, &chosen_idx, &aux, ps, select.as_ref())?,
        None => None,
    };
    let mut ties_left = global.map_or(0, |c| c.ties);
    let mut mismatched = 0u64;
    let mut aux_iter = aux.iter();
    let mut zeros_total = 0u64;
    let start = Instant::now();
    let mut progress = Progress::bytes(ckpt.total_bytes(), "quantize", quiet);
    let mut done = 0u64;
    let mut rows = Vec::new();
    let mut ignore = Vec::new();
    let mut after_total = 0u64;
    // One code buffer for every tensor (allocated and faulted in once).
    let mut qbuf = Quantized::default();
    let ((), mut writer) = pipeline::streamed(writer, |sink| {
        for (ti, (t, &c)) in ckpt.tensors.iter().zip(&chosen).enumerate() {
            progress.tensor(ti, ckpt.tensors.len(), &t.name);
            // Reading the next tensor overlaps this one's compute.
            if let Some(next) = ckpt.tensors.get(ti + 1) {
                ckpt.view(next).prefetch();
            }
            let view = ckpt.view(t);
            if !c {
                sink.send(Piece::View(view))?;
                after_total += t.nbytes() as u64;
                if let Some(p) = t.name.strip_suffix(".weight") {
                    ignore.push(p.to_string());
                }
            } else {
                plan::refuse_non_finite(&ckpt, t, &view)?;
                let t0 = Instant::now();
                // Prune first (compress), then quantize what is left.
                let mut sparsity = None;
                let mut verify_mismatches = None;
                let original = view;
                let ctx = |e: shears_core::Error| {
                    anyhow::anyhow!("{}: tensor '{}': {e}", ckpt.path_of(t).display(), t.name)
                };
                let pruned_buf;
                let mut kept: Option<Vec<u8>> = None;
                let view = match (&prune_settings, aux_iter.next()) {
                    (Some(ps), Some(x)) => {
                        let scorer = x.scorer(ps.method);
                        let cut = global.map(|c| Cut {
                            key: c.key,
                            ties: ties_left,
                        });
                        let (m, used) = prune::make_mask(
                            &backend,
                            select.as_ref(),
                            mask.as_ref(),
                            &view,
                            &scorer,
                            ps.mode,
                            cut,
                        )
                        .map_err(ctx)?;
                        ties_left -= used;
                        if a.checks.verify {
                            let (m2, _) = prune::make_mask(
                                &backend,
                                verify_select.as_ref(),
                                verify_mask.as_ref(),
                                &view,
                                &scorer,
                                ps.mode,
                                cut,
                            )
                            .map_err(ctx)?;
                            let diff = m.iter().zip(&m2).filter(|(a, b)| a != b).count() as u64;
                            verify_mismatches = Some(diff);
                        }
                        let zeros = m.iter().filter(|&&k| k == 0).count();
                        sparsity = Some(zeros as f64 / m.len().max(1) as f64);
                        zeros_total += zeros as u64;
                        if matches!(backend, Backend::Cpu) && !a.checks.verify {
                            // The CPU quantizer zeroes pruned elements as it
                            // decodes each row: no pruned copy of the tensor.
                            kept = Some(m);
                            view
                        } else {
                            pruned_buf = TensorBuf {
                                dtype: t.dtype,
                                shape: t.shape.clone(),
                                data: zero_pruned(t.dtype, view.bytes(), &m),
                            };
                            view.release(0..t.nbytes());
                            pruned_buf.view()
                        }
                    }
                    _ => view,
                };
                let stats = match &backend {
                    Backend::Cpu => quantize_masked_into(
                        &spec,
                        &view,
                        kept.as_deref(),
                        rounding,
                        true,
                        &mut qbuf,
                    )?,
                    Backend::Gpu(ctx) => {
                        let (q, stats) =
                            GpuQuant::new(ctx).quantize_view_with_stats(&spec, &view, rounding)?;
                        qbuf = q;
                        stats
                    }
                };
                let q = &mut qbuf;
                // Test hook: a wrong code, so that tests can watch --verify
                // catch it (exit 1, nothing written).
                if std::env::var_os("SHEARS_INJECT_FAULT").is_some_and(|v| v == "codes") {
                    if let Some(c) = q.codes.first_mut() {
                        *c = c.wrapping_add(1);
                    }
                }
                if a.checks.verify {
                    let diff = verify_codes(&backend, &spec, &view, rounding, q).map_err(ctx)?;
                    *verify_mismatches.get_or_insert(0) += diff;
                }
                if let Some(d) = verify_mismatches.filter(|&d| d > 0) {
                    tracing::error!("{}: {d} values differ from the CPU reference", t.name);
                    mismatched += d;
                }
                let output_error = if a.checks.validate {
                    Some(
                        validate(&backend, &t.name, &original, q, &spec, calib.as_ref(), a)
                            .map_err(ctx)?,
                    )
                } else {
                    None
                };
                let (max_abs_error, relative_error, sqnr_db) =
                    (stats.max_abs, stats.relative(), stats.sqnr_db());
                let bytes_after = match format {
                    Format::CompressedTensors => {
                        let parts = layer_bytes(q, t.dtype, scheme, &spec);
                        let n: usize = parts.iter().map(Vec::len).sum();
                        for p in parts {
                            sink.send(Piece::Bytes(p))?;
                        }
                        n as u64
                    }
                    Format::Dense => {
                        let deq = q.dequantized();
                        let mut bytes = vec![0u8; t.nbytes()];
                        encode_f32(t.dtype, &deq, &mut bytes);
                        let n = bytes.len() as u64;
                        sink.send(Piece::Bytes(bytes))?;
                        n
                    }
                };
                after_total += bytes_after;
                rows.push(Row {
                    sparsity,
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    bits: spec.bits,
                    bytes_before: t.nbytes() as u64,
                    bytes_after,
                    max_abs_error,
                    relative_error,
                    sqnr_db,
                    output_error,
                    verify_mismatches,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            }
            view.release(0..t.nbytes());
            done += t.nbytes() as u64;
            progress.set(done);
        }
        Ok(())
    })?;
    progress.finish();
    if let Some(mut config) = config {
        let mut qc = quantization_config(scheme, &spec, ignore.clone());
        if let Some(ps) = &prune_settings {
            let all: u64 = ckpt.tensors.iter().map(|t| t.numel() as u64).sum();
            qc["sparsity_config"] = sparsity_config(
                ps.mode,
                zeros_total as f64 / all.max(1) as f64,
                ignore.clone(),
            );
        }
        config.insert("quantization_config".into(), qc);
        writer.add_file("config.json", &serde_json::to_vec_pretty(&config)?)?;
    }
    for f in &ckpt.extra_files {
        if !(f.name == "config.json" && format == Format::CompressedTensors) {
            writer.copy_file(f)?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let before = ckpt.total_bytes();
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let pruned = rows.iter().any(|r| r.sparsity.is_some());
    let extra = |r: Option<&Row>| {
        let mut e = String::new();
        if pruned {
            let v = r.map_or("sparsity".into(), |r| {
                r.sparsity
                    .map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
            });
            e.push_str(&format!(" {v:>8}"));
        }
        if a.checks.validate {
            let v = r.map_or("out err".into(), |r| {
                r.output_error.map_or("-".into(), |v| format!("{v:.3e}"))
            });
            e.push_str(&format!(" {v:>10}"));
        }
        if a.checks.verify {
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
    out.line(&format!(
        "total: {} tensors quantized ({}); checkpoint {} -> {} (compression {:.2}x) in {seconds:.2} s",
        rows.len(),
        scheme.name(),
        human_bytes(before),
        human_bytes(after_total),
        before as f64 / after_total.max(1) as f64
    ));
    if let Some(path) = &a.report {
        let doc = serde_json::json!({
            "model": a.model,
            "output": a.output,
            "scheme": scheme.name(),
            "rounding": rounding,
            "tensors": rows,
            "totals": { "bytes_before": before, "bytes_after": after_total,
                        "compression_ratio": before as f64 / after_total.max(1) as f64, "seconds": seconds },
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    if mismatched > 0 {
        drop(writer); // a failed check leaves no output behind
        return Err(CheckFailed(format!(
            "--verify: {mismatched} values differ between {} and the CPU reference; no output written",
            backend.describe()
        ))
        .into());
    }
    let dest = writer.finish()?;
    tracing::info!("wrote {}", dest.display());
    Ok(())
}

/// Codes, scales and zero points that differ from the verifier's: the
/// plain reference when the fast CPU path ran, the fast CPU path (held to
/// the reference by the tests) when the GPU ran.
fn verify_codes(
    backend: &Backend,
    spec: &QuantSpec,
    w: &TensorView,
    rounding: Rounding,
    q: &Quantized,
) -> shears_core::Result<u64> {
    let check = match backend {
        Backend::Cpu => {
            let (rows, cols) = w.matrix_dims();
            quantize_matrix(spec, &w.to_f32()?, rows, cols, w.dtype(), rounding)
        }
        Backend::Gpu(_) => quantize_view(spec, w, rounding)?,
    };
    let codes = q.codes.iter().zip(&check.codes).filter(|(a, b)| a != b);
    let params =
        q.params.iter().zip(&check.params).filter(|(a, b)| {
            a.scale.to_bits() != b.scale.to_bits() || a.zero_point != b.zero_point
        });
    Ok((codes.count() + params.count()) as u64)
}

/// ‖Y − Ŷ‖/‖Y‖ with Y from the original weight and Ŷ read straight from
/// the packed codes, on the calibration inputs of this weight or probes.
fn validate(
    backend: &Backend,
    name: &str,
    original: &TensorView,
    q: &Quantized,
    spec: &QuantSpec,
    calib: Option<&Calibration>,
    a: &QuantizeArgs,
) -> shears_core::Result<f64> {
    let given = match calib {
        Some(c) => c.inputs(name, q.cols)?,
        None => None,
    };
    let (x, p) = match given {
        Some(g) => g,
        None => (
            probe_inputs(a.checks.probe_rows, q.cols, a.seed),
            a.checks.probe_rows,
        ),
    };
    let parts = PackedParts::from_quantized(q, spec.bits, spec.symmetric);
    let mm = backend.matmul();
    let y = mm.masked_matmul(&x, p, original, None)?;
    let yhat = mm.dequant_matmul(&x, p, &parts.view())?;
    Ok(relative_error(&y, &yhat))
}

/// The `sparsity_config` block describing pruned weights stored dense.
fn sparsity_config(mode: Mode, global_sparsity: f64, mut ignore: Vec<String>) -> serde_json::Value {
    ignore.sort();
    let structure = match mode {
        Mode::Pattern { n, m } => format!("{n}:{m}"),
        Mode::Rows { .. } | Mode::Cols { .. } => "structured".to_string(),
        Mode::Unstructured { .. } => "unstructured".to_string(),
    };
    serde_json::json!({
        "format": "dense",
        "global_sparsity": global_sparsity,
        "ignore": ignore,
        "sparsity_structure": structure,
        "targets": ["Linear"],
    })
}
