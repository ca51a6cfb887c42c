//! A model's weights as the forward pass reads them: found by their
//! Hugging Face names, checked against the config before any work, and
//! decoded to f32 one decoder layer at a time. Dense f32/f16/bf16 weights
//! and compressed-tensors layers (pack-quantized int4/int8, int-quantized
//! int8) are read alike; a quantized layer is decoded exactly as `shears
//! decompress` writes it (rounded to its scales' dtype), so a compressed
//! checkpoint and its decompressed copy run the same numbers.

use std::collections::HashMap;

use super::config::{Family, ModelConfig};
use crate::formats::compressed_tensors::ReadScheme;
use crate::formats::ct_reader::{dense_bytes, layers, scheme_of, Layer};
use crate::reference::Reference;
use crate::{decode_f32, Checkpoint, DType, Error, Result};

/// One linear layer in f32: W [out, in] row-major and its bias.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub name: String,
    pub w: Vec<f32>,
    pub out: usize,
    pub inn: usize,
    pub bias: Option<Vec<f32>>,
}

/// One decoder layer's weights in f32.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub input_norm: Vec<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Qwen3's per-head RMSNorm weights of q and k.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_norm: Vec<f32>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl LayerWeights {
    /// The seven linear layers, in execution order.
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    /// [`LayerWeights::linears`], to change.
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

/// The weights of a checkpoint, read by name.
pub struct Weights<'c> {
    ckpt: &'c Checkpoint,
    cfg: ModelConfig,
    scheme: Option<ReadScheme>,
    quantized: HashMap<String, Layer<'c>>,
}

/// Name of decoder layer `i`'s tensor `rest`.
pub fn layer_name(i: usize, rest: &str) -> String {
    format!("model.layers.{i}.{rest}")
}

/// The decoder linear layers' names within a layer, in execution order.
pub const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl<'c> Weights<'c> {
    /// Finds every tensor the forward pass of `cfg` needs and checks its
    /// shape, so a missing or misshapen weight is refused before any work.
    pub fn open(ckpt: &'c Checkpoint, cfg: ModelConfig) -> Result<Self> {
        let scheme = scheme_of(ckpt)?;
        let mut quantized = HashMap::new();
        if let Some(rs) = &scheme {
            for l in layers(ckpt, rs)? {
                quantized.insert(format!("{}.weight", l.prefix), l);
            }
        }
        let w = Weights {
            ckpt,
            cfg,
            scheme,
            quantized,
        };
        for (name, shape) in w.expected() {
            w.check(&name, &shape)?;
        }
        Ok(w)
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Every tensor (by weight name) the forward pass reads, with its shape.
    fn expected(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.cfg;
        let (h, q, kv) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let mut v = vec![
            ("model.embed_tokens.weight".to_string(), vec![c.vocab, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !c.tie_word_embeddings {
            v.push(("lm_head.weight".to_string(), vec![c.vocab, h]));
        }
        for i in 0..c.layers {
            let mut add = |rest: &str, shape: Vec<usize>| v.push((layer_name(i, rest), shape));
            add("input_layernorm.weight", vec![h]);
            add("post_attention_layernorm.weight", vec![h]);
            add("self_attn.q_proj.weight", vec![q, h]);
            add("self_attn.k_proj.weight", vec![kv, h]);
            add("self_attn.v_proj.weight", vec![kv, h]);
            add("self_attn.o_proj.weight", vec![h, q]);
            add("mlp.gate_proj.weight", vec![c.intermediate, h]);
            add("mlp.up_proj.weight", vec![c.intermediate, h]);
            add("mlp.down_proj.weight", vec![h, c.intermediate]);
            if c.qkv_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
            }
            if c.o_bias {
                add("self_attn.o_proj.bias", vec![h]);
            }
            if c.family == Family::Qwen3 {
                add("self_attn.q_norm.weight", vec![c.head_dim]);
                add("self_attn.k_norm.weight", vec![c.head_dim]);
            }
        }
        v
    }

    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        if let Some(l) = self.quantized.get(name) {
            return if [l.out, l.inn] == shape {
                Ok(())
            } else {
                Err(Error::tensor(
                    self.ckpt.path_of(l.scale),
                    name,
                    format!(
                        "quantized as [{}, {}], the config needs {shape:?}",
                        l.out, l.inn
                    ),
                ))
            };
        }
        let Some(t) = self.ckpt.get(name) else {
            return Err(Error::format(
                &self.ckpt.root,
                format!(
                    "tensor '{name}' is missing; config.json describes a {} with these weights",
                    self.cfg.family.name()
                ),
            ));
        };
        if t.shape != shape {
            return Err(Error::tensor(
                self.ckpt.path_of(t),
                name,
                format!("shape {:?}, the config needs {shape:?}", t.shape),
            ));
        }
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::tensor(
                self.ckpt.path_of(t),
                name,
                format!(
                    "dtype {} is not a float type the forward pass reads",
                    t.dtype
                ),
            ));
        }
        Ok(())
    }

    /// A dense tensor (checked at open) in f32.
    pub fn dense(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.ckpt.get(name).expect("checked at open");
        let view = self.ckpt.view(t);
        let v = view.to_f32()?;
        view.release(0..t.nbytes());
        Ok(v)
    }

    /// A weight in f32, dense or decoded from its quantized layer.
    fn weight(&self, name: &str) -> Result<Vec<f32>> {
        let Some(l) = self.quantized.get(name) else {
            return self.dense(name);
        };
        let rs = self
            .scheme
            .as_ref()
            .expect("quantized layers have a scheme");
        let bytes = dense_bytes(self.ckpt, rs, l, &Reference)?;
        l.release(self.ckpt);
        let mut v = vec![0.0f32; l.out * l.inn];
        decode_f32(rs.dense_dtype_for(l.scale.dtype), &bytes, &mut v);
        Ok(v)
    }

    /// The linear layer `prefix` (…`.q_proj`) of shape [out, in].
    pub fn linear(&self, prefix: &str, bias: bool) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        let w = self.weight(&name)?;
        let (out, inn) = match self.quantized.get(&name) {
            Some(l) => (l.out, l.inn),
            None => {
                let s = &self.ckpt.get(&name).expect("checked at open").shape;
                (s[0], s[1])
            }
        };
        let bias = match bias {
            true => Some(self.dense(&format!("{prefix}.bias"))?),
            false => None,
        };
        Ok(Linear {
            name,
            w,
            out,
            inn,
            bias,
        })
    }

    /// Decoder layer `i`, decoded to f32.
    pub fn layer(&self, i: usize) -> Result<LayerWeights> {
        let c = &self.cfg;
        let lin = |rest: &str, bias: bool| self.linear(&layer_name(i, rest), bias);
        let qk_norm = |which: &str| -> Result<Option<Vec<f32>>> {
            match c.family {
                Family::Qwen3 => Ok(Some(self.dense(&layer_name(i, which))?)),
                _ => Ok(None),
            }
        };
        Ok(LayerWeights {
            input_norm: self.dense(&layer_name(i, "input_layernorm.weight"))?,
            q: lin("self_attn.q_proj", c.qkv_bias)?,
            k: lin("self_attn.k_proj", c.qkv_bias)?,
            v: lin("self_attn.v_proj", c.qkv_bias)?,
            o: lin("self_attn.o_proj", c.o_bias)?,
            q_norm: qk_norm("self_attn.q_norm.weight")?,
            k_norm: qk_norm("self_attn.k_norm.weight")?,
            post_norm: self.dense(&layer_name(i, "post_attention_layernorm.weight"))?,
            gate: lin("mlp.gate_proj", false)?,
            up: lin("mlp.up_proj", false)?,
            down: lin("mlp.down_proj", false)?,
        })
    }

    /// Embedding rows of `ids` ([ids.len(), hidden]); ids are checked
    /// against the vocabulary.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let t = self
            .ckpt
            .get("model.embed_tokens.weight")
            .expect("checked at open");
        let view = self.ckpt.view(t);
        let mut out = vec![0.0f32; ids.len() * h];
        for (row, &id) in out.chunks_exact_mut(h).zip(ids) {
            let id = id as usize;
            if id >= self.cfg.vocab {
                return Err(Error::Invalid(format!(
                    "token id {id} is outside the vocabulary of {} ids",
                    self.cfg.vocab
                )));
            }
            view.decode_into(id * h..(id + 1) * h, row)?;
        }
        Ok(out)
    }

    /// The output projection (the embeddings when tied), in f32.
    pub fn lm_head(&self) -> Result<Linear> {
        let name = match self.cfg.tie_word_embeddings {
            true => "model.embed_tokens.weight",
            false => "lm_head.weight",
        };
        Ok(Linear {
            name: name.into(),
            w: self.weight(name)?,
            out: self.cfg.vocab,
            inn: self.cfg.hidden,
            bias: None,
        })
    }
}
