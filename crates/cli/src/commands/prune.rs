//! `shears prune MODEL -o OUT`: score, select, mask, write; report what it
//! cost. The arguments become a validated [`RunConfig`] that the engine
//! plans and runs.

use std::path::PathBuf;

use anyhow::Result;

use crate::args::{GlobalArgs, PruneArgs};
use crate::engine::config::{HessianConfig, PruneConfig, PruneFlags};
use crate::engine::{self, RunConfig};
use crate::lm::in_process;
use crate::output::Out;

/// The run `shears prune` asks for, reading `calibration` (--calibration;
/// --calibration-text's in-process file is set once made).
pub fn config(a: &PruneArgs, calibration: Option<PathBuf>) -> Result<RunConfig> {
    let has_text = !a.calibration_text.calibration_text.is_empty();
    let flags = PruneFlags {
        sparsity: a.sparsity,
        method: a.method,
        scope: a.scope,
        pattern: a.pattern,
        structured: a.structured,
    };
    let prune = PruneConfig::new(flags, calibration.is_some() || has_text)?;
    let mut cfg = RunConfig::new(&a.run, calibration, Some(prune), None);
    cfg.hessian = HessianConfig::new(&a.hessian, false, Some(&prune), None)?;
    Ok(cfg)
}

pub fn run(a: &PruneArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let mut cfg = config(a, a.calibration.clone())?;
    let made = in_process(
        &a.run.model,
        &a.calibration_text,
        g.backend,
        g.quiet,
        Some(&cfg),
    )?;
    if let Some(m) = &made {
        cfg.calibration = Some(m.path.clone());
    }
    engine::run(&cfg, g, out)
}
