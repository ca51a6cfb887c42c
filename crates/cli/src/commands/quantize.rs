//! `shears quantize MODEL -o OUT --scheme S`: int8 / int4 weights in the
//! compressed-tensors format (or dense dequantized safetensors), with a
//! report of what each layer lost. The arguments become a validated
//! [`RunConfig`] that the engine plans and runs; codes come from the
//! backend's quant family, equal to the reference on every backend.

use anyhow::{bail, Result};

use crate::args::{FormatArg, GlobalArgs, QuantMethodArg, QuantizeArgs};
use crate::engine::config::{HessianConfig, QuantConfig};
use crate::engine::{self, RunConfig};
use crate::output::Out;

/// The run `shears quantize` asks for.
pub fn config(a: &QuantizeArgs) -> Result<RunConfig> {
    let Some(scheme) = a.scheme else {
        bail!("--scheme is needed (or --type for a GGUF file)");
    };
    if a.tokenizer.is_some() {
        bail!("--tokenizer is for GGUF output (--type)");
    }
    let quant = QuantConfig::new(scheme, a.group_size, a.rounding, a.format)?;
    let mut cfg = RunConfig::new(&a.run, a.calibration.clone(), None, Some(quant));
    let gptq = a.method == QuantMethodArg::Gptq;
    cfg.hessian = HessianConfig::new(&a.hessian, gptq, None, Some(&quant))?;
    Ok(cfg)
}

pub fn run(a: &QuantizeArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    if let Some(target) = a.gguf_type {
        return super::gguf::run(a, target, g, out);
    }
    if a.format == FormatArg::Gguf {
        bail!("--format gguf needs --type (Q8_0, Q4_0, F16, BF16 or F32)");
    }
    engine::run_calibrated(config(a)?, &a.calibration_text, g, out)
}
