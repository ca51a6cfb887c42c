//! MLP classifiers: `layers.{i}.weight` [out, in] and `layers.{i}.bias`
//! [out] in a safetensors file (f32), ReLU between layers, logits out.
//! Trained on labels, or distilled from a teacher's logits (Hinton et al.
//! 2015: T²·KL at temperature T plus α·CE), by one loop generic over
//! [`Device`], so every backend takes the same steps in the same order.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::write_file;
use crate::train::device::{AdamStep, Device};
use crate::{Checkpoint, DType, Error, Result, TensorBuf};

/// Adam's β1, β2 and ε for classifier training (the usual defaults).
pub const ADAM_BETAS: (f32, f32) = (0.9, 0.999);
pub const ADAM_EPS: f32 = 1e-8;

/// Rows per forward pass when computing logits for evaluation.
const EVAL_CHUNK: usize = 256;

/// One fully connected layer, row-major `weight` [outputs, inputs].
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

/// A classifier: layers applied in order, ReLU between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub layers: Vec<Layer>,
}

impl Mlp {
    /// A freshly initialised MLP of `sizes` = [inputs, hidden…, classes]:
    /// Kaiming-uniform weights (bound √(6 / fan_in), suited to ReLU) and
    /// zero biases, drawn from ChaCha8 seeded by `seed`.
    pub fn new(sizes: &[usize], seed: u64) -> Result<Mlp> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(Error::Invalid(format!(
                "an MLP needs inputs, outputs and no empty layer, got sizes {sizes:?}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layers = sizes
            .windows(2)
            .map(|io| {
                let (inputs, outputs) = (io[0], io[1]);
                let bound = (6.0 / inputs as f32).sqrt();
                let weight = (0..inputs * outputs)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                Layer {
                    weight,
                    bias: vec![0.0; outputs],
                    inputs,
                    outputs,
                }
            })
            .collect();
        Ok(Mlp { layers })
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.layers[0].inputs
    }

    /// Output classes.
    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    /// Widths of the hidden layers.
    pub fn hidden(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1]
            .iter()
            .map(|l| l.outputs)
            .collect()
    }

    /// Learnable values.
    pub fn parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }

    /// Writes the model as f32 safetensors at `path` (through a temporary
    /// name renamed into place; an existing safetensors file only with
    /// `force`; never one of `protected`, the run's inputs).
    pub fn save(&self, path: &Path, force: bool, protected: &[std::path::PathBuf]) -> Result<()> {
        let mut tensors = Vec::with_capacity(2 * self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            tensors.push((
                format!("layers.{i}.weight"),
                TensorBuf::from_f32(DType::F32, vec![l.outputs, l.inputs], &l.weight)?,
            ));
            tensors.push((
                format!("layers.{i}.bias"),
                TensorBuf::from_f32(DType::F32, vec![l.outputs], &l.bias)?,
            ));
        }
        write_file(path, &tensors, force, protected)
    }

    /// Reads a model, checking its names (only `layers.{i}.weight` and
    /// `layers.{i}.bias`, i from 0 without gaps) and the chain of shapes
    /// (layer i's inputs are layer i−1's outputs). f16 / bf16 are widened.
    pub fn load(path: &Path) -> Result<Mlp> {
        let ckpt = Checkpoint::open(path)?;
        let mut count = 0usize;
        for t in &ckpt.tensors {
            let index = t
                .name
                .strip_prefix("layers.")
                .and_then(|s| {
                    s.strip_suffix(".weight")
                        .or_else(|| s.strip_suffix(".bias"))
                })
                .and_then(|s| s.parse::<usize>().ok());
            match index {
                Some(i) => count = count.max(i + 1),
                None => {
                    return Err(Error::tensor(
                        path,
                        &t.name,
                        "not part of an MLP classifier (expected layers.{i}.weight and layers.{i}.bias)",
                    ))
                }
            }
        }
        if count == 0 {
            return Err(Error::format(
                path,
                "no layers.{i}.weight tensors: not an MLP classifier",
            ));
        }
        let mut layers: Vec<Layer> = Vec::with_capacity(count);
        for i in 0..count {
            let get = |name: String| {
                let info = ckpt
                    .get(&name)
                    .ok_or_else(|| Error::format(path, format!("tensor '{name}' is missing")))?;
                let values = ckpt.view(info).to_f32()?;
                Ok::<_, Error>((name, info.shape.clone(), values))
            };
            let (wname, wshape, weight) = get(format!("layers.{i}.weight"))?;
            let (bname, bshape, bias) = get(format!("layers.{i}.bias"))?;
            let [outputs, inputs] = wshape[..] else {
                return Err(Error::tensor(
                    path,
                    wname,
                    format!("shape {wshape:?} is not [out, in]"),
                ));
            };
            if bshape != [outputs] {
                return Err(Error::tensor(
                    path,
                    bname,
                    format!("shape {bshape:?}, expected [{outputs}] (the weight's outputs)"),
                ));
            }
            if outputs == 0 || inputs == 0 {
                return Err(Error::tensor(path, wname, "has an empty dimension"));
            }
            if let Some(prev) = layers.last() {
                if prev.outputs != inputs {
                    return Err(Error::tensor(
                        path,
                        wname,
                        format!(
                            "takes {inputs} inputs but layers.{}.weight has {} outputs",
                            i - 1,
                            prev.outputs
                        ),
                    ));
                }
            }
            layers.push(Layer {
                weight,
                bias,
                inputs,
                outputs,
            });
        }
        Ok(Mlp { layers })
    }

    /// Logits [rows, classes] of the inputs `x` [rows, inputs], computed on
    /// `dev` in chunks.
    pub fn logits<D: Device>(&self, dev: &D, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let chunk = rows.clamp(1, EVAL_CHUNK);
        let mut net = DeviceMlp::new(dev, self, chunk)?;
        let classes = self.classes();
        let mut out = Vec::with_capacity(rows * classes);
        for start in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - start);
            let xs = &x[start * self.inputs()..(start + n) * self.inputs()];
            dev.write(&mut net.x, xs)?;
            net.forward(dev, n)?;
            let z = dev.download(&net.layers.last().expect("layers").z)?;
            out.extend_from_slice(&z[..n * classes]);
        }
        Ok(out)
    }
}

/// How a classifier is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    /// Seed of the mini-batch order (ChaCha8, stream 1).
    pub seed: u64,
    /// Distillation temperature T (used only with teacher logits).
    pub temperature: f32,
    /// Weight α of the cross-entropy on labels.
    pub alpha: f32,
}

/// Losses recorded during training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainLog {
    /// The loss of every mini-batch, in step order.
    pub step_losses: Vec<f64>,
    /// Per epoch, the mean loss over its examples.
    pub epoch_losses: Vec<f64>,
}

/// Trains `mlp` on `x` [rows, inputs] with `labels`, and with `teacher`
/// logits [rows, classes] when distilling: seeded shuffle per epoch,
/// mini-batches of `cfg.batch_size` (the last one smaller), Adam on every
/// parameter. `on_epoch(epoch, mean_loss)` is called after each epoch.
pub fn train<D: Device>(
    dev: &D,
    mlp: &mut Mlp,
    x: &[f32],
    labels: &[u32],
    teacher: Option<&[f32]>,
    cfg: &TrainConfig,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> Result<TrainLog> {
    let rows = labels.len();
    let (inputs, classes) = (mlp.inputs(), mlp.classes());
    if rows == 0 || cfg.batch_size == 0 {
        return Err(Error::Invalid(
            "training needs examples and a batch size above 0".into(),
        ));
    }
    assert_eq!(x.len(), rows * inputs, "x is [rows, inputs]");
    if let Some(t) = teacher {
        assert_eq!(
            t.len(),
            rows * classes,
            "teacher logits are [rows, classes]"
        );
    }
    let batch = cfg.batch_size.min(rows);
    let mut net = DeviceMlp::new(dev, mlp, batch)?;
    let mut labels_buf = dev.zeros(batch)?;
    let mut teacher_buf = match teacher {
        Some(_) => Some(dev.zeros(batch * classes)?),
        None => None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(1);
    let mut order: Vec<usize> = (0..rows).collect();
    let (mut xb, mut lb, mut tb) = (Vec::new(), Vec::new(), Vec::new());
    let mut log = TrainLog::default();
    let mut step = 0u32;
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0f64;
        for idx in order.chunks(batch) {
            let n = idx.len();
            xb.clear();
            lb.clear();
            tb.clear();
            for &i in idx {
                xb.extend_from_slice(&x[i * inputs..(i + 1) * inputs]);
                lb.push(labels[i] as f32);
                if let Some(t) = teacher {
                    tb.extend_from_slice(&t[i * classes..(i + 1) * classes]);
                }
            }
            dev.write(&mut net.x, &xb)?;
            dev.write(&mut labels_buf, &lb)?;
            if let Some(buf) = teacher_buf.as_mut() {
                dev.write(buf, &tb)?;
            }
            net.forward(dev, n)?;
            let last = net.layers.last_mut().expect("layers");
            let loss = dev.classification_loss(
                &last.z,
                teacher_buf.as_ref(),
                &labels_buf,
                &mut last.dz,
                n,
                classes,
                cfg.temperature,
                cfg.alpha,
            )?;
            net.backward(dev, n)?;
            step += 1;
            let s = AdamStep::at(cfg.lr, ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS, step);
            net.adam(dev, s)?;
            log.step_losses.push(loss);
            total += loss * n as f64;
        }
        let mean = total / rows as f64;
        log.epoch_losses.push(mean);
        on_epoch(epoch, mean);
    }
    net.download_into(dev, mlp)?;
    Ok(log)
}

mod device_mlp;
use device_mlp::DeviceMlp;

#[cfg(test)]
#[path = "mlp_tests.rs"]
mod tests;
