//! What `calibrate` and `eval` share: opening a model folder (config,
//! weights, tokenizer), choosing where the forward pass runs, and running
//! the model layer by layer with progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use shears_core::checkpoint::FileWriter;
use shears_core::model::collect::InputStats;
use shears_core::model::eval::final_states;
use shears_core::model::text::{sequences, TextTokenizer};
use shears_core::model::{Capture, ModelConfig, NoCapture, Runner, Weights};
use shears_core::reference::forward::Forward;
use shears_core::reference::hessian::Hessian;
use shears_core::Checkpoint;

use crate::args::{BackendChoice, CalibrationTextArgs, TextArgs};
use crate::backend::Backend;
use crate::engine::sequential::LayerCompressor;
use crate::engine::RunConfig;
use crate::progress::Progress;

/// A model folder opened for a forward pass.
pub struct Model {
    pub ckpt: Checkpoint,
    pub cfg: ModelConfig,
}

impl Model {
    /// Opens `path`: its config.json (the family checked), its weights.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            bail!(
                "{}: not a model folder (shears runs a folder holding config.json, \
                 tokenizer.json and the weights)",
                path.display()
            );
        }
        let cfg = ModelConfig::from_file(&path.join("config.json"))?;
        let ckpt = Checkpoint::open(path)?;
        Ok(Model { ckpt, cfg })
    }

    /// The weights, each checked by name and shape.
    pub fn weights(&self) -> Result<Weights<'_>> {
        Ok(Weights::open(&self.ckpt, self.cfg.clone())?)
    }

    /// The tokenizer of the folder.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        Ok(TextTokenizer::open(&self.ckpt.root)?)
    }
}

/// Runs `weights` over `ids` to the final normed states, a progress bar
/// (and an info line) per decoder layer.
pub fn run_layers(
    weights: &Weights,
    fw: &dyn Forward,
    ids: &[u32],
    seq_len: usize,
    capture: &mut dyn Capture,
    what: &str,
    quiet: bool,
) -> Result<Vec<f32>> {
    let layers = weights.config().layers;
    let mut progress = Progress::steps(layers as u64, what, quiet);
    let start = std::time::Instant::now();
    let xn = final_states(weights, fw, ids, seq_len, capture, &mut |i| {
        progress.set(i as u64 + 1);
        tracing::info!(
            "{what}: layer {}/{layers} done ({:.1} s)",
            i + 1,
            start.elapsed().as_secs_f64()
        );
    })?;
    progress.finish();
    Ok(xn)
}

/// Calibrates layer by layer, compressing each layer from the XᵀX it
/// gathered and running the states on through the compressed layer.
fn run_sequential(
    weights: &Weights,
    fw: &dyn Forward,
    ids: &[u32],
    seq_len: usize,
    stats: &mut InputStats,
    c: &mut LayerCompressor,
    quiet: bool,
) -> Result<()> {
    let layers = weights.config().layers;
    let mut progress = Progress::steps(layers as u64, "calibrate (sequential)", quiet);
    let start = std::time::Instant::now();
    let runner = Runner::new(weights, fw, seq_len)?;
    let mut x = runner.embed(ids)?;
    for i in 0..layers {
        let mut lw = weights.layer(i)?;
        let before = x.clone();
        runner.layer(&lw, &mut x, stats)?;
        stats.settle()?;
        c.compress(&mut lw, stats)?;
        x = before;
        runner.layer(&lw, &mut x, &mut NoCapture)?;
        stats.layer_done(i)?;
        progress.set(i as u64 + 1);
        tracing::info!(
            "calibrate and compress: layer {}/{layers} done ({:.1} s)",
            i + 1,
            start.elapsed().as_secs_f64()
        );
    }
    progress.finish();
    Ok(())
}

/// How a calibration run is set up.
pub struct Settings<'a> {
    pub model: &'a Path,
    pub text: &'a TextArgs,
    pub rows: usize,
    /// The family that sums XᵀX, when the file holds it (`--gram`).
    pub gram: Option<&'a dyn Hessian>,
    pub seed: u64,
}

/// Runs the model over the text and writes the calibration file at `to`;
/// returns the tokens used and the number of linear layers.
pub fn write_calibration(
    s: &Settings,
    fw: &dyn Forward,
    to: &Path,
    force: bool,
    quiet: bool,
    sequential: Option<&mut LayerCompressor>,
) -> Result<(usize, usize)> {
    let model = Model::open(s.model)?;
    let weights = model.weights()?;
    let tok = model.tokenizer()?;
    let ids = sequences(&tok, &s.text.text, s.text.seq_len, s.text.tokens)?;
    let text: Vec<String> = s
        .text
        .text
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let metadata = BTreeMap::from([
        ("shears.calibration".to_string(), "activations".to_string()),
        ("model".to_string(), s.model.display().to_string()),
        ("text".to_string(), text.join("\n")),
        ("tokens".to_string(), ids.len().to_string()),
        ("seq_len".to_string(), s.text.seq_len.to_string()),
        (
            "bos".to_string(),
            tok.bos.map_or("none".into(), |b| b.to_string()),
        ),
        ("rows".to_string(), s.rows.to_string()),
        ("seed".to_string(), s.seed.to_string()),
        ("text_sha256".to_string(), files_sha256(&s.text.text)?),
        ("model_fingerprint".to_string(), fingerprint(&model)?),
    ]);
    let protected: Vec<PathBuf> = std::iter::once(s.model.to_path_buf())
        .chain(s.text.text.iter().cloned())
        .collect();
    // Each layer's statistics are written as the layer finishes.
    let plan = InputStats::plan(&model.cfg, ids.len(), s.rows, s.gram.is_some());
    let sink = FileWriter::create(to, &plan, &metadata, force, &protected)?;
    let mut stats = InputStats::streaming(ids.len(), s.rows, s.seed, s.gram, sink);
    match sequential {
        None => {
            run_layers(
                &weights,
                fw,
                &ids,
                s.text.seq_len,
                &mut stats,
                "calibrate",
                quiet,
            )?;
        }
        Some(c) => run_sequential(&weights, fw, &ids, s.text.seq_len, &mut stats, c, quiet)?,
    }
    stats.finish()?;
    Ok((ids.len(), 7 * model.cfg.layers))
}

/// A calibration file made in-process for `--calibration-text`, removed
/// (with its temporary folder) when dropped.
pub struct InProcess {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Calibrates `model` on `--calibration-text` with `shears calibrate`'s
/// defaults, when given; `None` otherwise.
///
/// For GPTQ and SparseGPT (`run` with a Hessian method) the file holds XᵀX
/// too and, unless `--sequential false`, each layer is calibrated on the
/// outputs of the layers before it as compressed.
pub fn in_process(
    model: &Path,
    t: &CalibrationTextArgs,
    backend: BackendChoice,
    quiet: bool,
    run: Option<&RunConfig>,
) -> Result<Option<InProcess>> {
    if t.calibration_text.is_empty() {
        return Ok(None);
    }
    let backend = Backend::open(backend)?;
    let hess = backend.hessian();
    let gram = run
        .is_some_and(|r| r.hessian.is_some())
        .then_some(hess.as_ref());
    let ckpt = Checkpoint::open(model)?;
    let resolved = run
        .map(|r| crate::engine::plan::resolve_auto_group(r, &ckpt))
        .transpose()?;
    let mut sequential = match &resolved {
        Some(r) => LayerCompressor::new(r, &ckpt, &backend)?,
        None => None,
    };
    let fw = backend.forward();
    let text = TextArgs {
        text: t.calibration_text.clone(),
        tokens: t.calibration_tokens,
        seq_len: t.calibration_seq_len,
    };
    let s = Settings {
        model,
        text: &text,
        rows: DEFAULT_ROWS,
        gram,
        seed: 0,
    };
    let dir = tempfile::Builder::new()
        .prefix("shears-calibration-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("a temporary folder for --calibration-text: {e}"))?;
    let path = dir.path().join("calibration.safetensors");
    let (tokens, _) = write_calibration(&s, fw.as_ref(), &path, false, quiet, sequential.as_mut())?;
    tracing::info!("calibrated in-process on {tokens} tokens");
    Ok(Some(InProcess { _dir: dir, path }))
}

/// `--rows` default of `shears calibrate`, also used by --calibration-text.
pub const DEFAULT_ROWS: usize = 256;

/// Writes a synthetic calibration file for the weights `prune` would
/// select in `model` (test data; see `shears_core::calibration`).
pub fn synthetic_calibration(
    model: &Path,
    output: &Path,
    rows: usize,
    seed: u64,
    force: bool,
    out: &mut crate::output::Out,
) -> Result<()> {
    let ckpt = Checkpoint::open(model)?;
    let selection = crate::select::select(&ckpt, &[], &[])?;
    let names: Vec<&str> = selection
        .compressed()
        .map(|i| ckpt.tensors[i].name.as_str())
        .collect();
    if names.is_empty() {
        bail!("{}: no linear weights to calibrate", ckpt.root.display());
    }
    shears_core::calibration::synthesize(&ckpt, &names, rows, seed, output, force)?;
    out.line(&format!(
        "wrote {} (synthetic, test data: {} layers: input_norm, inputs [{rows}, in], grad)",
        output.display(),
        names.len()
    ));
    Ok(())
}

/// SHA-256 of each file, hex, one per line.
fn files_sha256(files: &[PathBuf]) -> Result<String> {
    let mut lines = Vec::new();
    for f in files {
        let mut h = Sha256::new();
        let mut file = std::fs::File::open(f).map_err(|e| shears_core::Error::io(f, e))?;
        std::io::copy(&mut file, &mut h).map_err(|e| shears_core::Error::io(f, e))?;
        lines.push(format!("{:x}", h.finalize()));
    }
    Ok(lines.join("\n"))
}

/// SHA-256 of a model's config.json and every tensor's name, dtype and
/// shape (its architecture and layout, not its values: cheap to compute
/// and the same for a model and its fine-tunes).
fn fingerprint(model: &Model) -> Result<String> {
    let mut h = Sha256::new();
    if let Some(cfg) = model.ckpt.config()? {
        h.update(serde_json::to_vec(&cfg)?);
    }
    for t in &model.ckpt.tensors {
        h.update(format!("{} {} {:?}\n", t.name, t.dtype, t.shape));
    }
    Ok(format!("{:x}", h.finalize()))
}
