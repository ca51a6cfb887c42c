//! `shears calibration MODEL -o FILE`: a synthetic calibration file in the
//! format `prune --calibration` reads, for the weights prune would select.

use anyhow::Result;
use shears_core::Checkpoint;

use crate::args::CalibrationArgs;
use crate::output::Out;
use crate::select;

pub fn run(a: &CalibrationArgs, out: &mut Out) -> Result<()> {
    let ckpt = Checkpoint::open(&a.model)?;
    let selection = select::select(&ckpt, &[], &[])?;
    let names: Vec<&str> = selection
        .compressed()
        .map(|i| ckpt.tensors[i].name.as_str())
        .collect();
    if names.is_empty() {
        anyhow::bail!("{}: no linear weights to calibrate", ckpt.root.display());
    }
    shears_core::calibration::synthesize(&ckpt, &names, a.rows, a.seed, &a.output, a.force)?;
    out.line(&format!(
        "wrote {} ({} layers: input_norm, inputs [{}, in], grad)",
        a.output.display(),
        names.len(),
        a.rows
    ));
    Ok(())
}
