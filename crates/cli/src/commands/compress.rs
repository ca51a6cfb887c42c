//! `shears compress MODEL -o OUT`: prune and quantize in one pass, from
//! flags or a recipe TOML. The recipe's fields:
//!
//! ```toml
//! include = ["*.mlp.*"]          # optional globs, as --include / --exclude
//! exclude = []
//!
//! [prune]                        # optional
//! pattern = "2:4"                # or: sparsity = 0.5, scope = "row" | "tensor" | "global"
//! method = "magnitude"           # magnitude | wanda | taylor | random | sparsegpt
//! calibration = "calib.safetensors"
//!
//! [quantize]
//! scheme = "w4a16"               # w8a16 | w4a16 | w4a16-asym | w8a8 | fp8 | …
//! group_size = 128               # or "auto": the largest power of two ≤ 128 dividing every layer
//! rounding = "nearest"           # nearest | compressed-tensors
//! method = "gptq"                # rtn (default) | gptq
//! actorder = "group"             # gptq: none | static | group
//! dampening = 0.01               # gptq / sparsegpt (also under [prune])
//! block_size = 128               # gptq / sparsegpt (also under [prune])
//! ```
//!
//! Flags given on the command line override the recipe.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shears_core::checkpoint::paths::read_bounded;

use crate::args::{
    pattern, sparsity, ActOrderArg, CompressArgs, FormatArg, GlobalArgs, GroupSize, HessianArgs,
    MethodArg, QuantMethodArg, RoundingArg, SchemeArg, ScopeArg,
};
use crate::engine::config::{HessianConfig, PruneConfig, PruneFlags, QuantConfig};
use crate::engine::{self, RunConfig};
use crate::output::Out;

/// Largest recipe file read (a recipe is a few lines).
const RECIPE_LIMIT: u64 = 1 << 20;

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
    method: Option<MethodArg>,
    scope: Option<ScopeArg>,
    pattern: Option<String>,
    calibration: Option<PathBuf>,
    dampening: Option<f64>,
    block_size: Option<usize>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantRecipe {
    scheme: Option<SchemeArg>,
    group_size: Option<RecipeGroup>,
    rounding: Option<RoundingArg>,
    method: Option<QuantMethodArg>,
    actorder: Option<ActOrderArg>,
    dampening: Option<f64>,
    block_size: Option<usize>,
}

/// `group_size = 128` or `group_size = "auto"` in a recipe.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(untagged)]
enum RecipeGroup {
    Fixed(usize),
    Named(AutoWord),
}

/// The one word a recipe's group_size may be.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum AutoWord {
    Auto,
}

impl From<RecipeGroup> for GroupSize {
    fn from(g: RecipeGroup) -> GroupSize {
        match g {
            RecipeGroup::Fixed(n) => GroupSize::Fixed(n),
            RecipeGroup::Named(AutoWord::Auto) => GroupSize::Auto,
        }
    }
}

/// Reads and parses a recipe (bounded; one line on any error).
fn read_recipe(p: &std::path::Path) -> Result<Recipe> {
    let bytes = read_bounded(p, RECIPE_LIMIT)?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", p.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            p.display(),
            e.to_string().lines().collect::<Vec<_>>().join(" ")
        )
    })
}

/// The run `shears compress` asks for: the recipe's fields, each
/// overridden by its flag when given.
pub fn config(a: &CompressArgs) -> Result<RunConfig> {
    let has_text = !a.calibration_text.calibration_text.is_empty();
    let recipe = match &a.recipe {
        Some(p) => read_recipe(p)?,
        None => Recipe::default(),
    };
    let pr = recipe.prune.unwrap_or_default();
    let qr = recipe.quantize.unwrap_or_default();
    let bad = |field: &str, e: String| {
        anyhow::anyhow!(
            "{}: [prune] {field}: {e}",
            a.recipe
                .as_deref()
                .unwrap_or(std::path::Path::new("recipe"))
                .display()
        )
    };
    let recipe_pattern = pr
        .pattern
        .as_deref()
        .map(pattern)
        .transpose()
        .map_err(|e| bad("pattern", e))?;
    let recipe_sparsity = pr
        .sparsity
        .map(|s| sparsity(&s.to_string()))
        .transpose()
        .map_err(|e| bad("sparsity", e))?;
    let flags = PruneFlags {
        sparsity: a.sparsity.or(recipe_sparsity),
        method: a.method.or(pr.method),
        scope: a.scope.or(pr.scope),
        pattern: a.pattern.or(recipe_pattern),
        structured: None,
    };
    let calibration = a.calibration.clone().or(pr.calibration);
    let prunes = flags.pattern.is_some() || flags.sparsity.is_some();
    if !prunes && (flags.method.is_some() || flags.scope.is_some()) {
        bail!("--method and --scope need a pruning: give --sparsity or --pattern");
    }
    let scheme = a.scheme.or(qr.scheme).ok_or_else(|| {
        anyhow::anyhow!("no quantization scheme: give --scheme or [quantize] scheme in a recipe")
    })?;
    if !prunes {
        tracing::info!("no pruning asked for (no pattern or sparsity): quantizing only");
    }
    let prune = prunes
        .then(|| PruneConfig::new(flags, calibration.is_some() || has_text))
        .transpose()?;
    let quant = QuantConfig::new(
        scheme,
        a.group_size.or(qr.group_size.map(GroupSize::from)),
        a.rounding.or(qr.rounding).unwrap_or(RoundingArg::Nearest),
        FormatArg::CompressedTensors,
    )?;
    let mut cfg = RunConfig::new(&a.run, calibration, prune, Some(quant));
    let hessian = HessianArgs {
        dampening: a.hessian.dampening.or(qr.dampening).or(pr.dampening),
        block_size: a.hessian.block_size.or(qr.block_size).or(pr.block_size),
        actorder: a.hessian.actorder.or(qr.actorder),
        group_scales: a.hessian.group_scales,
        sequential: a.hessian.sequential,
    };
    let gptq = a.quant_method.or(qr.method) == Some(QuantMethodArg::Gptq);
    cfg.hessian = HessianConfig::new(&hessian, gptq, prune.as_ref(), Some(&quant))?;
    // The recipe's globs, unless given on the command line.
    if a.run.select.include.is_empty() {
        cfg.include = recipe.include;
    }
    if a.run.select.exclude.is_empty() {
        cfg.exclude = recipe.exclude;
    }
    Ok(cfg)
}

pub fn run(a: &CompressArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    engine::run_calibrated(config(a)?, &a.calibration_text, g, out)
}
