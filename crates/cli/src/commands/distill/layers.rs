//! `shears distill layers --teacher DENSE --student COMPRESSED -o OUT`:
//! layer-wise distillation (ZeroQuant's LKD). Every compressed linear
//! layer of the student (quantized, or a 2-D weight that differs from the
//! teacher's) learns to reproduce its teacher layer's outputs on
//! calibration inputs or seeded probes, its mask and quantization grid held
//! fixed; everything else is copied. The student keeps its format: dense
//! safetensors in its dtype with its zeros exact, or compressed-tensors with
//! new codes on the same scales and zero points.
//!
//! Everything that can be wrong with the inputs (names, shapes, the
//! calibration file) is checked before the first layer is trained, and the
//! output folder appears only when complete.

use anyhow::{bail, Result};
use shears_core::calibration::Calibration;

use crate::args::{DistillMode, Judge};
use crate::backend::Backend;
use crate::lm::Model;
use crate::CheckFailed;
use shears_core::formats::compressed_tensors::{FloatRead, ReadScheme};
use shears_core::formats::ct_reader::{self, scheme_of};
use shears_core::model::eval::Windows;
use shears_core::model::text::{read_tokens, sequences};
use shears_core::train::LkdConfig;
use shears_core::{Checkpoint, Error, TensorInfo};

use super::job::Job;
use super::model::{self, ModelJob, Source};
use super::report;
use crate::args::{DistillLayersArgs, GlobalArgs};
use crate::output::Out;
use crate::select;
use crate::training::on_device;

/// One layer to distill.
pub(super) struct Target {
    /// `<prefix>.weight`, the name in the teacher.
    pub(super) name: String,
    pub(super) out: usize,
    pub(super) inn: usize,
    /// Index into the student's quantized layers, or None for a dense weight.
    pub(super) quant: Option<usize>,
    pub(super) teacher_bias: Option<String>,
    /// The student's `<prefix>.bias`, trained along and written back.
    pub(super) student_bias: Option<String>,
    /// The student tensor holding the weight (codes when quantized).
    pub(super) stored: String,
}

/// The student as it is stored.
pub(super) struct Student<'c> {
    pub(super) ckpt: &'c Checkpoint,
    /// The config and scheme of a compressed-tensors student.
    pub(super) scheme: Option<ReadScheme>,
    pub(super) quantized: Vec<ct_reader::Layer<'c>>,
    /// Whether the student was pruned: dense (its zeros are the pruned
    /// weights) or compressed-tensors with a `sparsity_config` (which
    /// `compress`, and `quantize` of an input that was pruned, write). A
    /// quantized student without one has no pruned weights, only weights
    /// whose code is the zero point, and none of them is frozen.
    pub(super) pruned: bool,
}

/// Checks the flags into the training settings.
fn config(a: &DistillLayersArgs) -> Result<LkdConfig> {
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let lr = a.lr.unwrap_or(default_lr(a, None));
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number, got {lr}");
    }
    if !(a.held_out_fraction > 0.0 && a.held_out_fraction < 1.0) {
        bail!(
            "--held-out-fraction must be in (0, 1), got {}",
            a.held_out_fraction
        );
    }
    if a.calibration.is_none() && a.calibration_text.calibration_text.is_empty() && a.probe_rows < 2
    {
        bail!("--probe-rows must be at least 2 (training and held-out rows)");
    }
    Ok(LkdConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr,
        seed: a.seed,
        patience: (a.patience > 0).then_some(a.patience),
    })
}

/// `--lr` when not given: Adam's peak learning rate that measured best
/// for the rows at hand (`scripts/distill-compare.sh` with `--lr` and
/// `--epochs` swept): every calibration token is a row with
/// --calibration-text, so an epoch takes ~30 times the steps of a
/// calibration file's 256 rows and a smaller rate does better. Times
/// [`lr_scale`] of the student.
pub(super) fn default_lr(a: &DistillLayersArgs, scheme: Option<&ReadScheme>) -> f32 {
    lr_scale(scheme)
        * match (a.calibration_text.calibration_text.is_empty(), a.mode) {
            (true, _) => 5e-3,
            // Stands for BLOCK_LR_PER_RMS × the golden models' weight RMS
            // (0.2); each block's own rate is set from its weights.
            (false, Some(DistillMode::Block)) => 3e-3,
            (false, _) => 3e-4,
        }
}

/// How the default rates scale with the student's grid: an FP8 student's
/// grid is about ten times finer than int4's or FP4's (3 mantissa bits: a
/// step of 1/16–1/8 of each weight), and steps of the int4 size throw its
/// weights across several levels. Measured (`scripts/distill-compare.sh`,
/// KL to the teacher on DESIGN.md): FP8 tiny-llama sequential 0.0070 →
/// 0.0011 at 3e-4, 0.0006 at 3e-5; block nothing kept at 0.015 × RMS,
/// 0.0007 at 3e-5; golden Llama sequential 0.0113 / 0.0082, block 0.0224 /
/// 0.0075 (at 3e-3 and 3e-4).
pub(super) fn lr_scale(scheme: Option<&ReadScheme>) -> f32 {
    match scheme.and_then(|s| s.float) {
        Some(FloatRead::Fp8 { .. }) => 0.1,
        _ => 1.0,
    }
}

/// Block mode without `--lr`: each block's learning rate is this times the
/// root mean square of its trained linears' kept weights. Adam's steps are
/// in the weights' own units, and checkpoints differ in scale: 0.003 (this
/// times the golden models' RMS of 0.2) left every block of the generated
/// 2 GB checkpoint (RMS 0.01–0.016) worse, where its 0.015 × RMS improved
/// them.
pub(super) const BLOCK_LR_PER_RMS: f32 = 0.015;

/// Whether each block's learning rate comes from its weights.
pub(super) fn lr_from_weights(a: &DistillLayersArgs) -> bool {
    a.lr.is_none()
        && a.mode == Some(DistillMode::Block)
        && !a.calibration_text.calibration_text.is_empty()
}

/// The student's tensors as the teacher names them: every stored tensor,
/// a quantized layer's tensors standing for its `<prefix>.weight`. Each
/// must match a teacher tensor in name and shape, and the other way round.
fn match_names(teacher: &Checkpoint, s: &Student) -> Result<()> {
    let mut logical: Vec<(String, Vec<usize>, &TensorInfo)> = Vec::new();
    let mut hidden = std::collections::HashSet::new();
    for l in &s.quantized {
        hidden.extend(l.tensor_names());
        logical.push((format!("{}.weight", l.prefix), vec![l.out, l.inn], l.codes));
    }
    for t in &s.ckpt.tensors {
        if !hidden.contains(&t.name) {
            logical.push((t.name.clone(), t.shape.clone(), t));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, shape, t) in &logical {
        let path = s.ckpt.path_of(t);
        let Some(tt) = teacher.get(name) else {
            return Err(Error::tensor(
                path,
                name,
                format!("not in the teacher {}", teacher.root.display()),
            )
            .into());
        };
        if &tt.shape != shape {
            return Err(Error::tensor(
                path,
                name,
                format!(
                    "shape {shape:?}, but the teacher's ({}) is {:?}",
                    teacher.path_of(tt).display(),
                    tt.shape
                ),
            )
            .into());
        }
        seen.insert(name.clone());
    }
    if let Some(t) = teacher.tensors.iter().find(|t| !seen.contains(&t.name)) {
        return Err(Error::tensor(
            teacher.path_of(t),
            &t.name,
            format!("missing from the student {}", s.ckpt.root.display()),
        )
        .into());
    }
    Ok(())
}

/// Whether a dense student weight differs from the teacher's. The pages
/// read are dropped from memory after (this reads both checkpoints whole).
fn differs(teacher: &Checkpoint, tt: &TensorInfo, student: &Checkpoint, st: &TensorInfo) -> bool {
    let (a, b) = (teacher.view(tt), student.view(st));
    let differ = if tt.dtype == st.dtype {
        a.bytes() != b.bytes()
    } else {
        match (a.to_f32(), b.to_f32()) {
            (Ok(x), Ok(y)) => x != y,
            _ => true,
        }
    };
    a.release(0..tt.nbytes());
    b.release(0..st.nbytes());
    differ
}

/// The layers to distill, in the order the student stores them.
fn targets(
    a: &DistillLayersArgs,
    teacher: &Checkpoint,
    s: &Student,
) -> Result<(Vec<Target>, Vec<String>)> {
    let selection = select::select(teacher, &a.select.include, &a.select.exclude)?;
    let selected: std::collections::HashSet<&str> = selection
        .compressed()
        .map(|i| teacher.tensors[i].name.as_str())
        .collect();
    let bias = |ckpt: &Checkpoint, prefix: &str, out: usize| -> Result<Option<String>> {
        let name = format!("{prefix}.bias");
        match ckpt.get(&name) {
            None => Ok(None),
            Some(t) if t.shape == [out] && t.dtype.is_float_computable() => Ok(Some(name)),
            Some(t) => Err(Error::tensor(
                ckpt.path_of(t),
                &name,
                format!("{} {:?}, expected a float [{out}]", t.dtype, t.shape),
            )
            .into()),
        }
    };
    let mut found = Vec::new();
    for t in &s.ckpt.tensors {
        let (prefix, out, inn, quant) =
            if let Some(i) = s.quantized.iter().position(|l| std::ptr::eq(l.codes, t)) {
                let l = &s.quantized[i];
                (l.prefix.clone(), l.out, l.inn, Some(i))
            } else if let Some(p) = t.name.strip_suffix(".weight") {
                if t.shape.len() != 2 || !t.dtype.is_float_computable() {
                    continue;
                }
                (p.to_string(), t.shape[0], t.shape[1], None)
            } else {
                continue;
            };
        let name = format!("{prefix}.weight");
        if !selected.contains(name.as_str()) {
            continue;
        }
        let tt = teacher.get(&name).expect("names matched");
        if quant.is_none() && !differs(teacher, tt, s.ckpt, t) {
            continue;
        }
        found.push(Target {
            teacher_bias: bias(teacher, &prefix, out)?,
            student_bias: bias(s.ckpt, &prefix, out)?,
            name,
            out,
            inn,
            quant,
            stored: t.name.clone(),
        });
    }
    Ok((found, selection.unmatched))
}

pub fn run(a: &DistillLayersArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let mut cfg = config(a)?;
    if a.output.exists() && !a.force {
        bail!("{}: exists (use --force to replace it)", a.output.display());
    }
    let teacher = Checkpoint::open(&a.teacher)?;
    if scheme_of(&teacher)?.is_some() {
        bail!(
            "{}: the teacher is a compressed-tensors checkpoint; give the dense one (or `shears decompress` it first)",
            a.teacher.display()
        );
    }
    let student_ckpt = Checkpoint::open(&a.student)?;
    // A compressed-tensors student keeps its config.json as it is: the
    // grid is fixed, so the quantization_config still describes it.
    let scheme = scheme_of(&student_ckpt)?;
    let quantized = match &scheme {
        Some(rs) => ct_reader::layers(&student_ckpt, rs)?,
        None => Vec::new(),
    };
    let pruned = scheme.is_none()
        || student_ckpt.config()?.is_some_and(|c| {
            c.get("quantization_config")
                .and_then(|q| q.get("sparsity_config"))
                .and_then(|s| s.as_object())
                .is_some_and(|s| !s.is_empty())
        });
    cfg.lr = a.lr.unwrap_or(default_lr(a, scheme.as_ref()));
    let student = Student {
        ckpt: &student_ckpt,
        scheme,
        quantized,
        pruned,
    };
    match_names(&teacher, &student)?;
    let (targets, unmatched) = targets(a, &teacher, &student)?;
    for g in &unmatched {
        tracing::warn!("--include/--exclude pattern '{g}' matched no tensor");
    }
    if targets.is_empty() {
        bail!(
            "{}: no compressed linear layer to distill (every selected weight equals the teacher's and none is quantized)",
            a.student.display()
        );
    }
    let text = !a.calibration_text.calibration_text.is_empty();
    if a.mode == Some(DistillMode::Sequential) && !text {
        bail!(
            "--mode sequential needs --calibration-text: the student's own inputs come from \
             running it over text"
        );
    }
    let calibration = match &a.calibration {
        Some(p) => {
            let c = Calibration::open(p)?;
            for t in &targets {
                match c.input_rows(&t.name, t.inn)? {
                    Some(n) if n >= 2 => {}
                    Some(n) => bail!(
                        "{}: tensor '{}.inputs': {n} rows; at least 2 are needed (training and held-out)",
                        p.display(),
                        t.name
                    ),
                    None => {
                        return Err(Error::tensor(
                            p,
                            format!("{}.inputs", t.name),
                            "missing (layer-wise distillation needs the layer's inputs)",
                        )
                        .into())
                    }
                }
            }
            Some(c)
        }
        None => None,
    };
    let job = Job {
        a,
        cfg,
        teacher: &teacher,
        student: &student,
        targets: &targets,
        calibration: calibration.as_ref(),
        quiet: g.quiet,
        sync: g.sync,
    };
    if !text && a.eval_text.is_empty() {
        let rows = on_device(g.backend, job)?;
        return report::print(a, &rows, student.scheme.as_ref(), None, out);
    }
    with_model(a, g, job, out)
}

/// The run with the models running over text: the layers distilled on the
/// calibration text (or the calibration file's rows) and both students
/// judged on the evaluation text.
fn with_model(a: &DistillLayersArgs, g: &GlobalArgs, job: Job, out: &mut Out) -> Result<()> {
    let (tm, sm) = (Model::open(&a.teacher)?, Model::open(&a.student)?);
    let (tw, sw) = (tm.weights()?, sm.weights()?);
    model::check_targets(&job, tm.cfg.layers)?;
    let tok = tm.tokenizer()?;
    let seq_len = a.calibration_text.calibration_seq_len;
    let t = &a.calibration_text;
    let (ids, held_seqs) = match t.calibration_text.is_empty() {
        true => (Vec::new(), 0),
        false => {
            let ids = sequences(&tok, &t.calibration_text, seq_len, t.calibration_tokens)?;
            let n = ids.len() / seq_len;
            if n < 2 {
                bail!(
                    "--calibration-text gives {n} sequence of {seq_len} tokens; at least 2 are \
                     needed (training and held-out): give more text or lower \
                     --calibration-seq-len"
                );
            }
            let held = ((n as f64 * a.held_out_fraction).round() as usize).clamp(1, n - 1);
            (ids, held)
        }
    };
    let eval = match a.eval_text.is_empty() {
        true => {
            let held = ids[ids.len() - held_seqs * seq_len..].to_vec();
            Windows {
                ids: held,
                seq_len,
                scored_from: vec![1; held_seqs],
            }
        }
        false => {
            let per = seq_len.saturating_sub(tok.bos.is_some() as usize);
            let text = read_tokens(&tok, &a.eval_text, t.calibration_tokens + per)?;
            Windows::new(&text, tok.bos, seq_len, per, t.calibration_tokens).map_err(|e| {
                let names: Vec<String> = a
                    .eval_text
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                anyhow::anyhow!("--eval-text {}: {e}", names.join(", "))
            })?
        }
    };
    let source = match t.calibration_text.is_empty() {
        true => Source::File,
        false => Source::Text(a.mode.unwrap_or(DistillMode::Sequential)),
    };
    let backend = Backend::open(g.backend)?;
    let fw = backend.forward();
    let scheme = job.student.scheme;
    let run = ModelJob {
        job,
        fw: fw.as_ref(),
        teacher: &tw,
        student: &sw,
        source,
        ids,
        seq_len,
        held_seqs,
        eval,
        keep_worse: a.keep_worse,
        judge: a.judge,
    };
    let (rows, verdict) = backend.train(run)?;
    report::print(a, &rows, scheme.as_ref(), Some((&verdict, source)), out)?;
    if !verdict.written {
        let (b, f) = (&verdict.before, &verdict.after);
        let kl = |s: &shears_core::model::eval::Scores| {
            s.reference.as_ref().map_or(f64::NAN, |r| r.kl_mean)
        };
        let what = match a.judge {
            Judge::Perplexity => {
                format!("perplexity {:.4} against {:.4}", f.perplexity, b.perplexity)
            }
            Judge::Kl => format!("KL to the teacher {:.5} against {:.5}", kl(f), kl(b)),
        };
        return Err(CheckFailed(format!(
            "the distilled student is worse than the student on the evaluation text ({what}): \
             nothing written (--keep-worse writes it anyway)"
        ))
        .into());
    }
    Ok(())
}
