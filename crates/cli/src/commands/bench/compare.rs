//! `shears bench --compare A.json B.json …`: saved runs side by side — one
//! row per kernel, one column per (run, target) — each rate with its ratio
//! to the first column's, and `--svg` draws the same as grouped bars.

use std::path::Path;

use anyhow::{Context, Result};

use super::BenchFile;
use crate::output::Out;

/// One column: a target of one saved run.
struct Column {
    label: String,
    /// Rate by "family/kernel" (None: failed or not measured).
    rates: Vec<Option<f64>>,
}

pub fn run(files: &[std::path::PathBuf], svg: Option<&Path>, out: &mut Out) -> Result<()> {
    let runs: Vec<(String, BenchFile)> = files
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let f: BenchFile = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a `shears bench --json` file", p.display()))?;
            let stem = p
                .file_stem()
                .map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into());
            Ok((stem, f))
        })
        .collect::<Result<_>>()?;
    // Kernels in first-seen order, with their units.
    let mut kernels: Vec<(String, String)> = Vec::new();
    for (_, f) in &runs {
        for m in &f.results {
            let k = format!("{}/{}", m.family, m.kernel);
            if !kernels.iter().any(|(n, _)| *n == k) {
                kernels.push((k, m.unit.clone()));
            }
        }
    }
    let mut columns = Vec::new();
    for (stem, f) in &runs {
        for t in &f.targets {
            let rates = kernels
                .iter()
                .map(|(k, _)| {
                    f.results
                        .iter()
                        .find(|m| m.target == t.name && format!("{}/{}", m.family, m.kernel) == *k)
                        .filter(|m| m.status == "ok")
                        .map(|m| m.rate)
                })
                .collect();
            columns.push(Column {
                label: format!("{stem}: {}", t.name),
                rates,
            });
        }
    }
    for (i, (stem, f)) in runs.iter().enumerate() {
        out.answer(&format!(
            "[{}] {stem}: shears {}, {}×{}, {} runs, {} ({} cores)",
            i + 1,
            f.shears,
            f.size,
            f.size,
            f.repeat,
            f.machine.cpu,
            f.machine.cores
        ));
    }
    for (j, c) in columns.iter().enumerate() {
        out.answer(&format!("  column {}: {}", j + 1, c.label));
    }
    let mut head = format!("{:<22} {:<8}", "kernel", "unit");
    for j in 0..columns.len() {
        head.push_str(&format!(" {:>18}", format!("column {}", j + 1)));
    }
    out.answer(&head);
    for (i, (k, unit)) in kernels.iter().enumerate() {
        let base = columns.first().and_then(|c| c.rates[i]);
        let mut line = format!("{k:<22} {unit:<8}");
        for c in &columns {
            let cell = match (c.rates[i], base) {
                (Some(r), Some(b)) if b > 0.0 => format!("{r:.3} ({:.2}×)", r / b),
                (Some(r), _) => format!("{r:.3}"),
                (None, _) => "—".to_string(),
            };
            line.push_str(&format!(" {cell:>18}"));
        }
        out.answer(&line);
    }
    if let Some(path) = svg {
        let doc = draw(&kernels, &columns);
        super::write_whole(path, doc.as_bytes())?;
        out.line(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Grouped horizontal bars: per kernel, one bar per column, each scaled to
/// the largest rate of that kernel (units differ between families).
fn draw(kernels: &[(String, String)], columns: &[Column]) -> String {
    const COLORS: [&str; 6] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
    ];
    let (label_w, bar_w, bar_h, gap) = (190.0, 420.0, 14.0, 10.0);
    let group_h = columns.len() as f64 * bar_h + gap;
    let legend_h = columns.len() as f64 * 18.0 + 10.0;
    let height = legend_h + kernels.len() as f64 * group_h + 20.0;
    let width = label_w + bar_w + 170.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    for (j, c) in columns.iter().enumerate() {
        let y = 10.0 + j as f64 * 18.0;
        s.push_str(&format!(
            "<rect x=\"10\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"28\" y=\"{}\">{}</text>\n",
            COLORS[j % COLORS.len()],
            y + 10.0,
            escape(&c.label)
        ));
    }
    for (i, (k, unit)) in kernels.iter().enumerate() {
        let y0 = legend_h + i as f64 * group_h;
        let max = columns
            .iter()
            .filter_map(|c| c.rates[i])
            .fold(0.0f64, f64::max);
        s.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{}</text>\n",
            y0 + bar_h,
            escape(k)
        ));
        for (j, c) in columns.iter().enumerate() {
            let y = y0 + j as f64 * bar_h;
            let text = match c.rates[i] {
                Some(r) => {
                    let w = if max > 0.0 { bar_w * r / max } else { 0.0 };
                    s.push_str(&format!(
                        "<rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/>\n",
                        bar_h - 2.0,
                        COLORS[j % COLORS.len()]
                    ));
                    format!("{r:.3} {unit}")
                }
                None => "failed / not measured".to_string(),
            };
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\">{}</text>\n",
                label_w + bar_w + 6.0,
                y + bar_h - 4.0,
                escape(&text)
            ));
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
