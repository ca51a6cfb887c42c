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
    let prune = PruneConfig::new(flags, a.calibration.is_some())?;
    Ok(RunConfig::new(
        &a.run,
        a.calibration.clone(),
        Some(prune),
        None,
    ))
}

pub fn run(a: &PruneArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    engine::run(&config(a)?, g, out)
}
