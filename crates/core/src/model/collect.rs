//! Calibration from real activations: while the model runs over the
//! calibration tokens, each decoder linear layer's inputs are reduced to
//! what activation-aware methods read (see [`crate::calibration`] for the
//! file): ‖x_j‖₂ over all tokens (Wanda), a seeded uniform sample of input
//! rows (validation, layer-wise distillation) and, when asked, XᵀX over all
//! tokens (GPTQ, SparseGPT). Weights that share an input (q/k/v, gate/up)
//! are reduced once and written under each weight's name.

use std::collections::BTreeMap;

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::ModelConfig;
use super::runner::Capture;
use super::weights::{layer_name, LINEARS};
use crate::checkpoint::{FileWriter, OutputTensor};
use crate::{DType, Result, TensorBuf};

/// What is kept of one input.
struct Acc {
    names: Vec<String>,
    inn: usize,
    /// Tokens seen so far (the next chunk's first token index).
    seen: usize,
    sum_sq: Vec<f64>,
    gram: Option<Vec<f32>>,
    rows: Vec<f32>,
}

/// A [`Capture`] that reduces every linear layer's inputs; see the module
/// docs. Rows are sampled at the same token positions for every layer.
/// With a writer, each decoder layer's tensors are written as the layer
/// finishes and dropped, so memory holds one layer's statistics.
pub struct InputStats {
    picks: Vec<usize>,
    gram: bool,
    /// Keyed by the first weight name of the input.
    accs: BTreeMap<String, Acc>,
    order: Vec<String>,
    sink: Option<FileWriter>,
}

impl InputStats {
    /// Stats over `tokens` tokens: `rows` sampled input rows (all tokens
    /// when fewer), seeded by `seed`, and XᵀX when `gram`.
    pub fn new(tokens: usize, rows: usize, seed: u64, gram: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut picks = sample(&mut rng, tokens, rows.min(tokens)).into_vec();
        picks.sort_unstable();
        InputStats {
            picks,
            gram,
            accs: BTreeMap::new(),
            order: Vec::new(),
            sink: None,
        }
    }

    /// [`InputStats::new`] writing each layer's tensors into `sink` (planned
    /// with [`InputStats::plan`]) as the layer finishes.
    pub fn streaming(tokens: usize, rows: usize, seed: u64, gram: bool, sink: FileWriter) -> Self {
        InputStats {
            sink: Some(sink),
            ..InputStats::new(tokens, rows, seed, gram)
        }
    }

    /// The tensors a calibration file of `cfg` over `tokens` tokens holds,
    /// in the order they are written (layer by layer, weights as
    /// [`LINEARS`] lists them).
    pub fn plan(cfg: &ModelConfig, tokens: usize, rows: usize, gram: bool) -> Vec<OutputTensor> {
        let n = rows.min(tokens);
        let mut v = Vec::new();
        for i in 0..cfg.layers {
            for lin in LINEARS {
                let inn = match lin {
                    "self_attn.o_proj" => cfg.heads * cfg.head_dim,
                    "mlp.down_proj" => cfg.intermediate,
                    _ => cfg.hidden,
                };
                let w = layer_name(i, &format!("{lin}.weight"));
                let t = |suffix: &str, dtype, shape| OutputTensor {
                    name: format!("{w}.{suffix}"),
                    dtype,
                    shape,
                };
                v.push(t("input_norm", DType::F32, vec![inn]));
                v.push(t("inputs", DType::BF16, vec![n, inn]));
                if gram {
                    v.push(t("input_gram", DType::F32, vec![inn, inn]));
                }
            }
        }
        v
    }

    /// XᵀX of `weight`'s inputs over the tokens seen so far in the current
    /// layer (before [`Capture::layer_done`] writes and drops it).
    pub fn gram(&self, weight: &str) -> Option<&[f32]> {
        self.accs
            .values()
            .find(|a| a.names.iter().any(|n| n == weight))
            .and_then(|a| a.gram.as_deref())
    }

    /// Completes the file of a streaming collection.
    pub fn finish(mut self) -> Result<()> {
        match self.sink.take() {
            Some(w) => w.finish(),
            None => Ok(()),
        }
    }

    /// The calibration tensors collected so far, in the order the layers
    /// were reached: `<weight>.input_norm` [in] f32, `<weight>.inputs`
    /// [rows, in] bf16, and with XᵀX `<weight>.input_gram` [in, in] f32,
    /// for every weight.
    pub fn tensors(&self) -> Result<Vec<(String, TensorBuf)>> {
        let mut out = Vec::new();
        for key in &self.order {
            let a = &self.accs[key];
            let norm: Vec<f32> = a.sum_sq.iter().map(|&s| s.sqrt() as f32).collect();
            let norm = TensorBuf::from_f32(DType::F32, vec![a.inn], &norm)?;
            let n = a.rows.len() / a.inn.max(1);
            let rows = TensorBuf::from_f32(DType::BF16, vec![n, a.inn], &a.rows)?;
            let gram = a
                .gram
                .as_ref()
                .map(|g| TensorBuf::from_f32(DType::F32, vec![a.inn, a.inn], g))
                .transpose()?;
            for name in &a.names {
                out.push((format!("{name}.input_norm"), norm.clone()));
                out.push((format!("{name}.inputs"), rows.clone()));
                if let Some(g) = &gram {
                    out.push((format!("{name}.input_gram"), g.clone()));
                }
            }
        }
        Ok(out)
    }
}

impl Capture for InputStats {
    fn layer_done(&mut self, _layer: usize) -> Result<()> {
        if self.sink.is_none() {
            return Ok(());
        }
        let tensors = self.tensors()?;
        self.accs.clear();
        self.order.clear();
        let sink = self.sink.as_mut().expect("checked");
        for (name, t) in &tensors {
            sink.write_tensor(name, &t.data)?;
        }
        Ok(())
    }

    fn inputs(&mut self, names: &[String], x: &[f32], rows: usize) -> Result<()> {
        let inn = x.len() / rows.max(1);
        let key = names[0].clone();
        if !self.accs.contains_key(&key) {
            self.order.push(key.clone());
        }
        let want_gram = self.gram;
        let a = self.accs.entry(key).or_insert_with(|| Acc {
            names: names.to_vec(),
            inn,
            seen: 0,
            sum_sq: vec![0.0; inn],
            gram: want_gram.then(|| vec![0.0; inn * inn]),
            rows: Vec::new(),
        });
        for row in x.chunks_exact(inn) {
            for (s, &v) in a.sum_sq.iter_mut().zip(row) {
                *s += (v as f64) * (v as f64);
            }
        }
        if let Some(g) = &mut a.gram {
            // G += XᵀX: Xᵀ [in, rows] is X read with swapped strides.
            // SAFETY: x is [rows, in] row-major; g is [in, in].
            unsafe {
                matrixmultiply::sgemm(
                    inn,
                    rows,
                    inn,
                    1.0,
                    x.as_ptr(),
                    1,
                    inn as isize,
                    x.as_ptr(),
                    inn as isize,
                    1,
                    1.0,
                    g.as_mut_ptr(),
                    inn as isize,
                    1,
                )
            };
        }
        let (lo, hi) = (a.seen, a.seen + rows);
        let first = self.picks.partition_point(|&p| p < lo);
        for &p in self.picks[first..].iter().take_while(|&&p| p < hi) {
            a.rows
                .extend_from_slice(&x[(p - lo) * inn..(p - lo + 1) * inn]);
        }
        a.seen = hi;
        Ok(())
    }
}
