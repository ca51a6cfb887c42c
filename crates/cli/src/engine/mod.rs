//! The engine under `prune`, `quantize` and `compress`: typed arguments
//! become a [`RunConfig`] ([`config`]), checked against the checkpoint into
//! a [`plan::Plan`] (per tensor: keep and why, or compress; the output
//! layout), which one streaming loop ([`run`]) executes on the backend,
//! reporting per tensor ([`report`]). Commands only build configs.

pub mod config;
mod float;
pub mod hessian;
pub mod masks;
pub mod plan;
pub mod report;
pub mod run;
pub mod sequential;

use anyhow::Result;
use shears_core::calibration::Calibration;
use shears_core::Checkpoint;

pub use config::RunConfig;

use crate::args::GlobalArgs;
use crate::backend::Backend;
use crate::output::Out;

/// [`run`], calibrating in-process first when `--calibration-text` was
/// given (the made file is removed when the run ends).
pub fn run_calibrated(
    mut cfg: RunConfig,
    text: &crate::args::CalibrationTextArgs,
    g: &GlobalArgs,
    out: &mut Out,
) -> Result<()> {
    let model = cfg.model.clone();
    let made = crate::lm::in_process(&model, text, g.backend, g.quiet, Some(&cfg))?;
    if let Some(m) = &made {
        cfg.calibration = Some(m.path.clone());
    }
    run(&cfg, g, out)
}

/// Opens the checkpoint, plans the run, and prints the plan (`--dry-run`)
/// or runs it with the global flags (backend, quiet, sync).
pub fn run(cfg: &RunConfig, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let cfg = &RunConfig {
        sync: g.sync,
        ..cfg.clone()
    };
    let ckpt = Checkpoint::open(&cfg.model)?;
    let calib = cfg
        .calibration
        .as_ref()
        .map(|p| Calibration::open(p))
        .transpose()?;
    if let Some(c) = calib.as_ref().filter(|c| c.is_synthetic()) {
        tracing::warn!(
            "{} holds synthetic activations (made by `shears calibration`, for tests): on a real \
             model they give far worse results than real ones; make those with `shears calibrate` \
             or pass --calibration-text",
            c.path().display()
        );
    }
    let cfg = &plan::resolve_auto_group(cfg, &ckpt)?;
    let plan = plan::Plan::build(cfg, &ckpt, calib.as_ref())?;
    if cfg.dry_run {
        plan.print(out);
        return Ok(());
    }
    let backend = Backend::open(g.backend)?;
    run::execute(&plan, &backend, g.quiet, out)
}
