//! The figures `distill layers` reports per layer: a table on stdout and,
//! with --report, JSON.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use shears_core::formats::compressed_tensors::ReadScheme;

use super::model::{Source, Verdict};
use crate::args::{DistillLayersArgs, DistillMode};
use crate::output::Out;
use shears_core::model::eval::Scores;

/// One distilled layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub name: String,
    /// [out, in].
    pub shape: [usize; 2],
    /// Trained on its fixed quantization grid (else a dense weight).
    pub quantized: bool,
    /// Fraction of weights the mask keeps.
    pub density: f64,
    pub train_rows: usize,
    pub held_rows: usize,
    /// Relative output error ‖Y_t − Y_s‖/‖Y_t‖ on the held-out rows, of the
    /// student as given and of the layer as written.
    pub error_before: f64,
    pub error_after: f64,
    /// The held-out error of the trained layer as it would be stored
    /// (equal to `error_after` unless the student was kept).
    pub trained_error: f64,
    /// Training did not lower the held-out error, so the student's layer
    /// was written unchanged.
    pub kept_student: bool,
    /// Kept weights that the written layer stores as exactly zero (a
    /// quantized weight that settled on its zero point).
    pub new_zeros: usize,
    /// MSE of the first and last training step, and the number of steps.
    pub first_loss: f64,
    pub last_loss: f64,
    pub steps: usize,
    pub seconds: f64,
}

impl LayerRow {
    /// How much lower the error is after, in % of before.
    pub fn reduction(&self) -> f64 {
        if self.error_before > 0.0 {
            100.0 * (1.0 - self.error_after / self.error_before)
        } else {
            0.0
        }
    }
}

/// Prints the table and writes the JSON report.
pub fn print(
    a: &DistillLayersArgs,
    rows: &[LayerRow],
    scheme: Option<&ReadScheme>,
    model: Option<(&Verdict, Source)>,
    out: &mut Out,
) -> Result<()> {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let format = describe_format(scheme);
    let files = |f: &[std::path::PathBuf]| {
        let names: Vec<String> = f.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    };
    let text = files(&a.calibration_text.calibration_text);
    let inputs = match (&a.calibration, model.map(|m| m.1)) {
        (_, Some(Source::Text(DistillMode::Sequential))) => {
            format!("the student's own inputs (sequential) from {text}")
        }
        (_, Some(Source::Text(DistillMode::Independent))) => {
            format!("the teacher's inputs (independent) from {text}")
        }
        (_, Some(Source::Text(DistillMode::Block))) => {
            format!("the student's own inputs, a decoder block at a time (block) from {text}; error = the block's output")
        }
        (Some(p), _) => format!("calibration inputs from {}", p.display()),
        (None, _) => format!("{} seeded Gaussian probe rows per layer", a.probe_rows),
    };
    out.line(&format!(
        "distilled {} layers of {} ({format}) against {} on {inputs}",
        rows.len(),
        a.student.display(),
        a.teacher.display()
    ));
    let (lr_fixed, lr_per_rms) = rates(a, scheme);
    let lr = match (lr_fixed, lr_per_rms) {
        (_, Some(r)) => format!("{r} × each block's weight RMS"),
        (Some(lr), None) => lr.to_string(),
        (None, None) => unreachable!("one of the two"),
    };
    out.line(&format!(
        "{} epochs, batch {}, lr {lr}, seed {}; error = ‖Y_t − Y_s‖/‖Y_t‖ on held-out rows",
        a.epochs, a.batch_size, a.seed
    ));
    out.line("");
    out.line(&format!(
        "{:<width$}  {:>9}  {:>6}  {:>7}  {:>8}  {:>8}  {:>9}  {:>7}",
        "layer", "shape", "kept", "rows", "before", "after", "reduction", "time"
    ));
    for r in rows {
        let note = if r.kept_student {
            "  (student kept: training did not help)"
        } else {
            ""
        };
        out.line(&format!(
            "{:<width$}  {:>9}  {:>5.1}%  {:>7}  {:>8.5}  {:>8.5}  {:>8.1}%  {:>6.2}s{note}",
            r.name,
            format!("{}x{}", r.shape[0], r.shape[1]),
            100.0 * r.density,
            format!("{}/{}", r.train_rows, r.held_rows),
            r.error_before,
            r.error_after,
            r.reduction(),
            r.seconds
        ));
    }
    let n = rows.len().max(1) as f64;
    let mean = |f: fn(&LayerRow) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let (before, after) = (mean(|r| r.error_before), mean(|r| r.error_after));
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    out.line(&format!(
        "{:<width$}  {:>9}  {:>6}  {:>7}  {before:>8.5}  {after:>8.5}  {:>8.1}%  {total:>6.2}s",
        "mean",
        "",
        "",
        "",
        100.0 * (1.0 - after / before.max(f64::MIN_POSITIVE))
    ));
    if let Some((v, _)) = model {
        let on = match a.eval_text.is_empty() {
            true => "the held-out calibration sequences".to_string(),
            false => files(&a.eval_text),
        };
        let (b, f) = (&v.before, &v.after);
        let rb = b.reference.as_ref().expect("judged against the teacher");
        let rf = f.reference.as_ref().expect("judged against the teacher");
        out.line("");
        out.line(&format!(
            "model on {} tokens of {on}: teacher perplexity {:.4}",
            b.tokens, rb.perplexity
        ));
        out.line(&format!(
            "  student as given:   perplexity {:.4}, KL(teacher ‖ student) {:.5} nats/token, top-1 agreement {:.1}%",
            b.perplexity, rb.kl_mean, 100.0 * rb.top1_agreement
        ));
        out.line(&format!(
            "  student distilled:  perplexity {:.4}, KL(teacher ‖ student) {:.5} nats/token, top-1 agreement {:.1}%",
            f.perplexity, rf.kl_mean, 100.0 * rf.top1_agreement
        ));
    }
    match model {
        Some((v, _)) if !v.written => out.line(&format!(
            "nothing written: the distilled student is worse by --judge {}",
            format!("{:?}", a.judge).to_lowercase()
        )),
        _ => out.line(&format!("wrote {}", a.output.display())),
    }
    write_json(
        a,
        rows,
        (&format, rates(a, scheme)),
        (before, after, total),
        model,
    )
}

/// The learning rate used: a fixed one, or (block mode without --lr) the
/// factor of each block's weight RMS.
fn rates(a: &DistillLayersArgs, scheme: Option<&ReadScheme>) -> (Option<f32>, Option<f32>) {
    use super::layers::{default_lr, lr_from_weights, lr_scale, BLOCK_LR_PER_RMS};
    match lr_from_weights(a) {
        true => (None, Some(BLOCK_LR_PER_RMS * lr_scale(scheme))),
        false => (Some(a.lr.unwrap_or(default_lr(a, scheme))), None),
    }
}

/// The student's format in words.
fn describe_format(scheme: Option<&ReadScheme>) -> String {
    use shears_core::formats::compressed_tensors::FloatRead;
    match scheme {
        Some(rs) if rs.float.is_some() => match rs.float.expect("checked") {
            FloatRead::Fp8 { block: None } => "compressed-tensors, FP8 E4M3 per channel".into(),
            FloatRead::Fp8 { block: Some(b) } => {
                format!("compressed-tensors, FP8 E4M3 in {b}x{b} blocks")
            }
            FloatRead::Nvfp4 => "compressed-tensors, NVFP4 (E2M1, group 16)".into(),
            FloatRead::Mxfp4 => "compressed-tensors, MXFP4 (E2M1, group 32)".into(),
        },
        Some(rs) => format!(
            "compressed-tensors, int{} {}{}",
            rs.spec.bits,
            match rs.spec.group {
                Some(g) => format!("group {g}"),
                None => "per channel".into(),
            },
            if rs.spec.symmetric {
                ""
            } else {
                ", asymmetric"
            }
        ),
        None => "dense".into(),
    }
}

/// `--report FILE.json`: the run's settings, the means and every row.
fn write_json(
    a: &DistillLayersArgs,
    rows: &[LayerRow],
    (format, (lr, lr_per_rms)): (&str, (Option<f32>, Option<f32>)),
    (before, after, total): (f64, f64, f64),
    model: Option<(&Verdict, Source)>,
) -> Result<()> {
    if let Some(path) = &a.report {
        let scores = |s: &Scores| {
            let r = s.reference.as_ref();
            json!({
                "perplexity": s.perplexity,
                "mean_nll": s.mean_nll,
                "accuracy": s.accuracy,
                "kl_mean": r.map(|r| r.kl_mean),
                "kl_p99": r.map(|r| r.kl_p99),
                "top1_agreement": r.map(|r| r.top1_agreement),
            })
        };
        let model = model.map(|(v, source)| {
            json!({
                "mode": match source {
                    Source::Text(DistillMode::Sequential) => "sequential",
                    Source::Text(DistillMode::Block) => "block",
                    _ => "independent",
                },
                "calibration_text": a.calibration_text.calibration_text,
                "eval_text": a.eval_text,
                "eval_tokens": v.before.tokens,
                "teacher_perplexity": v.before.reference.as_ref().map(|r| r.perplexity),
                "before": scores(&v.before),
                "after": scores(&v.after),
                "judge": format!("{:?}", a.judge).to_lowercase(),
                "written": v.written,
            })
        });
        let doc = json!({
            "command": "distill layers",
            "teacher": a.teacher,
            "student": a.student,
            "output": a.output,
            "format": format,
            "calibration": a.calibration,
            "probe_rows": a.calibration.is_none().then_some(a.probe_rows),
            "held_out_fraction": a.held_out_fraction,
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            // null when each block's rate comes from its weights.
            "lr": lr,
            "lr_per_weight_rms": lr_per_rms,
            "seed": a.seed,
            "mean_error_before": before,
            "mean_error_after": after,
            "seconds": total,
            "patience": a.patience,
            "model": model,
            "layers": rows.iter().map(|r| {
                let mut v = serde_json::to_value(r).expect("JSON");
                v["reduction_percent"] = json!(r.reduction());
                v
            }).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).expect("JSON");
        std::fs::write(path, text + "\n").with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}
