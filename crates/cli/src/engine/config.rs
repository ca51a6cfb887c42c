//! One validated configuration per run, built once from typed arguments
//! (and a recipe for `compress`): what to prune, what to quantize, which
//! checks to run, where to write. Every usage error is found here, before
//! the checkpoint is read.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shears_core::formats::compressed_tensors::Scheme;
use shears_core::reference::quant::{QuantSpec, Rounding};
use shears_core::reference::score::Method;

use crate::args::{
    Axis, CheckArgs, FormatArg, GroupSize, MethodArg, NonFinitePolicy, Pattern, RoundingArg,
    RunArgs, SchemeArg, ScopeArg,
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
    pub method: Method,
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
        let method = match f.method.unwrap_or(MethodArg::Magnitude) {
            MethodArg::Magnitude => Method::Magnitude,
            MethodArg::Wanda => Method::Wanda,
            MethodArg::Taylor => Method::Taylor,
            MethodArg::Random => Method::Random,
        };
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
        Ok(PruneConfig { mode, method })
    }

    /// "prune 50.0% per tensor (magnitude)", for plans and reports.
    pub fn describe(&self) -> String {
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
        }
    }
}
