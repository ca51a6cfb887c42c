//! `shears evaluate --model M --data FILE`: accuracy and confusion matrix of
//! an MLP classifier on the test split (or the training split, or all
//! rows) of a CSV data set.

use anyhow::{bail, Context, Result};
use serde_json::json;
use shears_core::train::{evaluate, stratified_split, Dataset, Device, Metrics, Mlp};

use crate::args::{BackendChoice, EvaluateArgs, SplitChoice};
use crate::output::Out;
use crate::training::{check_fraction, on_device, OnDevice};

/// Logits of a model on a data set, on a training backend.
struct Score<'a> {
    model: &'a Mlp,
    data: &'a Dataset,
}

impl OnDevice for Score<'_> {
    type Output = Metrics;

    fn run<D: Device>(self, dev: &D) -> Result<Metrics> {
        let d = self.data;
        let logits = self.model.logits(dev, &d.features, d.rows)?;
        Ok(evaluate(&logits, &d.labels, self.model.classes()))
    }
}

pub fn run(a: &EvaluateArgs, backend: BackendChoice, out: &mut Out) -> Result<()> {
    check_fraction(a.test_fraction)?;
    let model = Mlp::load(&a.model)?;
    let data = Dataset::load(&a.data)?;
    if model.inputs() != data.cols {
        bail!(
            "{}: the model takes {} inputs but {} has {} feature columns",
            a.model.display(),
            model.inputs(),
            a.data.display(),
            data.cols
        );
    }
    if model.classes() != data.classes {
        bail!(
            "{}: the model has {} classes but {} has {} (labels 0..{})",
            a.model.display(),
            model.classes(),
            a.data.display(),
            data.classes,
            data.classes - 1
        );
    }
    let split = stratified_split(&data.labels, a.test_fraction, a.seed);
    let (name, rows) = match a.split {
        SplitChoice::Test => ("test", split.test),
        SplitChoice::Train => ("train", split.train),
        SplitChoice::All => ("all", (0..data.rows).collect()),
    };
    if rows.is_empty() {
        bail!(
            "{}: the {name} split is empty (test fraction {})",
            a.data.display(),
            a.test_fraction
        );
    }
    let subset = data.subset(&rows);
    let m = on_device(
        backend,
        Score {
            model: &model,
            data: &subset,
        },
    )?;

    let doc = json!({
            "model": a.model,
            "data": a.data,
            "split": name,
            "seed": a.seed,
            "test_fraction": a.test_fraction,
            "rows": m.rows,
            "correct": m.correct,
            "accuracy": m.accuracy,
            "confusion": m.confusion,
    });
    let text = serde_json::to_string_pretty(&doc).expect("JSON");
    if let Some(path) = &a.report {
        std::fs::write(path, text.clone() + "\n").with_context(|| format!("{}", path.display()))?;
    }
    if a.json {
        out.answer(&text);
        return Ok(());
    }
    out.answer(&format!(
        "accuracy {:.2}% ({}/{}) on the {name} split of {} (seed {}, test fraction {})",
        100.0 * m.accuracy,
        m.correct,
        m.rows,
        a.data.display(),
        a.seed,
        a.test_fraction
    ));
    out.answer("");
    for line in confusion_table(&m.confusion) {
        out.answer(&line);
    }
    Ok(())
}

/// The confusion matrix as text: one row per actual class, one column per
/// predicted class, with each class's recall.
fn confusion_table(c: &[Vec<u64>]) -> Vec<String> {
    let width = c
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(c.len().to_string().len())
        .max(3);
    let mut lines = Vec::with_capacity(c.len() + 1);
    let mut head = format!("{:>12}", "actual\\pred");
    for j in 0..c.len() {
        head += &format!(" {j:>width$}");
    }
    head += "  recall";
    lines.push(head);
    for (i, row) in c.iter().enumerate() {
        let mut line = format!("{i:>12}");
        for v in row {
            line += &format!(" {v:>width$}");
        }
        let total: u64 = row.iter().sum();
        if total > 0 {
            line += &format!("  {:>5.1}%", 100.0 * row[i] as f64 / total as f64);
        } else {
            line += "       -";
        }
        lines.push(line);
    }
    lines
}
