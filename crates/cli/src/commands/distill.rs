//! `shears distill …`: a student learns to reproduce a teacher. `model`
//! distills an MLP classifier into a smaller one on a data set (Hinton et
//! al. 2015); `layers` repairs the compressed linear layers of a checkpoint
//! against its dense original (ZeroQuant's LKD, in [`layers`]).

mod block;
mod job;
mod layers;
mod model;
mod report;

pub use layers::run as layers;

use anyhow::{bail, Result};
use shears_core::train::{Dataset, Mlp};

use crate::args::{BackendChoice, DistillModelArgs};
use crate::output::Out;
use crate::training::{check_output, fit, start_model, FitPlan, Teacher};

/// `shears distill model --teacher T --data FILE --hidden 16 -o STUDENT`.
pub fn model(
    a: &DistillModelArgs,
    backend: BackendChoice,
    quiet: bool,
    out: &mut Out,
) -> Result<()> {
    let mut plan = FitPlan::new(&a.fit, a.temperature, a.alpha)?;
    plan.inputs = [a.data.clone(), a.teacher.clone()]
        .into_iter()
        .chain(a.init.clone())
        .collect();
    check_output(&a.output, &plan)?;
    let teacher = Mlp::load(&a.teacher)?;
    let data = Dataset::load(&a.data)?;
    if teacher.inputs() != data.cols {
        bail!(
            "{}: the teacher takes {} inputs but {} has {} feature columns",
            a.teacher.display(),
            teacher.inputs(),
            a.data.display(),
            data.cols
        );
    }
    if teacher.classes() != data.classes {
        bail!(
            "{}: the teacher has {} classes but {} has {} (labels 0..{})",
            a.teacher.display(),
            teacher.classes(),
            a.data.display(),
            data.classes,
            data.classes - 1
        );
    }
    let student = start_model(
        a.hidden.as_deref(),
        a.init.as_deref(),
        teacher.inputs(),
        teacher.classes(),
        plan.cfg.seed,
    )?;
    let teacher = Teacher {
        model: teacher,
        path: &a.teacher,
    };
    fit(
        &plan,
        &a.data,
        &data,
        student,
        Some(&teacher),
        &a.output,
        backend,
        quiet,
        out,
    )
}
