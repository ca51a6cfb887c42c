//! `shears quantize MODEL -o OUT --scheme S`: int8 / int4 weights in the
//! compressed-tensors format (or dense dequantized safetensors), with a
//! report of what each layer lost. The arguments become a validated
//! [`RunConfig`] that the engine plans and runs; codes come from the
//! backend's quant family, equal to the reference on every backend.

use anyhow::Result;

use crate::args::{GlobalArgs, QuantizeArgs};
use crate::engine::config::QuantConfig;
use crate::engine::{self, RunConfig};
use crate::output::Out;

/// The run `shears quantize` asks for.
pub fn config(a: &QuantizeArgs) -> Result<RunConfig> {
    let quant = QuantConfig::new(a.scheme, a.group_size, a.rounding, a.format)?;
    Ok(RunConfig::new(
        &a.run,
        a.calibration.clone(),
        None,
        Some(quant),
    ))
}

pub fn run(a: &QuantizeArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    engine::run(&config(a)?, g, out)
}
