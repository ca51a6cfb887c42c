//! `shears quantize MODEL -o OUT.gguf --type T`: a Hugging Face folder of
//! the Llama family written as one GGUF file that llama.cpp loads, in one
//! streaming pass (tensor by tensor through mmap, blocks computed on the
//! backend, the file renamed into place when complete). What goes in the
//! file is [`shears_core::formats::gguf`]'s: llama.cpp's architecture keys
//! and tensor names, q/k rows in its RoPE order, the tokenizer.
//!
//! Types: the 2-D weights (embeddings and output included) get `--type`;
//! a weight whose rows do not split into its blocks gets F16 instead (as
//! llama-quantize falls back), and 1-D tensors (norms, biases) F32.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shears_core::formats::gguf::mix::{self, Target};
use shears_core::formats::gguf::{llama, vocab, GgmlType, GgufWriter, PlannedTensor, Value};

use super::imatrix::Importance;
use super::import;
use super::prune::Pruning;
use shears_core::model::config::ModelConfig;
use shears_core::model::text::TextTokenizer;
use shears_core::reference::gguf::GgufType;
use shears_core::{Checkpoint, DType, Error, TensorView};

use crate::args::{
    CalibrationTextArgs, GlobalArgs, QuantMethodArg, QuantizeArgs, RoundingArg, RunArgs,
};
use crate::backend::Backend;
use crate::engine::config::PruneConfig;
use crate::output::{human_bytes, Out};
use crate::progress::Progress;

/// One tensor of the plan.
struct Item {
    /// The checkpoint tensor (none for generated ones).
    source: Option<usize>,
    out: PlannedTensor,
    /// Heads whose q/k rows are reordered.
    rope_heads: Option<usize>,
    /// Why it has another type than --type, if it does.
    fallback: bool,
}

/// Refuses the flags GGUF output does not take (yet).
fn check_flags(a: &QuantizeArgs) -> Result<()> {
    let refuse =
        |flag: &str, why: &str| -> Result<()> { bail!("{flag} {why} with --type (GGUF output)") };
    if a.method == QuantMethodArg::Gptq {
        refuse("--method gptq", "is not available")?;
    }
    if a.group_size.is_some() {
        refuse(
            "--group-size",
            "does not apply: GGUF types fix their blocks",
        )?;
    }
    if a.rounding != RoundingArg::Nearest {
        refuse(
            "--rounding",
            "does not apply: GGUF types round as ggml does",
        )?;
    }
    if a.run.checks.validate || a.run.checks.verify {
        refuse("--validate/--verify", "are not available")?;
    }
    if !a.run.select.include.is_empty() || !a.run.select.exclude.is_empty() {
        refuse(
            "--include/--exclude",
            "do not apply: llama.cpp needs every tensor",
        )?;
    }
    Ok(())
}

/// Rows converted per piece written (a bounded buffer, whatever the
/// tensor's size).
const PIECE_ELEMS: usize = 1 << 22;

/// Writes `view` as the float type `ty`: its own bytes when the dtype is
/// `ty` and rows stay in place, otherwise converted a piece at a time.
fn write_float(
    w: &mut GgufWriter,
    view: &TensorView,
    ty: GgmlType,
    rope_heads: Option<usize>,
) -> Result<()> {
    let dtype = match ty {
        GgmlType::F32 => DType::F32,
        GgmlType::F16 => DType::F16,
        _ => DType::BF16,
    };
    let (rows, cols) = view.matrix_dims();
    if view.dtype() == dtype && rope_heads.is_none() {
        return Ok(w.write(view.bytes())?);
    }
    let per = (PIECE_ELEMS / cols.max(1)).clamp(1, rows.max(1));
    let mut x = vec![0.0f32; per * cols];
    let mut bytes = vec![0u8; per * cols * dtype.bits() / 8];
    let mut r = 0;
    while r < rows {
        let n = per.min(rows - r);
        for k in 0..n {
            let src = rope_heads.map_or(r + k, |h| llama::source_row(r + k, rows, h));
            view.decode_into(
                src * cols..(src + 1) * cols,
                &mut x[k * cols..(k + 1) * cols],
            )?;
        }
        let len = n * cols;
        shears_core::encode_f32(dtype, &x[..len], &mut bytes[..len * dtype.bits() / 8]);
        w.write(&bytes[..len * dtype.bits() / 8])?;
        r += n;
    }
    Ok(())
}

/// One GGUF export: what `quantize --type` and `compress` (a `[gguf]`
/// recipe table or `--type`) ask for.
pub struct GgufJob<'a> {
    pub run: &'a RunArgs,
    pub target: Target,
    /// The tokenizer.json to carry (default: the model folder's).
    pub tokenizer: Option<&'a Path>,
    /// The importance matrix's (and a calibrated pruning's) statistics.
    pub calibration: Option<&'a Path>,
    pub calibration_text: &'a CalibrationTextArgs,
    /// Pruning before the blocks are computed (`compress`): the selected
    /// linear weights are masked on the backend, then quantized.
    pub prune: Option<PruneConfig>,
}

/// `shears quantize --type T`.
pub fn run(a: &QuantizeArgs, target: Target, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    check_flags(a)?;
    let job = GgufJob {
        run: &a.run,
        target,
        tokenizer: a.tokenizer.as_deref(),
        calibration: a.calibration.as_deref(),
        calibration_text: &a.calibration_text,
        prune: None,
    };
    export(&job, g, out)
}

/// Writes the GGUF file `job` describes.
pub fn export(job: &GgufJob, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let (a, target) = (job, job.target);
    let start = Instant::now();
    let ckpt = Checkpoint::open(&a.run.model)?;
    let dir = ckpt.root.clone();
    let config_path = dir.join("config.json");
    let cfg_text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let raw: serde_json::Value = serde_json::from_str(&cfg_text)
        .map_err(|e| Error::format(&config_path, format!("not valid JSON: {e}")))?;
    let cfg = ModelConfig::from_json(&raw).map_err(|e| Error::format(&config_path, e))?;
    let context = raw
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            Error::format(
                &config_path,
                "no max_position_embeddings (GGUF's context length)",
            )
        })? as usize;
    let tok_dir = a
        .tokenizer
        .and_then(|t| t.parent().map(PathBuf::from))
        .unwrap_or_else(|| dir.clone());
    let bos = TextTokenizer::open(&tok_dir).ok().and_then(|t| t.bos);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut metadata = llama::metadata(&cfg, &name, context, target.file_type());
    metadata.extend(vocab::metadata(&dir, a.tokenizer, cfg.vocab, bos)?);
    // For `shears decompress`: the tokenizer (GGUF's own key for it) and
    // the config as they were, so the folder it writes back runs as is.
    let tok_path = a
        .tokenizer
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    let tok_text = std::fs::read_to_string(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
    metadata.push((import::TOKENIZER_KEY.into(), Value::Str(tok_text)));
    metadata.push((import::CONFIG_KEY.into(), Value::Str(cfg_text)));

    // The plan: every checkpoint tensor llama.cpp takes, in stored order.
    let mut items = Vec::new();
    let freqs = llama::rope_freqs(&cfg);
    if let Some(f) = &freqs {
        items.push(Item {
            source: None,
            out: PlannedTensor {
                name: "rope_freqs.weight".into(),
                dims: vec![f.len() as u64],
                ty: GgmlType::F32,
            },
            rope_heads: None,
            fallback: false,
        });
    }
    for (i, t) in ckpt.tensors.iter().enumerate() {
        let Some(gname) = llama::gguf_name(&t.name) else {
            return Err(Error::format(
                &ckpt.root,
                format!(
                    "tensor '{}' has no place in a llama.cpp {} model",
                    t.name,
                    llama::arch(cfg.family)
                ),
            )
            .into());
        };
        if gname.is_empty() {
            continue;
        }
        if !t.dtype.is_float_computable() {
            return Err(Error::format(
                &ckpt.root,
                format!("tensor '{}' is {:?}, not f32/f16/bf16", t.name, t.dtype),
            )
            .into());
        }
        items.push(Item {
            source: Some(i),
            rope_heads: llama::rope_heads(&cfg, &gname),
            out: PlannedTensor {
                name: gname,
                dims: t.shape.iter().rev().map(|&d| d as u64).collect(),
                ty: GgmlType::F32,
            },
            fallback: false,
        });
    }
    // Each tensor's type: --type for every 2-D weight, or the mix's rules.
    let listed: Vec<(&str, &[u64])> = items
        .iter()
        .map(|it| (it.out.name.as_str(), it.out.dims.as_slice()))
        .collect();
    let types = mix::choose(target, &cfg, &listed);
    for (it, ty) in items.iter_mut().zip(types) {
        let two_d = it.out.dims.len() == 2;
        it.fallback = two_d && matches!(target, Target::Pure(_)) && ty != target.base();
        it.out.ty = ty;
    }
    let total: usize = items.iter().map(|it| it.out.nbytes()).sum();
    if a.run.dry_run {
        for it in &items {
            out.line(&format!(
                "{:<28} {:<5} {:>14} {}",
                it.out.name,
                it.out.ty.name(),
                format!("{:?}", it.out.dims),
                human_bytes(it.out.nbytes() as u64)
            ));
        }
        out.line(&format!(
            "dry run: {} tensors, {} of data; nothing written",
            items.len(),
            human_bytes(total as u64)
        ));
        return Ok(());
    }

    let importance = Importance::open(&a.run.model, a.calibration, a.calibration_text, g)?;
    if let Some(imp) = &importance {
        let weights: Vec<(&str, usize)> = items
            .iter()
            .filter(|it| it.out.ty.blocks().is_some())
            .filter_map(|it| it.source)
            .map(|i| {
                let t = &ckpt.tensors[i];
                (t.name.as_str(), *t.shape.last().unwrap_or(&0))
            })
            .collect();
        imp.check_covers(&weights)?;
    }
    let backend = Backend::open(g.backend)?;
    let mut pruning = match job.prune {
        Some(p) => Some(Pruning::new(
            &ckpt,
            a.run,
            p,
            importance.as_ref().map(Importance::calibration),
            &backend,
        )?),
        None => None,
    };
    let planned: Vec<PlannedTensor> = items.iter().map(|it| it.out.clone()).collect();
    let mut writer = GgufWriter::create(
        &a.run.output,
        &metadata,
        planned,
        a.run.force,
        std::slice::from_ref(&a.run.model),
    )?;
    let mut progress = Progress::bytes(ckpt.total_bytes(), "gguf", g.quiet);
    let mut done = 0u64;
    let mut weighted = 0usize;
    for (k, it) in items.iter().enumerate() {
        if let Some(next) = items.get(k + 1).and_then(|n| n.source) {
            ckpt.view(&ckpt.tensors[next]).prefetch();
        }
        writer.start(&it.out.name)?;
        let Some(i) = it.source else {
            let f = freqs.as_ref().expect("planned with it");
            let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
            writer.write(&bytes)?;
            writer.end()?;
            continue;
        };
        let t = &ckpt.tensors[i];
        let mapped = ckpt.view(t);
        if let Some(bad) = mapped.non_finite() {
            bail!(
                "{}: tensor '{}': {} non-finite values, the first in row {}; nothing written",
                ckpt.path_of(t).display(),
                t.name,
                bad.count,
                bad.first_row
            );
        }
        // A pruned weight goes on from its masked copy.
        let masked = match pruning.as_mut() {
            Some(p) => p
                .apply(i, &mapped)
                .with_context(|| format!("tensor '{}'", t.name))?,
            None => None,
        };
        let view = match &masked {
            Some(bytes) => TensorView::new(t.dtype, &t.shape, bytes)?,
            None => mapped,
        };
        match it.out.ty.blocks() {
            Some(kind) => {
                let cols = view.matrix_dims().1;
                let qw = match &importance {
                    Some(imp) if kind != GgufType::Q8_0 => imp.of(&t.name, cols)?,
                    _ => None,
                };
                let mut b = backend
                    .quantize_gguf(&view, kind, qw.as_deref())
                    .with_context(|| format!("tensor '{}'", t.name))?;
                weighted += usize::from(qw.is_some());
                if let Some(heads) = it.rope_heads {
                    b = llama::to_gguf_rows(&b, b.len() / t.shape[0].max(1), heads);
                }
                writer.write(&b)?;
            }
            None => write_float(&mut writer, &view, it.out.ty, it.rope_heads)?,
        }
        writer.end()?;
        // Its pages are done with: they leave this process's memory.
        mapped.release(0..mapped.bytes().len());
        done += t.nbytes() as u64;
        progress.set(done);
    }
    writer.finish()?;
    progress.finish();
    // With --json, stdout holds the JSON alone.
    let mut human = Vec::new();
    let count = |t: GgmlType| items.iter().filter(|it| it.out.ty == t).count();
    let kinds: Vec<String> = GgmlType::ALL
        .iter()
        .filter(|&&t| count(t) > 0)
        .map(|&t| format!("{} {}", count(t), t.name()))
        .collect();
    let fallbacks: Vec<String> = items
        .iter()
        .filter(|it| it.fallback)
        .map(|it| format!("{} ({})", it.out.name, it.out.ty.name()))
        .collect();
    human.push(format!(
        "wrote {}: llama.cpp {} model, {} tensors ({}), {} -> {} in {:.1} s",
        a.run.output.display(),
        llama::arch(cfg.family),
        items.len(),
        kinds.join(", "),
        human_bytes(ckpt.total_bytes()),
        human_bytes(
            std::fs::metadata(&a.run.output)
                .map(|m| m.len())
                .unwrap_or(0)
        ),
        start.elapsed().as_secs_f64()
    ));
    if let Some(imp) = &importance {
        let quantized = items
            .iter()
            .filter(|it| it.out.ty.blocks().is_some())
            .count();
        human.push(format!(
            "importance matrix {}: {weighted} of {quantized} quantized tensors weighted",
            imp.source()
        ));
    }
    if let Some(p) = &pruning {
        human.push(format!(
            "pruned {} tensors: {} of {} weights ({:.1}%) set to zero before quantizing",
            p.tensors,
            p.pruned,
            p.total,
            100.0 * p.pruned as f64 / p.total.max(1) as f64
        ));
    }
    if !fallbacks.is_empty() {
        human.push(format!(
            "not {} (rows not a whole number of its blocks): {}",
            target.name(),
            fallbacks.join(", ")
        ));
    }
    if !a.run.json {
        for l in &human {
            out.line(l);
        }
    } else {
        let v = serde_json::json!({
            "output": a.run.output,
            "architecture": llama::arch(cfg.family),
            "type": target.name(),
            "tensors": items.iter().map(|it| serde_json::json!({
                "name": it.out.name,
                "type": it.out.ty.name(),
                "dims": it.out.dims,
                "bytes": it.out.nbytes(),
            })).collect::<Vec<_>>(),
            "importance_matrix": importance.as_ref().map(|i| i.source()),
            "pruned": pruning.as_ref().map(|p| serde_json::json!({
                "tensors": p.tensors,
                "weights": p.pruned,
                "of": p.total,
            })),
            "weighted_tensors": weighted,
            "seconds": start.elapsed().as_secs_f64(),
        });
        out.answer(&serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
