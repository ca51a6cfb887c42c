//! Typed values of flags and recipe fields: the enums clap parses
//! (`ValueEnum`, and serde for recipes) and the value parsers of numbers
//! and patterns, so no command compares strings.

use clap::ValueEnum;

/// What `--non-finite` does with a tensor holding NaN or ±inf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum NonFinitePolicy {
    /// Refuse the run, naming the tensor.
    #[default]
    Error,
    /// Leave the tensor unchanged (not pruned, not quantized).
    Keep,
}

/// How weights are scored (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodArg {
    Magnitude,
    Wanda,
    Taylor,
    Random,
    /// SparseGPT: the mask chosen per block from w²/[H⁻¹]_jj² and the kept
    /// weights updated to make up for the pruned ones (needs XᵀX).
    Sparsegpt,
}

/// How weights are quantized (`quantize --method`, `compress --quant-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantMethodArg {
    /// Round to nearest.
    Rtn,
    /// GPTQ: columns quantized in turn, each one's error made up for by the
    /// columns after it through the inverse Hessian (needs XᵀX).
    Gptq,
}

/// Activation order of GPTQ (`--actorder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActOrderArg {
    None,
    Static,
    Group,
}

/// Where a sparsity applies (`--scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeArg {
    Row,
    Tensor,
    Global,
}

/// Which whole slices `--structured` prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Axis {
    Rows,
    #[value(alias = "columns")]
    Cols,
}

/// The quantization scheme (`--scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
pub enum SchemeArg {
    #[serde(rename = "w8a16")]
    W8a16,
    #[serde(rename = "w4a16")]
    W4a16,
    #[serde(rename = "w4a16-asym")]
    W4a16Asym,
    #[serde(rename = "w8a8")]
    W8a8,
    /// FP8 E4M3 weights, one scale per output channel.
    #[serde(rename = "fp8")]
    Fp8,
    /// FP8 E4M3 weights, one scale per 128×128 block.
    #[serde(rename = "fp8-block")]
    #[value(name = "fp8-block")]
    Fp8Block,
    /// FP4 E2M1 weights, an FP8 scale per 16 inputs, a global scale.
    #[serde(rename = "nvfp4a16")]
    #[value(name = "nvfp4a16")]
    Nvfp4a16,
    /// FP4 E2M1 weights, a power-of-two scale per 32 inputs.
    #[serde(rename = "mxfp4a16")]
    #[value(name = "mxfp4a16")]
    Mxfp4a16,
}

/// How quotients round to codes (`--rounding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundingArg {
    Nearest,
    CompressedTensors,
}

/// The output format of `quantize` (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    CompressedTensors,
    Dense,
    Gguf,
}

/// An N:M pattern: N kept of every M consecutive inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    pub n: usize,
    pub m: usize,
}

/// `2:4` → N:M with 0 < N < M ≤ 16 (clap value parser, recipes too).
pub fn pattern(s: &str) -> Result<Pattern, String> {
    let bad = || format!("'{s}' is not N:M with 0 < N < M ≤ 16 (for example 2:4)");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let n: usize = a.trim().parse().map_err(|_| bad())?;
    let m: usize = b.trim().parse().map_err(|_| bad())?;
    if n == 0 || n >= m || m > 16 {
        return Err(bad());
    }
    Ok(Pattern { n, m })
}

/// A fraction in [0, 1) (clap value parser, recipes too).
pub fn sparsity(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("{s} is outside [0, 1)"));
    }
    Ok(v)
}

/// `--group-size`: a number of inputs, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSize {
    Fixed(usize),
    /// The largest power of two up to the scheme's default that divides
    /// every selected layer.
    Auto,
}

/// `128` or `auto` (clap value parser).
pub fn group_size(s: &str) -> Result<GroupSize, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(GroupSize::Auto);
    }
    positive(s).map(GroupSize::Fixed)
}

/// A whole number of at least 1 (clap value parser).
pub(crate) fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(v) if v >= 1 && v <= usize::MAX as i128 => Ok(v as usize),
        Ok(_) => Err(format!("must be a whole number of at least 1, got {s}")),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// A finite fraction in [0, 1] (`--dampening`).
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be a number in [0, 1], got {s}")),
    }
}

/// When GPTQ computes group scales (`--group-scales`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupScalesArg {
    /// From the weight before the sweep, as llm-compressor 0.14 does.
    Upfront,
    /// As each group is reached, from its values updated by the sweep.
    AsReached,
}

/// A GGUF tensor type or K-quant mix (`--type`).
pub fn gguf_type(s: &str) -> Result<shears_core::formats::gguf::mix::Target, String> {
    use shears_core::formats::gguf::mix::Target;
    Target::parse(s).ok_or_else(|| {
        format!(
            "'{s}' is not a GGUF type shears writes ({})",
            Target::names().join(", ")
        )
    })
}
