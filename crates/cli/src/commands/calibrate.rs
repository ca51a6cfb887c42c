//! `shears calibrate MODEL --text FILE… -o CALIB.safetensors`: runs the
//! model over the text and writes each decoder linear layer's input
//! statistics, the file `prune --calibration`, `compress --calibration`,
//! `quantize --validate --calibration` and `distill layers --calibration`
//! read (the work is in [`crate::lm::write_calibration`], which
//! `--calibration-text` runs too).

use anyhow::Result;

use crate::args::{BackendChoice, CalibrateArgs};
use crate::backend::Backend;
use crate::lm::{write_calibration, Settings};
use crate::output::{human_bytes, thousands, Out};

pub fn run(a: &CalibrateArgs, backend: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let backend = Backend::open(backend)?;
    let fw = backend.forward();
    let hess = backend.hessian();
    let s = Settings {
        model: &a.model,
        text: &a.text,
        rows: a.rows,
        gram: a.gram.then_some(hess.as_ref()),
        seed: a.seed,
    };
    let (tokens, layers) = write_calibration(&s, fw.as_ref(), &a.output, a.force, quiet, None)?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    out.line(&format!(
        "wrote {} ({}): input statistics of {layers} linear layers over {} tokens",
        a.output.display(),
        human_bytes(size),
        thousands(tokens as u64)
    ));
    Ok(())
}
