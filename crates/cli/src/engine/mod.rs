//! The engine under `prune`, `quantize` and `compress`: typed arguments
//! become a [`RunConfig`] ([`config`]), checked against the checkpoint into
//! a [`plan::Plan`] (per tensor: keep and why, or compress; the output
//! layout), which one streaming loop ([`run`]) executes on the backend,
//! reporting per tensor ([`report`]). Commands only build configs.

pub mod config;
pub mod masks;
pub mod plan;
pub mod report;
pub mod run;

use anyhow::Result;
use shears_core::calibration::Calibration;
use shears_core::Checkpoint;

pub use config::RunConfig;

use crate::args::BackendChoice;
use crate::backend::Backend;
use crate::output::Out;

/// Opens the checkpoint, plans the run, and prints the plan (`--dry-run`)
/// or runs it.
pub fn run(cfg: &RunConfig, choice: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let ckpt = Checkpoint::open(&cfg.model)?;
    let calib = cfg
        .calibration
        .as_ref()
        .map(|p| Calibration::open(p))
        .transpose()?;
    let cfg = &plan::resolve_auto_group(cfg, &ckpt)?;
    let plan = plan::Plan::build(cfg, &ckpt, calib.as_ref())?;
    if cfg.dry_run {
        plan.print(out);
        return Ok(());
    }
    let backend = Backend::open(choice)?;
    run::execute(&plan, &backend, quiet, out)
}
