//! Calibration data for pruning: a safetensors file keyed by weight name.
//!
//! | key | shape | used by |
//! |---|---|---|
//! | `<weight>.input_norm` | [in] | Wanda: ‖x_j‖₂ of input feature j over the calibration tokens |
//! | `<weight>.grad` | [out, in] | Taylor: the loss gradient of the weight |
//! | `<weight>.inputs` | [n, in] | validation, layer-wise distillation: n input rows of the layer |
//! | `<weight>.input_gram` | [in, in] | GPTQ, SparseGPT: XᵀX over the calibration tokens |
//!
//! Any of F32, F16 and BF16. [`synthesize`] writes a synthetic file of this
//! format for a checkpoint (seeded; correlated input features of low
//! effective rank with a few outliers, as real activations have, so Wanda
//! and magnitude disagree and layer-wise distillation has something to
//! recover).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::{Checkpoint, DType, Error, Result, TensorBuf, TensorInfo, TensorView};

/// The `__metadata__` key saying what a calibration file holds:
/// `activations` (`shears calibrate`) or `synthetic` (`shears calibration`).
pub const KIND_KEY: &str = "shears.calibration";

/// An opened calibration file.
#[derive(Debug)]
pub struct Calibration {
    ckpt: Checkpoint,
}

impl Calibration {
    /// Opens and validates the file.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Calibration {
            ckpt: Checkpoint::open(path)?,
        })
    }

    /// Path of the file, for messages.
    pub fn path(&self) -> &Path {
        &self.ckpt.root
    }

    /// Whether the file says it holds made-up activations
    /// (`shears calibration`), not a model's real ones.
    pub fn is_synthetic(&self) -> bool {
        self.ckpt
            .shards
            .first()
            .and_then(|s| s.metadata.get(KIND_KEY))
            .is_some_and(|k| k == "synthetic")
    }

    fn entry(&self, key: &str, want: &[usize], dtype_ok: bool) -> Result<Option<&TensorInfo>> {
        let Some(info) = self.ckpt.get(key) else {
            return Ok(None);
        };
        if !info.dtype.is_float_computable() || !dtype_ok {
            return Err(Error::tensor(
                self.path(),
                key,
                format!("dtype {} is not F32, F16 or BF16", info.dtype),
            ));
        }
        if info.shape != want {
            return Err(Error::tensor(
                self.path(),
                key,
                format!("shape {:?}, expected {:?}", info.shape, want),
            ));
        }
        Ok(Some(info))
    }

    /// The number of tokens the statistics were summed over, where the
    /// file says (`shears calibrate` writes it as `tokens`).
    pub fn tokens(&self) -> Option<u64> {
        self.ckpt
            .shards
            .first()
            .and_then(|s| s.metadata.get("tokens"))
            .and_then(|t| t.parse().ok())
    }

    /// The input norms of `weight` ([in]), if the file has them.
    pub fn input_norms(&self, weight: &str, cols: usize) -> Result<Option<Vec<f32>>> {
        let key = format!("{weight}.input_norm");
        match self.entry(&key, &[cols], true)? {
            Some(info) => Ok(Some(self.ckpt.view(info).to_f32()?)),
            None => Ok(None),
        }
    }

    /// XᵀX of `weight`'s inputs ([in, in], GPTQ and SparseGPT), if the file
    /// has it.
    pub fn gram(&self, weight: &str, cols: usize) -> Result<Option<Vec<f32>>> {
        let key = format!("{weight}.input_gram");
        match self.entry(&key, &[cols, cols], true)? {
            Some(info) => {
                // Read once and given back: n² values per weight would
                // otherwise stay mapped for the rest of the run.
                let view = self.ckpt.view(info);
                let g = view.to_f32()?;
                view.release(0..info.nbytes());
                Ok(Some(g))
            }
            None => Ok(None),
        }
    }

    /// Whether the file has XᵀX of `weight`'s inputs, checked like
    /// [`Calibration::gram`] without reading it.
    pub fn has_gram(&self, weight: &str, cols: usize) -> Result<bool> {
        let key = format!("{weight}.input_gram");
        Ok(self.entry(&key, &[cols, cols], true)?.is_some())
    }

    /// The gradient of `weight` ([out, in]), if the file has it.
    pub fn grad(&self, weight: &str, shape: &[usize]) -> Result<Option<TensorView<'_>>> {
        let key = format!("{weight}.grad");
        Ok(self.entry(&key, shape, true)?.map(|i| self.ckpt.view(i)))
    }

    /// The number of input rows the file has for `weight`, checked like
    /// [`Calibration::inputs`] but without decoding them.
    pub fn input_rows(&self, weight: &str, cols: usize) -> Result<Option<usize>> {
        let key = format!("{weight}.inputs");
        let Some(info) = self.ckpt.get(&key) else {
            return Ok(None);
        };
        if info.shape.len() != 2 || info.shape[1] != cols {
            return Err(Error::tensor(
                self.path(),
                &key,
                format!("shape {:?}, expected [n, {cols}]", info.shape),
            ));
        }
        Ok(self
            .entry(&key, &info.shape.clone(), true)?
            .map(|i| i.shape[0]))
    }

    /// The input rows of `weight` ([n, in]) and n, if the file has them.
    pub fn inputs(&self, weight: &str, cols: usize) -> Result<Option<(Vec<f32>, usize)>> {
        let key = format!("{weight}.inputs");
        let Some(info) = self.ckpt.get(&key) else {
            return Ok(None);
        };
        if info.shape.len() != 2 || info.shape[1] != cols {
            return Err(Error::tensor(
                self.path(),
                &key,
                format!("shape {:?}, expected [n, {cols}]", info.shape),
            ));
        }
        let info = self
            .entry(&key, &info.shape.clone(), true)?
            .expect("present");
        Ok(Some((self.ckpt.view(info).to_f32()?, info.shape[0])))
    }
}

/// Writes a synthetic calibration file at `out` for the weights `names` of
/// `ckpt`: per layer `rows` input rows correlated as real activations are,
/// their norms, and Gaussian gradients (bf16).
///
/// Inputs are x = (z·A + σ·ε) ⊙ s: z [rows, r] and ε [rows, in] standard
/// Gaussian, A [r, in] Gaussian with entries of variance 1/r (so every
/// feature has unit variance before scaling), r = [`latent_rank`] of `in`,
/// σ = [`INPUT_NOISE`], and s per feature log-normal (a few outlier
/// features). Features share r latent factors, so their covariance has low
/// effective rank: what makes layer-wise distillation able to move a
/// pruned layer's lost output onto the weights it kept. (With independent
/// features the masked teacher itself is the best student and there is
/// nothing to learn.) Inputs are stored as BF16 to keep the file small.
pub fn synthesize(
    ckpt: &Checkpoint,
    names: &[&str],
    rows: usize,
    seed: u64,
    out: &Path,
    force: bool,
) -> Result<PathBuf> {
    let mut tensors = Vec::new();
    for (li, name) in names.iter().enumerate() {
        let info = ckpt
            .get(name)
            .ok_or_else(|| Error::tensor(&ckpt.root, *name, "not in the checkpoint"))?;
        let (outf, inf) = (info.shape[0], info.shape[1]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (li as u64).wrapping_mul(0x9e37_79b9));
        let scale: Vec<f32> = (0..inf)
            .map(|_| (0.8 * rng.sample::<f32, _>(StandardNormal)).exp())
            .collect();
        let x = correlated_inputs(&mut rng, rows, inf, &scale);
        // Norms of the values as stored, so Wanda sees the inputs it is given.
        let x = TensorBuf::from_f32(DType::BF16, vec![rows, inf], &x)?;
        let stored = x.view().to_f32()?;
        let norms: Vec<f32> = (0..inf)
            .map(|j| {
                (0..rows)
                    .map(|r| (stored[r * inf + j] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt() as f32
            })
            .collect();
        let grad: Vec<f32> = (0..outf * inf)
            .map(|_| 1e-3 * rng.sample::<f32, _>(StandardNormal))
            .collect();
        tensors.push((
            format!("{name}.input_norm"),
            TensorBuf::from_f32(DType::F32, vec![inf], &norms)?,
        ));
        tensors.push((format!("{name}.inputs"), x));
        tensors.push((
            format!("{name}.grad"),
            TensorBuf::from_f32(DType::BF16, vec![outf, inf], &grad)?,
        ));
    }
    let metadata = [(KIND_KEY.to_string(), "synthetic".to_string())].into();
    crate::checkpoint::write_file_with(
        out,
        &tensors,
        &metadata,
        force,
        std::slice::from_ref(&ckpt.root),
    )?;
    Ok(out.to_path_buf())
}

/// Per-feature noise σ of synthetic inputs, relative to the feature's
/// shared (low-rank) part.
pub const INPUT_NOISE: f32 = 0.05;

/// The number of latent factors of synthetic inputs `cols` wide: an
/// eighth of the width (at least 1).
pub fn latent_rank(cols: usize) -> usize {
    (cols / 8).max(1)
}

/// `rows` rows of (z·A + σ·ε) ⊙ `scale` (see [`synthesize`]).
fn correlated_inputs(rng: &mut ChaCha8Rng, rows: usize, cols: usize, scale: &[f32]) -> Vec<f32> {
    let rank = latent_rank(cols);
    let a_std = 1.0 / (rank as f32).sqrt();
    let a: Vec<f32> = (0..rank * cols)
        .map(|_| a_std * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let mut x = vec![0.0f32; rows * cols];
    let mut z = vec![0.0f32; rank];
    for row in x.chunks_exact_mut(cols) {
        for v in z.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        for (k, &zk) in z.iter().enumerate() {
            for (xj, &akj) in row.iter_mut().zip(&a[k * cols..(k + 1) * cols]) {
                *xj += zk * akj;
            }
        }
        for (xj, &s) in row.iter_mut().zip(scale) {
            *xj = (*xj + INPUT_NOISE * rng.sample::<f32, _>(StandardNormal)) * s;
        }
    }
    x
}
