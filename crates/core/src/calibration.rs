//! Calibration data for pruning: a safetensors file keyed by weight name.
//!
//! | key | shape | used by |
//! |---|---|---|
//! | `<weight>.input_norm` | [in] | Wanda: ‖x_j‖₂ of input feature j over the calibration tokens |
//! | `<weight>.grad` | [out, in] | Taylor: the loss gradient of the weight |
//! | `<weight>.inputs` | [n, in] | validation: n input rows of the layer |
//!
//! Any of F32, F16 and BF16. [`synthesize`] writes a synthetic file of this
//! format for a checkpoint (seeded; outlier input features included, so
//! Wanda and magnitude disagree as they do on real activations).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::{Checkpoint, DType, Error, Result, TensorBuf, TensorInfo, TensorView};

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

    /// The input norms of `weight` ([in]), if the file has them.
    pub fn input_norms(&self, weight: &str, cols: usize) -> Result<Option<Vec<f32>>> {
        let key = format!("{weight}.input_norm");
        match self.entry(&key, &[cols], true)? {
            Some(info) => Ok(Some(self.ckpt.view(info).to_f32()?)),
            None => Ok(None),
        }
    }

    /// The gradient of `weight` ([out, in]), if the file has it.
    pub fn grad(&self, weight: &str, shape: &[usize]) -> Result<Option<TensorView<'_>>> {
        let key = format!("{weight}.grad");
        Ok(self.entry(&key, shape, true)?.map(|i| self.ckpt.view(i)))
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
/// `ckpt`: `rows` Gaussian input rows per layer with per-feature scales
/// drawn log-normal (a few outlier features), their norms, and Gaussian
/// gradients (bf16).
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
        let x: Vec<f32> = (0..rows * inf)
            .map(|i| scale[i % inf] * rng.sample::<f32, _>(StandardNormal))
            .collect();
        let norms: Vec<f32> = (0..inf)
            .map(|j| {
                (0..rows)
                    .map(|r| (x[r * inf + j] as f64).powi(2))
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
        tensors.push((
            format!("{name}.inputs"),
            TensorBuf::from_f32(DType::F32, vec![rows, inf], &x)?,
        ));
        tensors.push((
            format!("{name}.grad"),
            TensorBuf::from_f32(DType::BF16, vec![outf, inf], &grad)?,
        ));
    }
    crate::checkpoint::write_file(out, &tensors, force)?;
    Ok(out.to_path_buf())
}
