//! `shears prune MODEL -o OUT`: score, select, mask, write; report what it
//! cost. Arguments become validated [`Settings`] first, so every usage
//! error is found before any work or any write.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shears_core::calibration::Calibration;
use shears_core::checkpoint::{CheckpointWriter, OutputTensor, ShardSpec};
use shears_core::reference::mask::{check_nm, expand_cols, expand_rows, zero_pruned, Mask};
use shears_core::reference::matmul::{probe_inputs, relative_error};
use shears_core::reference::scores::{random_salt, Method, Scorer};
use shears_core::reference::select::{
    global_cut, prune_count, structured_keep, tensor_cut, Cut, Scored, Select,
};
use shears_core::{Checkpoint, TensorInfo, TensorView};

use crate::args::{BackendChoice, PruneArgs};
use crate::backend::Backend;
use crate::output::{human_bytes, Out};
use crate::plan::{self, Decision};
use crate::progress::Progress;
use crate::CheckFailed;

/// Where a sparsity applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Row,
    Tensor,
    Global,
}

/// How a tensor is pruned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Unstructured { sparsity: f64, scope: Scope },
    Pattern { n: usize, m: usize },
    Rows { sparsity: f64 },
    Cols { sparsity: f64 },
}

impl Mode {
    fn target(&self) -> f64 {
        match *self {
            Mode::Unstructured { sparsity, .. }
            | Mode::Rows { sparsity }
            | Mode::Cols { sparsity } => sparsity,
            Mode::Pattern { n, m } => (m - n) as f64 / m as f64,
        }
    }

    fn describe(&self, method: Method) -> String {
        match *self {
            Mode::Unstructured { sparsity, scope } => format!(
                "prune {:.1}% per {} ({})",
                100.0 * sparsity,
                match scope {
                    Scope::Row => "row",
                    Scope::Tensor => "tensor",
                    Scope::Global => "checkpoint (global)",
                },
                method.name()
            ),
            Mode::Pattern { n, m } => format!("prune {n}:{m} ({})", method.name()),
            Mode::Rows { sparsity } => format!("prune {:.1}% of rows (L2 norm)", 100.0 * sparsity),
            Mode::Cols { sparsity } => {
                format!("prune {:.1}% of columns (L2 norm)", 100.0 * sparsity)
            }
        }
    }
}

/// Validated settings of one run.
#[derive(Debug)]
pub struct Settings {
    pub mode: Mode,
    pub method: Method,
}

pub(crate) fn parse_sparsity(s: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--sparsity '{s}' is not a number"))?;
    if !(0.0..1.0).contains(&v) {
        bail!("--sparsity {s} is outside [0, 1)");
    }
    Ok(v)
}

pub(crate) fn parse_pattern(s: &str) -> Result<(usize, usize)> {
    let bad =
        || anyhow::anyhow!("--pattern '{s}' is not N:M with 0 < N < M ≤ 16 (for example 2:4)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let n: usize = a.trim().parse().map_err(|_| bad())?;
    let m: usize = b.trim().parse().map_err(|_| bad())?;
    if n == 0 || n >= m || m > 16 {
        return Err(bad());
    }
    Ok((n, m))
}

pub(crate) fn parse_method(s: &str) -> Result<Method> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "magnitude" => Method::Magnitude,
        "wanda" => Method::Wanda,
        "taylor" => Method::Taylor,
        "random" => Method::Random,
        other => bail!("--method '{other}' is not one of magnitude, wanda, taylor, random"),
    })
}

/// Turns raw arguments into settings, refusing every bad combination.
pub fn settings(a: &PruneArgs) -> Result<Settings> {
    let method = parse_method(&a.method)?;
    let sparsity = parse_sparsity(&a.sparsity)?;
    let mode = match (&a.pattern, &a.structured) {
        (Some(_), Some(_)) => bail!("--pattern and --structured cannot be combined"),
        (Some(p), None) => {
            if a.scope.is_some() {
                bail!("--pattern applies to every group of M weights; drop --scope");
            }
            let (n, m) = parse_pattern(p)?;
            Mode::Pattern { n, m }
        }
        (None, Some(axis)) => {
            if a.scope.is_some() {
                bail!("--structured prunes whole rows or columns per tensor; drop --scope");
            }
            if method != Method::Magnitude {
                bail!("--structured ranks rows and columns by L2 norm; drop --method");
            }
            match axis.as_str() {
                "rows" => Mode::Rows { sparsity },
                "cols" | "columns" => Mode::Cols { sparsity },
                other => bail!("--structured '{other}' is not rows or cols"),
            }
        }
        (None, None) => {
            let scope = match a.scope.as_deref() {
                None if method == Method::Wanda => Scope::Row,
                None => Scope::Tensor,
                Some("row") => Scope::Row,
                Some("tensor") => Scope::Tensor,
                Some("global") => Scope::Global,
                Some(other) => bail!("--scope '{other}' is not row, tensor or global"),
            };
            Mode::Unstructured { sparsity, scope }
        }
    };
    if matches!(method, Method::Wanda | Method::Taylor) && a.calibration.is_none() {
        bail!("--method {} needs --calibration FILE", method.name());
    }
    if a.pattern.is_some() && a.sparsity != "0.5" {
        bail!("--pattern sets the sparsity; drop --sparsity");
    }
    Ok(Settings { mode, method })
}

/// Per-tensor inputs the scorer and validation need, loaded up front.
pub(crate) struct Aux<'c> {
    norms: Option<Vec<f32>>,
    grad: Option<TensorView<'c>>,
    inputs: Option<(Vec<f32>, usize)>,
    salt: u32,
}

impl Aux<'_> {
    pub(crate) fn scorer(&self, method: Method) -> Scorer<'_> {
        Scorer {
            method,
            norms: self.norms.as_deref(),
            grad: self.grad,
            salt: self.salt,
        }
    }
}

/// One row of the report.
#[derive(Debug, serde::Serialize)]
struct Row {
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
    seconds: f64,
}

pub fn run(a: &PruneArgs, choice: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let s = settings(a)?;
    let ckpt = Checkpoint::open(&a.model)?;
    let mut selection = plan::select(&ckpt, &a.select.include, &a.select.exclude)?;
    for g in &selection.unmatched {
        tracing::warn!("pattern '{g}' matched no tensor");
    }
    plan::apply_non_finite(&ckpt, &mut selection, a.select.non_finite);
    let chosen: Vec<usize> = selection.compressed().collect();
    if chosen.is_empty() {
        tracing::warn!("no tensor is selected for pruning; the output is a copy");
    }
    // Shapes that a pattern cannot cut are refused before any work.
    if let Mode::Pattern { n, m } = s.mode {
        for &i in &chosen {
            let t = &ckpt.tensors[i];
            check_nm(n, m, t.shape[1]).map_err(|e| {
                anyhow::anyhow!("{}: tensor '{}': {e}", ckpt.path_of(t).display(), t.name)
            })?;
        }
    }
    let calib = a
        .calibration
        .as_ref()
        .map(|p| Calibration::open(p))
        .transpose()?;
    let aux = load_aux(&ckpt, &chosen, &s, calib.as_ref(), a)?;

    if a.dry_run {
        print_plan(&ckpt, &selection.decisions, &s, &selection.unmatched, out);
        return Ok(());
    }

    let opts = plan::writer_options(&ckpt, &a.model, a.force);
    let shards = mirror_shards(&ckpt);
    let mut writer = CheckpointWriter::create(&a.output, shards, opts)?;
    let backend = Backend::open(choice)?;
    let (select, mask) = (backend.select(), backend.mask());
    let (verify_select, verify_mask) = backend.verifier();

    let global = global_scope_cut(&ckpt, &chosen, &aux, &s, select.as_ref())?;
    let mut ties_left = global.map_or(0, |c| c.ties);

    let start = Instant::now();
    let mut progress = Progress::bytes(ckpt.total_bytes(), "prune", quiet);
    let mut done = 0u64;
    let mut rows = Vec::new();
    let mut mismatched = 0u64;
    let mut next_aux = chosen.iter().zip(&aux).peekable();
    for (i, info) in ckpt.tensors.iter().enumerate() {
        progress.tensor(i, ckpt.tensors.len(), &info.name);
        let view = ckpt.view(info);
        let here = next_aux.next_if(|(&j, _)| j == i).map(|(_, x)| x);
        match here {
            None => copy_tensor(&mut writer, &view)?,
            Some(x) => {
                plan::refuse_non_finite(&ckpt, info, &view)?;
                let t0 = Instant::now();
                let scorer = x.scorer(s.method);
                let ctx = |e: shears_core::Error| {
                    anyhow::anyhow!(
                        "{}: tensor '{}': {e}",
                        ckpt.path_of(info).display(),
                        info.name
                    )
                };
                let global_cut = global.map(|c| Cut {
                    key: c.key,
                    ties: ties_left,
                });
                let (m, used) = make_mask(
                    &backend,
                    select.as_ref(),
                    mask.as_ref(),
                    &view,
                    &scorer,
                    s.mode,
                    global_cut,
                )
                .map_err(ctx)?;
                if global.is_some() {
                    ties_left -= used;
                }
                let mut verify_mismatches = None;
                if a.checks.verify {
                    let (m2, _) = make_mask(
                        &backend,
                        verify_select.as_ref(),
                        verify_mask.as_ref(),
                        &view,
                        &scorer,
                        s.mode,
                        global_cut,
                    )
                    .map_err(ctx)?;
                    let diff = m.iter().zip(&m2).filter(|(a, b)| a != b).count() as u64;
                    if diff > 0 {
                        tracing::error!(
                            "{}: {diff} mask entries differ from the CPU reference",
                            info.name
                        );
                    }
                    mismatched += diff;
                    verify_mismatches = Some(diff);
                }
                let relative_error = if a.checks.validate {
                    Some(validate(&backend, &view, &m, x, a).map_err(ctx)?)
                } else {
                    None
                };
                let pruned = m.iter().filter(|&&k| k == 0).count() as u64;
                writer.write(&zero_pruned(info.dtype, view.bytes(), &m))?;
                view.release(0..info.nbytes());
                rows.push(Row {
                    name: info.name.clone(),
                    shape: info.shape.clone(),
                    dtype: info.dtype.name().into(),
                    action: s.mode.describe(s.method),
                    numel: info.numel(),
                    pruned,
                    target_sparsity: s.mode.target(),
                    achieved_sparsity: pruned as f64 / info.numel().max(1) as f64,
                    relative_error,
                    verify_mismatches,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            }
        }
        done += info.nbytes() as u64;
        progress.set(done);
    }
    progress.finish();
    for f in &ckpt.extra_files {
        writer.copy_file(f)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    print_report(&rows, &ckpt, seconds, &backend, out);
    if let Some(path) = &a.report {
        write_json_report(path, a, &s, &rows, &ckpt, seconds, &backend)?;
    }
    if mismatched > 0 {
        drop(writer); // a failed check leaves no output behind
        return Err(CheckFailed(format!(
            "--verify: {mismatched} mask entries differ between {} and the CPU reference; no output written",
            backend.describe()
        ))
        .into());
    }
    let dest = writer.finish()?;
    tracing::info!("wrote {} in {seconds:.2} s", dest.display());
    Ok(())
}

/// The one cut of `--scope global` over every chosen tensor (a first,
/// read-only pass), or `None` for the other modes.
pub(crate) fn global_scope_cut(
    ckpt: &Checkpoint,
    chosen: &[usize],
    aux: &[Aux],
    s: &Settings,
    select: &dyn Select,
) -> Result<Option<Cut>> {
    let Mode::Unstructured {
        sparsity,
        scope: Scope::Global,
    } = s.mode
    else {
        return Ok(None);
    };
    let items: Vec<Scored> = chosen
        .iter()
        .zip(aux)
        .map(|(&i, x)| (ckpt.view(&ckpt.tensors[i]), x.scorer(s.method)))
        .collect();
    let n: u64 = items.iter().map(|(w, _)| w.numel() as u64).sum();
    let k = prune_count(sparsity, n);
    let cut = global_cut(select, &items, k)?;
    tracing::info!(
        "global cut: {k} of {n} weights, key {:#010x} with {} ties",
        cut.key,
        cut.ties
    );
    Ok(Some(cut))
}

pub(crate) fn load_aux<'c>(
    ckpt: &Checkpoint,
    chosen: &[usize],
    s: &Settings,
    calib: Option<&'c Calibration>,
    a: &PruneArgs,
) -> Result<Vec<Aux<'c>>> {
    chosen
        .iter()
        .map(|&i| {
            let t = &ckpt.tensors[i];
            let cols = t.shape[1];
            let missing = |key: &str, calib: &Calibration| {
                anyhow::anyhow!(
                    "{}: tensor '{}.{key}' is missing (needed by --method {} for '{}')",
                    calib.path().display(),
                    t.name,
                    s.method.name(),
                    t.name
                )
            };
            let mut aux = Aux {
                norms: None,
                grad: None,
                inputs: None,
                salt: random_salt(a.seed, &t.name),
            };
            if let Some(c) = calib {
                if s.method == Method::Wanda {
                    aux.norms = Some(
                        c.input_norms(&t.name, cols)?
                            .ok_or_else(|| missing("input_norm", c))?,
                    );
                }
                if s.method == Method::Taylor {
                    aux.grad = Some(
                        c.grad(&t.name, &t.shape)?
                            .ok_or_else(|| missing("grad", c))?,
                    );
                }
                if a.checks.validate {
                    aux.inputs = c.inputs(&t.name, cols)?;
                }
            }
            Ok(aux)
        })
        .collect()
}

/// Output shards with the input's file names and tensor order.
fn mirror_shards(ckpt: &Checkpoint) -> Vec<ShardSpec> {
    let mut specs = plan::empty_shards(ckpt);
    for t in &ckpt.tensors {
        specs[t.shard].tensors.push(OutputTensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
    }
    specs
}

fn copy_tensor(writer: &mut CheckpointWriter, view: &TensorView) -> Result<()> {
    let bytes = view.bytes();
    for (i, piece) in bytes.chunks(16 << 20).enumerate() {
        writer.write(piece)?;
        view.release(i * (16 << 20)..i * (16 << 20) + piece.len());
    }
    if bytes.is_empty() {
        // Zero-sized tensors still take their place in the plan.
        writer.write(&[])?;
    }
    Ok(())
}

/// The mask of one tensor and the global ties it used.
pub(crate) fn make_mask(
    backend: &Backend,
    select: &dyn Select,
    mask: &dyn Mask,
    w: &TensorView,
    scorer: &Scorer,
    mode: Mode,
    global: Option<Cut>,
) -> shears_core::Result<(Vec<u8>, u64)> {
    let (rows, cols) = w.matrix_dims();
    match mode {
        Mode::Unstructured {
            scope: Scope::Global,
            ..
        } => mask.apply_cut(w, scorer, global.expect("global cut computed")),
        Mode::Unstructured {
            sparsity,
            scope: Scope::Tensor,
        } => {
            let k = prune_count(sparsity, w.numel() as u64);
            let cut = tensor_cut(select, w, scorer, k)?;
            mask.apply_cut(w, scorer, cut)
        }
        Mode::Unstructured {
            sparsity,
            scope: Scope::Row,
        } => {
            let k = prune_count(sparsity, cols as u64);
            let cuts = select.row_cuts(w, scorer, k)?;
            Ok((mask.apply_row_cuts(w, scorer, &cuts)?, 0))
        }
        Mode::Pattern { n, m } => Ok((mask.nm(w, scorer, n, m)?, 0)),
        Mode::Rows { sparsity } => {
            let norms = backend.importance().row_sumsq(w)?;
            let keep = structured_keep(&norms, prune_count(sparsity, rows as u64));
            Ok((expand_rows(&keep, cols), 0))
        }
        Mode::Cols { sparsity } => {
            let norms = backend.importance().col_sumsq(w)?;
            let keep = structured_keep(&norms, prune_count(sparsity, cols as u64));
            Ok((expand_cols(&keep, rows), 0))
        }
    }
}

/// ‖Y − Ŷ‖/‖Y‖ of the layer on calibration inputs or seeded probes.
fn validate(
    backend: &Backend,
    w: &TensorView,
    mask: &[u8],
    aux: &Aux,
    a: &PruneArgs,
) -> shears_core::Result<f64> {
    let (_, cols) = w.matrix_dims();
    let probes;
    let (x, p) = match &aux.inputs {
        Some((x, n)) => (x.as_slice(), *n),
        None => {
            probes = probe_inputs(a.checks.probe_rows, cols, a.seed);
            (probes.as_slice(), a.checks.probe_rows)
        }
    };
    let mm = backend.matmul();
    let y = mm.masked_matmul(x, p, w, None)?;
    let yhat = mm.masked_matmul(x, p, w, Some(mask))?;
    Ok(relative_error(&y, &yhat))
}

fn print_plan(
    ckpt: &Checkpoint,
    decisions: &[Decision],
    s: &Settings,
    unmatched: &[String],
    out: &mut Out,
) {
    let w = ckpt
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.line(&format!(
        "plan for {} ({} tensors):",
        ckpt.root.display(),
        ckpt.tensors.len()
    ));
    out.line(&format!(
        "{:<w$}  {:<6} {:<14} {:>10}  action",
        "name", "dtype", "shape", "bytes"
    ));
    let mut pruned = (0usize, 0u64);
    for (t, d) in ckpt.tensors.iter().zip(decisions) {
        let action = match d {
            Decision::Compress => {
                pruned.0 += 1;
                pruned.1 += prune_count_for(t, s.mode);
                s.mode.describe(s.method)
            }
            Decision::Keep(why) => format!("keep ({why})"),
        };
        out.line(&format!(
            "{:<w$}  {:<6} {:<14} {:>10}  {action}",
            t.name,
            t.dtype.name(),
            format!("{:?}", t.shape),
            human_bytes(t.nbytes() as u64)
        ));
    }
    out.line(&format!(
        "{} tensors pruned, about {} weights zeroed; bytes before and after: {} (dense output keeps its size)",
        pruned.0,
        pruned.1,
        human_bytes(ckpt.total_bytes())
    ));
    for g in unmatched {
        out.line(&format!("warning: pattern '{g}' matched no tensor"));
    }
}

fn prune_count_for(t: &TensorInfo, mode: Mode) -> u64 {
    let (rows, cols) = (t.shape[0] as u64, t.shape[1] as u64);
    match mode {
        Mode::Unstructured {
            sparsity,
            scope: Scope::Row,
        } => rows * prune_count(sparsity, cols),
        Mode::Unstructured { sparsity, .. } => prune_count(sparsity, rows * cols),
        Mode::Pattern { n, m } => rows * cols / m as u64 * (m - n) as u64,
        Mode::Rows { sparsity } => prune_count(sparsity, rows) * cols,
        Mode::Cols { sparsity } => prune_count(sparsity, cols) * rows,
    }
}

fn print_report(rows: &[Row], ckpt: &Checkpoint, seconds: f64, backend: &Backend, out: &mut Out) {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(6);
    out.line(&format!(
        "{:<w$}  {:>8} {:>9} {:>11} {:>9}",
        "tensor", "target", "achieved", "rel. error", "time"
    ));
    let (mut numel, mut pruned) = (0u64, 0u64);
    for r in rows {
        numel += r.numel as u64;
        pruned += r.pruned;
        out.line(&format!(
            "{:<w$}  {:>7.2}% {:>8.4}% {:>11} {:>7.1}ms",
            r.name,
            100.0 * r.target_sparsity,
            100.0 * r.achieved_sparsity,
            r.relative_error.map_or("-".into(), |e| format!("{e:.4e}")),
            1e3 * r.seconds
        ));
    }
    let all: u64 = ckpt.tensors.iter().map(|t| t.numel() as u64).sum();
    out.line(&format!(
        "total: {} tensors, {pruned} of {numel} weights pruned ({:.2}% of them, {:.2}% of the checkpoint) in {seconds:.2} s on {}",
        rows.len(),
        100.0 * pruned as f64 / numel.max(1) as f64,
        100.0 * pruned as f64 / all.max(1) as f64,
        backend.describe()
    ));
}

fn write_json_report(
    path: &PathBuf,
    a: &PruneArgs,
    s: &Settings,
    rows: &[Row],
    ckpt: &Checkpoint,
    seconds: f64,
    backend: &Backend,
) -> Result<()> {
    let numel: u64 = rows.iter().map(|r| r.numel as u64).sum();
    let pruned: u64 = rows.iter().map(|r| r.pruned).sum();
    let doc = serde_json::json!({
        "model": a.model,
        "output": a.output,
        "backend": backend.describe(),
        "method": s.method.name(),
        "mode": s.mode.describe(s.method),
        "target_sparsity": s.mode.target(),
        "tensors": rows,
        "totals": {
            "tensors": rows.len(),
            "numel": numel,
            "pruned": pruned,
            "sparsity": pruned as f64 / numel.max(1) as f64,
            "checkpoint_numel": ckpt.tensors.iter().map(|t| t.numel() as u64).sum::<u64>(),
            "seconds": seconds,
        },
    });
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(path, text).with_context(|| format!("writing the report {}", path.display()))
}
