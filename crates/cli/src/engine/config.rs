//! One validated configuration per run, built once from typed arguments
//! (and a recipe for `compress`): what to prune, what to quantize, which
//! checks to run, where to write. Every usage error is found here, before
//! the checkpoint is read.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shears_core::formats::compressed_tensors::Scheme;
use shears_core::reference::quant::{QuantSpec, Rounding};
use shears_core::reference::score::Method;

use shears_core::reference::hessian::{ActOrder, GroupScales};

use crate::args::{
    ActOrderArg, Axis, CheckArgs, FormatArg, GroupScalesArg, GroupSize, HessianArgs, MethodArg,
    NonFinitePolicy, Pattern, RoundingArg, RunArgs, SchemeArg, ScopeArg,
};

/// Where an unstructured sparsity applies.
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
    /// The fraction of weights this mode prunes.
    pub fn target(&self) -> f64 {
        match *self {
            Mode::Unstructured { sparsity, .. }
            | Mode::Rows { sparsity }
            | Mode::Cols { sparsity } => sparsity,
            Mode::Pattern { n, m } => (m - n) as f64 / m as f64,
        }
    }
}

/// The pruning of a run.
#[derive(Debug, Clone, Copy)]
pub struct PruneConfig {
    pub mode: Mode,
    /// The scores of the mask; under SparseGPT, magnitude's (the baseline
    /// its report compares with).
    pub method: Method,
    /// SparseGPT chooses the mask and updates the kept weights.
    pub sparsegpt: bool,
}

/// The pruning flags as given (`None`: not given, on the command line or
/// in a recipe).
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneFlags {
    pub sparsity: Option<f64>,
    pub method: Option<MethodArg>,
    pub scope: Option<ScopeArg>,
    pub pattern: Option<Pattern>,
    pub structured: Option<Axis>,
}

impl PruneConfig {
    /// Validates the flags: a flag that conflicts with another is refused
    /// whenever it was given, whatever its value.
    pub fn new(f: PruneFlags, has_calibration: bool) -> Result<Self> {
        let sparsegpt = f.method == Some(MethodArg::Sparsegpt);
        let method = match f.method.unwrap_or(MethodArg::Magnitude) {
            MethodArg::Magnitude | MethodArg::Sparsegpt => Method::Magnitude,
            MethodArg::Wanda => Method::Wanda,
            MethodArg::Taylor => Method::Taylor,
            MethodArg::Random => Method::Random,
        };
        if sparsegpt && (f.structured.is_some() || f.scope.is_some()) {
            bail!(
                "--method sparsegpt prunes each block of columns (or N:M groups) as a whole; \
                 drop --structured and --scope"
            );
        }
        if sparsegpt && !has_calibration {
            bail!(
                "--method sparsegpt needs XᵀX: --calibration FILE from `shears calibrate --gram`, \
                 or --calibration-text"
            );
        }
        let sparsity = f.sparsity.unwrap_or(0.5);
        let mode = match (f.pattern, f.structured) {
            (Some(_), Some(_)) => bail!("--pattern and --structured cannot be combined"),
            (Some(p), None) => {
                if f.scope.is_some() {
                    bail!("--pattern applies to every group of M weights; drop --scope");
                }
                if f.sparsity.is_some() {
                    bail!("--pattern sets the sparsity; drop --sparsity");
                }
                Mode::Pattern { n: p.n, m: p.m }
            }
            (None, Some(axis)) => {
                if f.scope.is_some() {
                    bail!("--structured prunes whole rows or columns per tensor; drop --scope");
                }
                if method != Method::Magnitude {
                    bail!("--structured ranks rows and columns by L2 norm; drop --method");
                }
                match axis {
                    Axis::Rows => Mode::Rows { sparsity },
                    Axis::Cols => Mode::Cols { sparsity },
                }
            }
            (None, None) => {
                let scope = match f.scope {
                    None if method == Method::Wanda => Scope::Row,
                    None => Scope::Tensor,
                    Some(ScopeArg::Row) => Scope::Row,
                    Some(ScopeArg::Tensor) => Scope::Tensor,
                    Some(ScopeArg::Global) => Scope::Global,
                };
                Mode::Unstructured { sparsity, scope }
            }
        };
        if matches!(method, Method::Wanda | Method::Taylor) && !has_calibration {
            bail!("--method {} needs --calibration FILE", method.name());
        }
        Ok(PruneConfig {
            mode,
            method,
            sparsegpt,
        })
    }

    /// The method's name as the CLI spells it.
    pub fn method_name(&self) -> &'static str {
        if self.sparsegpt {
            "sparsegpt"
        } else {
            self.method.name()
        }
    }

    /// "prune 50.0% per tensor (magnitude)", for plans and reports.
    pub fn describe(&self) -> String {
        if self.sparsegpt {
            return match self.mode {
                Mode::Pattern { n, m } => format!("prune {n}:{m} (sparsegpt)"),
                m => format!("prune {:.1}% per block (sparsegpt)", 100.0 * m.target()),
            };
        }
        match self.mode {
            Mode::Unstructured { sparsity, scope } => format!(
                "prune {:.1}% per {} ({})",
                100.0 * sparsity,
                match scope {
                    Scope::Row => "row",
                    Scope::Tensor => "tensor",
                    Scope::Global => "checkpoint (global)",
                },
                self.method.name()
            ),
            Mode::Pattern { n, m } => format!("prune {n}:{m} ({})", self.method.name()),
            Mode::Rows { sparsity } => format!("prune {:.1}% of rows (L2 norm)", 100.0 * sparsity),
            Mode::Cols { sparsity } => {
                format!("prune {:.1}% of columns (L2 norm)", 100.0 * sparsity)
            }
        }
    }
}

/// The output format of a quantized run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Packed codes, scales (and zero points) + `quantization_config`.
    CompressedTensors,
    /// Dequantized values in the input's dtype and names.
    Dense,
}

/// The quantization of a run.
#[derive(Debug, Clone, Copy)]
pub struct QuantConfig {
    pub scheme: Scheme,
    pub spec: QuantSpec,
    /// `--group-size auto`: `spec.group` is lowered, when the plan is made,
    /// to the largest power of two that divides every selected layer.
    pub auto_group: bool,
    pub rounding: Rounding,
    pub format: Format,
}

impl QuantConfig {
    /// Validates the flags.
    pub fn new(
        scheme: SchemeArg,
        group_size: Option<GroupSize>,
        rounding: RoundingArg,
        format: FormatArg,
    ) -> Result<Self> {
        let scheme = match scheme {
            SchemeArg::W8a16 => Scheme::W8A16,
            SchemeArg::W4a16 => Scheme::W4A16,
            SchemeArg::W4a16Asym => Scheme::W4A16Asym,
            SchemeArg::W8a8 => Scheme::W8A8,
            SchemeArg::Fp8 => Scheme::Fp8,
            SchemeArg::Fp8Block => Scheme::Fp8Block,
            SchemeArg::Nvfp4a16 => Scheme::Nvfp4A16,
            SchemeArg::Mxfp4a16 => Scheme::Mxfp4A16,
        };
        if group_size.is_some()
            && (matches!(scheme, Scheme::W8A16 | Scheme::W8A8) || scheme.is_float())
        {
            bail!(
                "--group-size applies to the int4 schemes; {} has its own scales",
                scheme.name()
            );
        }
        let (fixed, auto_group) = match group_size {
            Some(GroupSize::Fixed(g)) => (Some(g), false),
            Some(GroupSize::Auto) => (None, true),
            None => (None, false),
        };
        Ok(QuantConfig {
            scheme,
            spec: scheme.spec(fixed),
            auto_group,
            rounding: match rounding {
                RoundingArg::Nearest => Rounding::Nearest,
                RoundingArg::CompressedTensors => Rounding::CompressedTensors,
            },
            format: match format {
                FormatArg::CompressedTensors => Format::CompressedTensors,
                FormatArg::Dense => Format::Dense,
                FormatArg::Gguf => bail!(
                    "--format gguf takes a GGUF --type (Q8_0, Q4_0, F16, BF16, F32), not --scheme"
                ),
            },
        })
    }

    /// "quantize w4a16 (4 bits, groups of 128)", for plans.
    pub fn describe(&self) -> String {
        match self.spec.group {
            Some(g) => format!(
                "quantize {} ({} bits, groups of {g})",
                self.scheme.name(),
                self.spec.bits
            ),
            None => format!(
                "quantize {} ({} bits per channel)",
                self.scheme.name(),
                self.spec.bits
            ),
        }
    }
}

/// GPTQ and SparseGPT: what the Hessian sweep does and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HessianConfig {
    /// Quantize in the sweep (GPTQ), not by rounding to nearest.
    pub gptq: bool,
    /// Prune in the sweep (SparseGPT).
    pub sparsegpt: bool,
    pub dampening: f64,
    pub block: usize,
    pub actorder: ActOrder,
    /// When GPTQ computes group scales.
    pub scales: GroupScales,
    /// --calibration-text calibrates layer by layer on the compressed
    /// layers' outputs.
    pub sequential: bool,
}

/// GPTQ's and SparseGPT's defaults (llm-compressor's).
pub const DAMPENING: f64 = 0.01;
pub const BLOCK: usize = 128;

impl HessianConfig {
    /// The sweep a run asks for, or `None` when it uses neither method (its
    /// settings then refused).
    pub fn new(
        a: &HessianArgs,
        gptq: bool,
        prune: Option<&PruneConfig>,
        quant: Option<&QuantConfig>,
    ) -> Result<Option<Self>> {
        let sparsegpt = prune.is_some_and(|p| p.sparsegpt);
        if !gptq && !sparsegpt {
            if a.dampening.is_some()
                || a.block_size.is_some()
                || a.actorder.is_some()
                || a.group_scales.is_some()
            {
                bail!(
                    "--dampening, --block-size, --actorder and --group-scales apply to gptq and \
                     sparsegpt"
                );
            }
            return Ok(None);
        }
        if let Some(q) = quant.filter(|q| gptq && q.scheme.is_float()) {
            bail!(
                "gptq quantizes to the integer schemes; {} is rounded to nearest (drop gptq)",
                q.scheme.name()
            );
        }
        let actorder = match a.actorder.unwrap_or(ActOrderArg::None) {
            ActOrderArg::None => ActOrder::None,
            ActOrderArg::Static => ActOrder::Static,
            ActOrderArg::Group => ActOrder::Group,
        };
        if actorder != ActOrder::None && !gptq {
            bail!("--actorder is GPTQ's; SparseGPT prunes in stored order");
        }
        if actorder != ActOrder::None && sparsegpt {
            bail!(
                "--actorder cannot be combined with --method sparsegpt (it prunes in stored order)"
            );
        }
        if actorder == ActOrder::Group
            && quant.is_some_and(|q| q.spec.group.is_none() && !q.auto_group)
        {
            bail!("--actorder group needs group scales (w4a16); use --actorder static");
        }
        let block = a.block_size.unwrap_or(BLOCK);
        if let Some(Mode::Pattern { m, .. }) = prune.map(|p| p.mode).filter(|_| sparsegpt) {
            if !block.is_multiple_of(m) {
                bail!("--block-size {block} is not a multiple of the pattern's M = {m}");
            }
        }
        Ok(Some(HessianConfig {
            gptq,
            sparsegpt,
            dampening: a.dampening.unwrap_or(DAMPENING),
            block,
            actorder,
            scales: match a.group_scales.unwrap_or(GroupScalesArg::Upfront) {
                GroupScalesArg::Upfront => GroupScales::Upfront,
                GroupScalesArg::AsReached => GroupScales::AsReached,
            },
            sequential: a.sequential.unwrap_or(true),
        }))
    }
}

/// Everything one run of prune / quantize / compress needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub model: PathBuf,
    pub output: PathBuf,
    pub force: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub non_finite: NonFinitePolicy,
    pub checks: CheckArgs,
    pub calibration: Option<PathBuf>,
    pub seed: u64,
    pub report: Option<PathBuf>,
    /// The report as JSON on stdout instead of the table.
    pub json: bool,
    pub dry_run: bool,
    /// Flush each shard to disk before the output appears (`--sync`).
    pub sync: bool,
    pub prune: Option<PruneConfig>,
    pub quant: Option<QuantConfig>,
    /// GPTQ / SparseGPT, when asked.
    pub hessian: Option<HessianConfig>,
}

impl RunConfig {
    /// The run the shared flags describe, with its calibration file, its
    /// pruning and its quantization.
    pub fn new(
        a: &RunArgs,
        calibration: Option<PathBuf>,
        prune: Option<PruneConfig>,
        quant: Option<QuantConfig>,
    ) -> Self {
        RunConfig {
            model: a.model.clone(),
            output: a.output.clone(),
            force: a.force,
            include: a.select.include.clone(),
            exclude: a.select.exclude.clone(),
            non_finite: a.select.non_finite,
            checks: a.checks.clone(),
            calibration,
            seed: a.seed,
            report: a.report.clone(),
            json: a.json,
            dry_run: a.dry_run,
            sync: false,
            prune,
            quant,
            hessian: None,
        }
    }
}
