//! `shears quantize MODEL -o OUT --scheme S`: int8 / int4 weights in the
//! compressed-tensors format (or dense dequantized safetensors), with a
//! report of what each layer lost. The arguments become a validated
//! [`RunConfig`] that the engine plans and runs; codes come from the
//! backend's quant family, equal to the reference on every backend.

use anyhow::Result;

use crate::args::{GlobalArgs, QuantMethodArg, QuantizeArgs};
use crate::engine::config::{HessianConfig, QuantConfig};
use crate::engine::{self, RunConfig};
use crate::output::Out;

/// The run `shears quantize` asks for.
pub fn config(a: &QuantizeArgs) -> Result<RunConfig> {
    let quant = QuantConfig::new(a.scheme, a.group_size, a.rounding, a.format)?;
    let mut cfg = RunConfig::new(&a.run, a.calibration.clone(), None, Some(quant));
    let gptq = a.method == QuantMethodArg::Gptq;
    cfg.hessian = HessianConfig::new(&a.hessian, gptq, None, Some(&quant))?;
    Ok(cfg)
}

pub fn run(a: &QuantizeArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    engine::run_calibrated(config(a)?, &a.calibration_text, g, out)
}
