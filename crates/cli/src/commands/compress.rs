//! `shears compress MODEL -o OUT`: prune and quantize in one pass, from
//! flags or a recipe TOML. The recipe's fields:
//!
//! ```toml
//! include = ["*.mlp.*"]          # optional globs, as --include / --exclude
//! exclude = []
//!
//! [prune]                        # optional
//! pattern = "2:4"                # or: sparsity = 0.5, scope = "row" | "tensor"
//! method = "magnitude"           # magnitude | wanda | taylor | random
//! calibration = "calib.safetensors"
//!
//! [quantize]
//! scheme = "w4a16"               # w8a16 | w4a16 | w4a16-asym | w8a8
//! group_size = 128
//! rounding = "nearest"           # nearest | compressed-tensors
//! ```
//!
//! Flags given on the command line override the recipe.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shears_core::checkpoint::paths::read_bounded;

use crate::args::{BackendChoice, CheckArgs, CompressArgs, PruneArgs, QuantizeArgs, SelectArgs};
use crate::commands::quantize;
use crate::output::Out;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    prune: Option<PruneRecipe>,
    quantize: Option<QuantRecipe>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneRecipe {
    sparsity: Option<f64>,
    method: Option<String>,
    scope: Option<String>,
    pattern: Option<String>,
    calibration: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantRecipe {
    scheme: Option<String>,
    group_size: Option<usize>,
    rounding: Option<String>,
}

/// Largest recipe file read (a recipe is a few lines).
const RECIPE_LIMIT: u64 = 1 << 20;

pub fn run(a: &CompressArgs, choice: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let recipe: Recipe = match &a.recipe {
        Some(p) => {
            let bytes = read_bounded(p, RECIPE_LIMIT)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", p.display()))?;
            toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}",
                    p.display(),
                    e.to_string().lines().collect::<Vec<_>>().join(" ")
                )
            })?
        }
        None => Recipe::default(),
    };
    let pr = recipe.prune.unwrap_or_default();
    let qr = recipe.quantize.unwrap_or_default();
    let scheme = a.scheme.clone().or(qr.scheme).ok_or_else(|| {
        anyhow::anyhow!("no quantization scheme: give --scheme or [quantize] scheme in a recipe")
    })?;
    let include = if a.select.include.is_empty() {
        recipe.include
    } else {
        a.select.include.clone()
    };
    let exclude = if a.select.exclude.is_empty() {
        recipe.exclude
    } else {
        a.select.exclude.clone()
    };
    let pattern = a.pattern.clone().or(pr.pattern);
    let sparsity = a.sparsity.clone().or(pr.sparsity.map(|s| s.to_string()));
    if pattern.is_some() && sparsity.is_some() {
        bail!("--pattern sets the sparsity; drop --sparsity");
    }
    let prunes = pattern.is_some() || sparsity.is_some();
    let method = a
        .method
        .clone()
        .or(pr.method)
        .unwrap_or_else(|| "magnitude".into());
    let q = QuantizeArgs {
        model: a.model.clone(),
        output: a.output.clone(),
        scheme,
        group_size: a.group_size.or(qr.group_size),
        rounding: a
            .rounding
            .clone()
            .or(qr.rounding)
            .unwrap_or_else(|| "nearest".into()),
        format: "compressed-tensors".into(),
        calibration: a.calibration.clone().or(pr.calibration.clone()),
        checks: a.checks.clone(),
        seed: a.seed,
        report: a.report.clone(),
        dry_run: a.dry_run,
        select: SelectArgs {
            include: include.clone(),
            exclude: exclude.clone(),
            non_finite: a.select.non_finite,
        },
        force: a.force,
    };
    let p = PruneArgs {
        model: a.model.clone(),
        output: a.output.clone(),
        sparsity: sparsity.unwrap_or_else(|| "0.5".into()),
        method,
        scope: a.scope.clone().or(pr.scope),
        pattern,
        structured: None,
        calibration: a.calibration.clone().or(pr.calibration),
        checks: CheckArgs::default(),
        report: None,
        dry_run: a.dry_run,
        select: SelectArgs {
            include,
            exclude,
            non_finite: a.select.non_finite,
        },
        seed: a.seed,
        force: a.force,
    };
    if !prunes {
        tracing::info!("no pruning asked for (no pattern or sparsity): quantizing only");
    }
    quantize::run_with(&q, prunes.then_some(&p), choice, quiet, out)
}
