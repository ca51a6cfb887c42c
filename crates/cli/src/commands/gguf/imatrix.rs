//! The importance matrix of a GGUF export (`--calibration FILE` or
//! `--calibration-text FILE`): llama.cpp's imatrix is each weight's mean
//! square input per column over the calibration tokens, which is shears'
//! `<weight>.input_norm`² / tokens. Weights with statistics are quantized
//! by ggml's weighted searches ([`shears_core::reference::imatrix`]);
//! the others (embeddings, the output head, as llama.cpp's imatrix leaves
//! them out by default) by the unweighted ones.

use anyhow::{bail, Result};
use shears_core::calibration::Calibration;

use std::path::Path;

use crate::args::{CalibrationTextArgs, GlobalArgs};
use crate::lm::InProcess;

/// An opened importance matrix.
pub struct Importance {
    calib: Calibration,
    /// Divides Σx² into a mean (1 where the file does not say).
    tokens: f32,
    /// The file made from --calibration-text, removed when dropped.
    _made: Option<InProcess>,
    /// Where it came from, for the report.
    source: String,
}

impl Importance {
    /// The importance matrix the flags ask for, if any (running `model`
    /// over the calibration text first).
    pub fn open(
        model: &Path,
        calibration: Option<&Path>,
        text: &CalibrationTextArgs,
        g: &GlobalArgs,
    ) -> Result<Option<Self>> {
        if calibration.is_some() && !text.calibration_text.is_empty() {
            bail!("--calibration and --calibration-text: give one");
        }
        let made = crate::lm::in_process(model, text, g.backend, g.quiet, None)?;
        let path = match (&made, calibration) {
            (Some(m), _) => m.path.clone(),
            (None, Some(p)) => p.to_path_buf(),
            (None, None) => return Ok(None),
        };
        let calib = Calibration::open(&path)?;
        if calib.is_synthetic() {
            tracing::warn!(
                "{} holds synthetic activations (for tests): an importance matrix from them \
                 weights the wrong columns; make one with `shears calibrate` or \
                 --calibration-text",
                path.display()
            );
        }
        let tokens = calib.tokens().unwrap_or(1).max(1);
        let source = match &made {
            Some(_) => format!("from --calibration-text ({tokens} tokens)"),
            None => path.display().to_string(),
        };
        Ok(Some(Importance {
            calib,
            tokens: tokens as f32,
            _made: made,
            source,
        }))
    }

    /// The calibration file the matrix comes from.
    pub fn calibration(&self) -> &Calibration {
        &self.calib
    }

    /// The file, or `from --calibration-text`, for the report.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The importances of `weight`'s `cols` input columns, if the file has
    /// its input statistics.
    pub fn of(&self, weight: &str, cols: usize) -> Result<Option<Vec<f32>>> {
        Ok(self
            .calib
            .input_norms(weight, cols)?
            .map(|n| n.iter().map(|&v| v * v / self.tokens).collect()))
    }

    /// Refuses a file that has statistics for none of `weights` (name,
    /// columns): most likely one made for another model.
    pub fn check_covers(&self, weights: &[(&str, usize)]) -> Result<()> {
        for &(w, cols) in weights {
            if self.calib.input_norms(w, cols)?.is_some() {
                return Ok(());
            }
        }
        bail!(
            "{}: no input statistics (<weight>.input_norm) for any weight of this model",
            self.calib.path().display()
        )
    }
}
