//! `shears prune MODEL -o OUT`: score, select, mask, write; report what it
//! cost. The arguments become a validated [`RunConfig`] that the engine
//! plans and runs.

use anyhow::Result;

use crate::args::{GlobalArgs, PruneArgs};
use crate::engine::config::{PruneConfig, PruneFlags};
use crate::engine::{self, RunConfig};
use crate::output::Out;

/// The run `shears prune` asks for.
pub fn config(a: &PruneArgs) -> Result<RunConfig> {
    let flags = PruneFlags {
        sparsity: a.sparsity,
        method: a.method,
        scope: a.scope,
        pattern: a.pattern,
        structured: a.structured,
    };
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
        prune: Some(PruneConfig::new(flags, a.calibration.is_some())?),
        quant: None,
    })
}

pub fn run(a: &PruneArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let cfg = RunConfig {
        sync: g.sync,
        ..config(a)?
    };
    engine::run(&cfg, g.backend, g.quiet, out)
}
