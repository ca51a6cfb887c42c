//! `shears prune MODEL -o OUT`: score, select, mask, write; report what it
//! cost. The arguments become a validated [`RunConfig`] that the engine
//! plans and runs.

use std::path::PathBuf;

use anyhow::Result;

use crate::args::{GlobalArgs, PruneArgs};
use crate::engine::config::{HessianConfig, PruneConfig, PruneFlags};
use crate::engine::{self, RunConfig};
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
    let cfg = config(a, a.calibration.clone())?;
    engine::run_calibrated(cfg, &a.calibration_text, g, out)
}
