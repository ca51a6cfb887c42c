//! Calibration from real activations: while the model runs over the
//! calibration tokens, each decoder linear layer's inputs are reduced to
//! what activation-aware methods read (see [`crate::calibration`] for the
//! file): ‖x_j‖₂ over all tokens (Wanda), a seeded uniform sample of input
//! rows (validation, layer-wise distillation) and, when asked, XᵀX over all
//! tokens (GPTQ, SparseGPT), summed by the hessian family of the backend
//! the model runs on ([`Hessian::gram`]; on a GPU the sums stay on the
//! device until the layer is done). Weights that share an input (q/k/v,
//! gate/up) are reduced once and written under each weight's name.

use std::collections::BTreeMap;

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::ModelConfig;
use super::runner::Capture;
use super::weights::{layer_name, LINEARS};
use crate::checkpoint::{FileWriter, OutputTensor};
use crate::reference::gram::GramSum;
use crate::reference::hessian::Hessian;
use crate::{DType, Error, Result, TensorBuf};

/// XᵀX of one input: being summed, or done.
enum Gram<'a> {
    Summing(Box<dyn GramSum + 'a>),
    Done(Vec<f32>),
}

/// What is kept of one input.
struct Acc<'a> {
    names: Vec<String>,
    inn: usize,
    /// Tokens seen so far (the next chunk's first token index).
    seen: usize,
    sum_sq: Vec<f64>,
    gram: Option<Gram<'a>>,
    rows: Vec<f32>,
}

/// A [`Capture`] that reduces every linear layer's inputs; see the module
/// docs. Rows are sampled at the same token positions for every layer.
/// With a writer, each decoder layer's tensors are written as the layer
/// finishes and dropped, so memory holds one layer's statistics.
pub struct InputStats<'a> {
    picks: Vec<usize>,
    /// The family that sums XᵀX, when it is wanted.
    gram: Option<&'a dyn Hessian>,
    /// Keyed by the first weight name of the input.
    accs: BTreeMap<String, Acc<'a>>,
    order: Vec<String>,
    sink: Option<FileWriter>,
}

impl<'a> InputStats<'a> {
    /// Stats over `tokens` tokens: `rows` sampled input rows (all tokens
    /// when fewer), seeded by `seed`, and XᵀX summed by `gram` when given.
    pub fn new(tokens: usize, rows: usize, seed: u64, gram: Option<&'a dyn Hessian>) -> Self {
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
    pub fn streaming(
        tokens: usize,
        rows: usize,
        seed: u64,
        gram: Option<&'a dyn Hessian>,
        sink: FileWriter,
    ) -> Self {
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

    /// Completes every Gram sum of the current layer (reads them back from
    /// a device); [`InputStats::gram`] and the written tensors need it.
    pub fn settle(&mut self) -> Result<()> {
        for a in self.accs.values_mut() {
            if let Some(Gram::Summing(_)) = a.gram {
                let Some(Gram::Summing(sum)) = a.gram.take() else {
                    unreachable!("matched above")
                };
                a.gram = Some(Gram::Done(sum.finish()?));
            }
        }
        Ok(())
    }

    /// XᵀX of `weight`'s inputs over the tokens seen so far in the current
    /// layer (before [`Capture::layer_done`] writes and drops it), once
    /// [`InputStats::settle`]d.
    pub fn gram(&self, weight: &str) -> Option<&[f32]> {
        self.accs
            .values()
            .find(|a| a.names.iter().any(|n| n == weight))
            .and_then(|a| match &a.gram {
                Some(Gram::Done(g)) => Some(g.as_slice()),
                _ => None,
            })
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
    pub fn tensors(&mut self) -> Result<Vec<(String, TensorBuf)>> {
        self.settle()?;
        let mut out = Vec::new();
        for key in &self.order {
            let a = &self.accs[key];
            let norm: Vec<f32> = a.sum_sq.iter().map(|&s| s.sqrt() as f32).collect();
            let norm = TensorBuf::from_f32(DType::F32, vec![a.inn], &norm)?;
            let n = a.rows.len() / a.inn.max(1);
            let rows = TensorBuf::from_f32(DType::BF16, vec![n, a.inn], &a.rows)?;
            let gram = match &a.gram {
                Some(Gram::Done(g)) => {
                    Some(TensorBuf::from_f32(DType::F32, vec![a.inn, a.inn], g)?)
                }
                Some(Gram::Summing(_)) => {
                    return Err(Error::Invalid("a Gram sum was left unsettled".into()))
                }
                None => None,
            };
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

impl Capture for InputStats<'_> {
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
            let gram = match self.gram {
                Some(h) => Some(Gram::Summing(h.gram(inn)?)),
                None => None,
            };
            let acc = Acc {
                names: names.to_vec(),
                inn,
                seen: 0,
                sum_sq: vec![0.0; inn],
                gram,
                rows: Vec::new(),
            };
            self.accs.insert(key.clone(), acc);
        }
        let a = self.accs.get_mut(&key).expect("inserted above");
        for row in x.chunks_exact(inn) {
            for (s, &v) in a.sum_sq.iter_mut().zip(row) {
                *s += (v as f64) * (v as f64);
            }
        }
        match &mut a.gram {
            Some(Gram::Summing(g)) => g.add(x, rows)?,
            Some(Gram::Done(_)) => {
                return Err(Error::Invalid(format!(
                    "inputs of '{}' arrived after its XᵀX was settled",
                    a.names[0]
                )))
            }
            None => {}
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
