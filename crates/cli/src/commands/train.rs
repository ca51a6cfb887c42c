//! `shears train --data FILE --hidden 256,128 -o MODEL`: an MLP classifier
//! trained on labels (see [`crate::training`] for the shared parts).

use anyhow::Result;
use shears_core::train::Dataset;

use crate::args::{BackendChoice, TrainArgs};
use crate::output::Out;
use crate::training::{check_output, fit, start_model, FitPlan};

pub fn run(a: &TrainArgs, backend: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let mut plan = FitPlan::new(&a.fit, 1.0, 1.0)?;
    plan.inputs = std::iter::once(a.data.clone())
        .chain(a.init.clone())
        .collect();
    check_output(&a.output, &plan)?;
    let data = Dataset::load(&a.data)?;
    let model = start_model(
        a.hidden.as_deref(),
        a.init.as_deref(),
        data.cols,
        data.classes,
        plan.cfg.seed,
    )?;
    fit(
        &plan, &a.data, &data, model, None, &a.output, backend, quiet, out,
    )
}
