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
    Ok(RunConfig {
        model: a.model.clone(),
        output: a.output.clone(),
        force: a.force,
        include: a.select.include.clone(),
        exclude: a.select.exclude.clone(),
        non_finite: a.select.non_finite,
        checks: a.checks.clone(),
        calibration: a.calibration.clone(),
        seed: a.seed,
        report: a.report.clone(),
        json: a.json,
        dry_run: a.dry_run,
        sync: false,
        prune: None,
        quant: Some(QuantConfig::new(
            a.scheme,
            a.group_size,
            a.rounding,
            a.format,
        )?),
    })
}

pub fn run(a: &QuantizeArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let cfg = RunConfig {
        sync: g.sync,
        ..config(a)?
    };
    engine::run(&cfg, g.backend, g.quiet, out)
}
