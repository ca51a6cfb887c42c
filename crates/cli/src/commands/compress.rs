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
//!
//! [gguf]                         # instead of [quantize]: one GGUF file
//! type = "Q4_K_M"                # as `quantize --type`
//! tokenizer = "tokenizer.json"   # optional
//! ```
//!
//! Flags given on the command line override the recipe.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shears_core::checkpoint::paths::read_bounded;

use shears_core::formats::gguf::mix::Target;

use super::gguf::GgufJob;
use crate::args::{
    gguf_type, pattern, sparsity, ActOrderArg, CompressArgs, FormatArg, GlobalArgs, GroupSize,
    HessianArgs, MethodArg, QuantMethodArg, RoundingArg, SchemeArg, ScopeArg,
};
use crate::engine::config::{HessianConfig, Mode, PruneConfig, PruneFlags, QuantConfig, Scope};
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
    gguf: Option<GgufRecipe>,
}

/// `[gguf]`: the file llama.cpp loads, its blocks the quantization.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GgufRecipe {
    #[serde(rename = "type")]
    ty: Option<String>,
    tokenizer: Option<PathBuf>,
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

/// The recipe `--recipe` names (an empty one without).
fn recipe_of(a: &CompressArgs) -> Result<Recipe> {
    match &a.recipe {
        Some(p) => read_recipe(p),
        None => Ok(Recipe::default()),
    }
}

/// The recipe's name, for its errors.
fn recipe_name(a: &CompressArgs) -> String {
    a.recipe
        .as_deref()
        .unwrap_or(std::path::Path::new("recipe"))
        .display()
        .to_string()
}

/// The pruning the flags and `[prune]` ask for, if any.
fn prune_config(a: &CompressArgs, pr: &PruneRecipe) -> Result<Option<PruneConfig>> {
    let has_text = !a.calibration_text.calibration_text.is_empty();
    let bad = |field: &str, e: String| anyhow::anyhow!("{}: [prune] {field}: {e}", recipe_name(a));
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
    let calibrated = a.calibration.is_some() || pr.calibration.is_some() || has_text;
    let prunes = flags.pattern.is_some() || flags.sparsity.is_some();
    if !prunes && (flags.method.is_some() || flags.scope.is_some()) {
        bail!("--method and --scope need a pruning: give --sparsity or --pattern");
    }
    prunes
        .then(|| PruneConfig::new(flags, calibrated))
        .transpose()
}

/// The run `shears compress` asks for: `recipe`'s fields, each overridden
/// by its flag when given.
fn config(a: &CompressArgs, recipe: Recipe) -> Result<RunConfig> {
    let pr = recipe.prune.unwrap_or_default();
    let qr = recipe.quantize.unwrap_or_default();
    let prune = prune_config(a, &pr)?;
    let calibration = a.calibration.clone().or(pr.calibration);
    let scheme = a.scheme.or(qr.scheme).ok_or_else(|| {
        anyhow::anyhow!(
            "no quantization: give --scheme or [quantize] scheme in a recipe (or --type / \
             [gguf] type for a GGUF file)"
        )
    })?;
    if prune.is_none() {
        tracing::info!("no pruning asked for (no pattern or sparsity): quantizing only");
    }
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

/// `--type` or `[gguf] type`: a GGUF file, pruned first when asked.
fn gguf(
    a: &CompressArgs,
    recipe: Recipe,
    target: Target,
    g: &GlobalArgs,
    out: &mut Out,
) -> Result<()> {
    let name = recipe_name(a);
    let quant_flags = a.scheme.is_some()
        || a.group_size.is_some()
        || a.rounding.is_some()
        || a.quant_method.is_some();
    if quant_flags || recipe.quantize.is_some() {
        bail!(
            "{name}: GGUF output (--type or [gguf]) quantizes with its own block types: drop \
             [quantize] and --scheme/--group-size/--rounding/--quant-method"
        );
    }
    if a.run.checks.validate || a.run.checks.verify {
        bail!("--validate/--verify are not available with GGUF output");
    }
    let pr = recipe.prune.unwrap_or_default();
    let h = &a.hessian;
    let hessian_flags = h.dampening.is_some()
        || h.block_size.is_some()
        || h.actorder.is_some()
        || h.group_scales.is_some()
        || h.sequential.is_some()
        || pr.dampening.is_some()
        || pr.block_size.is_some();
    if hessian_flags {
        bail!(
            "{name}: --dampening/--block-size/--actorder/--group-scales/--sequential are GPTQ's \
             and SparseGPT's, which GGUF output does not run"
        );
    }
    let prune = prune_config(a, &pr)?;
    if let Some(p) = &prune {
        if p.sparsegpt {
            bail!("--method sparsegpt is not available with GGUF output (its weight updates need XᵀX per layer); prune with `shears prune` first");
        }
        if matches!(
            p.mode,
            Mode::Unstructured {
                scope: Scope::Global,
                ..
            }
        ) {
            bail!("--scope global is not available with GGUF output; use row or tensor");
        }
    }
    let mut run = a.run.clone();
    if run.select.include.is_empty() {
        run.select.include = recipe.include;
    }
    if run.select.exclude.is_empty() {
        run.select.exclude = recipe.exclude;
    }
    let selects = !run.select.include.is_empty() || !run.select.exclude.is_empty();
    if prune.is_none() && selects {
        bail!("--include/--exclude choose what is pruned; GGUF output writes every tensor");
    }
    let tokenizer = a
        .tokenizer
        .clone()
        .or(recipe.gguf.and_then(|r| r.tokenizer));
    let calibration = a.calibration.clone().or(pr.calibration);
    let job = GgufJob {
        run: &run,
        target,
        tokenizer: tokenizer.as_deref(),
        calibration: calibration.as_deref(),
        calibration_text: &a.calibration_text,
        prune,
    };
    super::gguf::export(&job, g, out)
}

pub fn run(a: &CompressArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let recipe = recipe_of(a)?;
    let recipe_type = match recipe.gguf.as_ref().and_then(|r| r.ty.as_deref()) {
        Some(t) => Some(
            gguf_type(t).map_err(|e| anyhow::anyhow!("{}: [gguf] type: {e}", recipe_name(a)))?,
        ),
        None => None,
    };
    if recipe.gguf.is_some() && recipe_type.is_none() && a.gguf_type.is_none() {
        bail!(
            "{}: [gguf] needs type (e.g. type = \"Q4_K_M\")",
            recipe_name(a)
        );
    }
    if let Some(target) = a.gguf_type.or(recipe_type) {
        return gguf(a, recipe, target, g, out);
    }
    if a.tokenizer.is_some() {
        bail!("--tokenizer is for GGUF output (--type)");
    }
    engine::run_calibrated(config(a, recipe)?, &a.calibration_text, g, out)
}
