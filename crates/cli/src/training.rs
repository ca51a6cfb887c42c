//! Training classifiers, shared by `shears train`, `shears distill model`
//! and `shears evaluate`: the validated training plan, the run on a
//! training backend, the epoch progress bar, the loss log, the metrics
//! table and JSON report.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use shears_core::train::{
    evaluate, stratified_split, train, Dataset, Device, Metrics, Mlp, TrainConfig, TrainLog,
};

use crate::args::{BackendChoice, FitArgs};
use crate::backend::Backend;
pub use crate::backend::OnDevice;
use crate::output::{thousands, Out};

/// Runs `job` on the training backend `choice` opens.
pub fn on_device<J: OnDevice>(choice: BackendChoice, job: J) -> Result<J::Output> {
    Backend::open(choice)?.train(job)
}

/// Validated training settings.
#[derive(Debug, Clone)]
pub struct FitPlan {
    pub cfg: TrainConfig,
    pub split_seed: u64,
    pub test_fraction: f64,
    pub log: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub force: bool,
    /// Files the run reads, which its output must never replace.
    pub inputs: Vec<PathBuf>,
}

impl FitPlan {
    /// Checks the flags; `temperature` and `alpha` are 1 for plain training.
    pub fn new(a: &FitArgs, temperature: f32, alpha: f32) -> Result<FitPlan> {
        if a.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if a.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if !(a.lr.is_finite() && a.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", a.lr);
        }
        check_fraction(a.test_fraction)?;
        if !(temperature.is_finite() && temperature > 0.0) {
            bail!("--temperature must be a positive number, got {temperature}");
        }
        if !(alpha.is_finite() && alpha >= 0.0) {
            bail!("--alpha must be a number ≥ 0, got {alpha}");
        }
        Ok(FitPlan {
            cfg: TrainConfig {
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                seed: a.seed,
                temperature,
                alpha,
            },
            split_seed: a.split_seed.unwrap_or(a.seed),
            test_fraction: a.test_fraction,
            log: a.log.clone(),
            report: a.report.clone(),
            force: a.force,
            inputs: Vec::new(),
        })
    }
}

/// --test-fraction must lie in [0, 1).
pub fn check_fraction(f: f64) -> Result<()> {
    if !(0.0..1.0).contains(&f) {
        bail!("--test-fraction must be in [0, 1), got {f}");
    }
    Ok(())
}

/// "256,128" → [256, 128].
pub fn parse_hidden(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("--hidden '{s}': widths are positive integers separated by commas"),
        })
        .collect()
}

/// The model to start from: `--init` (its shapes checked against the
/// data and any --hidden) or a seeded initialisation.
pub fn start_model(
    hidden: Option<&str>,
    init: Option<&Path>,
    inputs: usize,
    classes: usize,
    seed: u64,
) -> Result<Mlp> {
    let wanted = hidden.map(parse_hidden).transpose()?;
    let Some(path) = init else {
        let mut sizes = vec![inputs];
        sizes.extend(wanted.expect("clap requires --hidden without --init"));
        sizes.push(classes);
        return Ok(Mlp::new(&sizes, seed)?);
    };
    let m = Mlp::load(path)?;
    if m.inputs() != inputs || m.classes() != classes {
        bail!(
            "{}: takes {} inputs and has {} classes, but {inputs} and {classes} are needed",
            path.display(),
            m.inputs(),
            m.classes()
        );
    }
    if let Some(h) = wanted.filter(|h| *h != m.hidden()) {
        bail!(
            "{}: hidden layers {:?}, but --hidden asks for {h:?}",
            path.display(),
            m.hidden()
        );
    }
    Ok(m)
}

/// Fails early when the single-file output exists (without --force, or
/// when it is not an earlier output), is an input, or sits inside one.
pub fn check_output(path: &Path, plan: &FitPlan) -> Result<()> {
    shears_core::checkpoint::check_single_file(path, plan.force, &plan.inputs)?;
    Ok(())
}

/// A teacher for distillation: its model and where it came from.
pub struct Teacher<'a> {
    pub model: Mlp,
    pub path: &'a Path,
}

/// What one training run produced.
struct Outcome {
    model: Mlp,
    log: TrainLog,
    seconds: f64,
    train: Metrics,
    test: Option<Metrics>,
    teacher_test: Option<Metrics>,
}

/// Training on a backend: teacher logits (when distilling), the training
/// loop, then logits for the metrics.
struct FitJob<'a> {
    plan: &'a FitPlan,
    train_set: Dataset,
    test_set: Dataset,
    model: Mlp,
    teacher: Option<&'a Mlp>,
    quiet: bool,
}

impl OnDevice for FitJob<'_> {
    type Output = Outcome;

    fn run<D: Device>(self, dev: &D) -> Result<Outcome> {
        let FitJob {
            plan,
            train_set: tr,
            test_set: te,
            mut model,
            teacher,
            quiet,
        } = self;
        let start = Instant::now();
        let soft = match teacher {
            Some(t) => Some(t.logits(dev, &tr.features, tr.rows)?),
            None => None,
        };
        let mut bar = EpochBar::new(plan.cfg.epochs, quiet);
        let log = train(
            dev,
            &mut model,
            &tr.features,
            &tr.labels,
            soft.as_deref(),
            &plan.cfg,
            &mut |epoch, loss| bar.epoch(epoch, loss),
        )?;
        bar.finish();
        let seconds = start.elapsed().as_secs_f64();
        let score = |m: &Mlp, d: &Dataset| -> Result<Metrics> {
            Ok(evaluate(
                &m.logits(dev, &d.features, d.rows)?,
                &d.labels,
                d.classes,
            ))
        };
        let train = score(&model, &tr)?;
        let test = (te.rows > 0).then(|| score(&model, &te)).transpose()?;
        let teacher_test = match teacher {
            Some(t) if te.rows > 0 => Some(score(t, &te)?),
            _ => None,
        };
        Ok(Outcome {
            model,
            log,
            seconds,
            train,
            test,
            teacher_test,
        })
    }
}

/// Splits `data`, trains `model` (from `teacher` when given), writes the
/// model, the loss log and the report, and prints the metrics.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    plan: &FitPlan,
    data_path: &Path,
    data: &Dataset,
    model: Mlp,
    teacher: Option<&Teacher>,
    output: &Path,
    backend: BackendChoice,
    quiet: bool,
    out: &mut Out,
) -> Result<()> {
    let split = stratified_split(&data.labels, plan.test_fraction, plan.split_seed);
    if split.train.is_empty() {
        bail!("{}: no training rows", data_path.display());
    }
    let job = FitJob {
        plan,
        train_set: data.subset(&split.train),
        test_set: data.subset(&split.test),
        model,
        teacher: teacher.map(|t| &t.model),
        quiet,
    };
    let r = on_device(backend, job)?;
    r.model.save(output, plan.force, &plan.inputs)?;
    if let Some(path) = &plan.log {
        let mut csv = String::from("epoch,loss\n");
        for (i, l) in r.log.epoch_losses.iter().enumerate() {
            writeln!(csv, "{},{l}", i + 1).expect("string");
        }
        std::fs::write(path, csv).with_context(|| format!("{}", path.display()))?;
    }
    let run = FitRun {
        plan,
        data_path,
        data,
        teacher,
        output,
        r: &r,
        split: (split.train.len(), split.test.len()),
    };
    run.write_report()?;
    run.print(out);
    Ok(())
}

/// A finished fit, for its report and table.
struct FitRun<'a> {
    plan: &'a FitPlan,
    data_path: &'a Path,
    data: &'a Dataset,
    teacher: Option<&'a Teacher<'a>>,
    output: &'a Path,
    r: &'a Outcome,
    /// Train and test rows.
    split: (usize, usize),
}

impl FitRun<'_> {
    /// Layer widths, inputs first.
    fn sizes(&self) -> Vec<usize> {
        std::iter::once(self.r.model.inputs())
            .chain(self.r.model.layers.iter().map(|l| l.outputs))
            .collect()
    }

    fn final_loss(&self) -> f64 {
        self.r.log.epoch_losses.last().copied().unwrap_or(f64::NAN)
    }

    /// `--report FILE.json`.
    fn write_report(&self) -> Result<()> {
        let Some(path) = &self.plan.report else {
            return Ok(());
        };
        let (plan, r, teacher, cfg) = (self.plan, self.r, self.teacher, &self.plan.cfg);
        let doc = json!({
            "command": if teacher.is_some() { "distill model" } else { "train" },
            "model": self.output,
            "data": self.data_path,
            "teacher": teacher.map(|t| t.path),
            "sizes": self.sizes(),
            "parameters": r.model.parameters(),
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "split_seed": plan.split_seed,
            "test_fraction": plan.test_fraction,
            "temperature": teacher.map(|_| cfg.temperature),
            "alpha": teacher.map(|_| cfg.alpha),
            "train_rows": r.train.rows,
            "test_rows": r.test.as_ref().map_or(0, |m| m.rows),
            "classes": self.data.classes,
            "epoch_losses": r.log.epoch_losses,
            "final_loss": self.final_loss(),
            "seconds": r.seconds,
            "train_accuracy": r.train.accuracy,
            "test_accuracy": r.test.as_ref().map(|m| m.accuracy),
            "test_confusion": r.test.as_ref().map(|m| &m.confusion),
            "teacher_test_accuracy": r.teacher_test.as_ref().map(|m| m.accuracy),
        });
        let text = serde_json::to_string_pretty(&doc).expect("JSON");
        std::fs::write(path, text + "\n").with_context(|| format!("{}", path.display()))
    }

    /// The table on stdout.
    fn print(&self, out: &mut Out) {
        let (r, cfg) = (self.r, &self.plan.cfg);
        let shape: Vec<String> = self.sizes().iter().map(usize::to_string).collect();
        out.line(&format!(
            "model      {} ({}, {} parameters)",
            self.output.display(),
            shape.join("-"),
            thousands(r.model.parameters() as u64)
        ));
        out.line(&format!(
            "data       {}: {} train / {} test rows, {} classes (split seed {})",
            self.data_path.display(),
            self.split.0,
            self.split.1,
            self.data.classes,
            self.plan.split_seed
        ));
        let how = match self.teacher {
            Some(t) => format!(
                ", distilled from {} at T {} α {}",
                t.path.display(),
                cfg.temperature,
                cfg.alpha
            ),
            None => String::new(),
        };
        out.line(&format!(
            "training   {} epochs, batch {}, lr {}, seed {}{how}: {:.1} s",
            cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, r.seconds
        ));
        out.line(&format!("final loss {:.6}", self.final_loss()));
        out.line("");
        out.line("split    accuracy  correct");
        let mut row = |name: &str, m: &Metrics| {
            out.line(&format!(
                "{name:<8} {:>8.2}%  {}/{}",
                100.0 * m.accuracy,
                m.correct,
                m.rows
            ))
        };
        row("train", &r.train);
        if let Some(m) = &r.test {
            row("test", m);
        }
        if let Some(m) = &r.teacher_test {
            row("teacher", m);
        }
    }
}

/// The epoch progress bar with the last epoch's loss; like
/// [`crate::progress::Progress`] it appears only after a second, only on a
/// terminal, never with --quiet.
struct EpochBar {
    bar: ProgressBar,
    start: Instant,
    enabled: bool,
    shown: bool,
}

impl EpochBar {
    fn new(epochs: usize, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(epochs as u64), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("epoch {pos}/{len} [{bar:30}] {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        EpochBar {
            bar,
            start: Instant::now(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn epoch(&mut self, epoch: usize, loss: f64) {
        self.bar.set_message(format!("loss {loss:.5}"));
        self.bar.set_position(epoch as u64 + 1);
        tracing::debug!("epoch {}: loss {loss:.6}", epoch + 1);
        if self.enabled && !self.shown && self.start.elapsed() > Duration::from_secs(1) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}
