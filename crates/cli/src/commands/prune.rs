//! `shears prune MODEL -o OUT`: score, select, mask, write; report what it
//! cost. The arguments become a validated [`RunConfig`] that the engine
//! plans and runs.

use std::path::PathBuf;

use anyhow::Result;

use crate::args::{GlobalArgs, PruneArgs};
use crate::engine::config::{PruneConfig, PruneFlags};
use crate::engine::{self, RunConfig};
use crate::lm::in_process;
use crate::output::Out;

/// The run `shears prune` asks for, reading `calibration` (--calibration
/// or the in-process file of --calibration-text).
pub fn config(a: &PruneArgs, calibration: Option<PathBuf>) -> Result<RunConfig> {
    let flags = PruneFlags {
        sparsity: a.sparsity,
        method: a.method,
        scope: a.scope,
        pattern: a.pattern,
        structured: a.structured,
    };
    let prune = PruneConfig::new(flags, calibration.is_some())?;
    Ok(RunConfig::new(&a.run, calibration, Some(prune), None))
}

pub fn run(a: &PruneArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let made = in_process(&a.run.model, &a.calibration_text, g.backend, g.quiet)?;
    let calibration = made
        .as_ref()
        .map(|m| m.path.clone())
        .or(a.calibration.clone());
    engine::run(&config(a, calibration)?, g, out)
}
