//! Seeded generator of Llama-shaped checkpoints: the small checkpoint in
//! `assets/` and the large ones used to measure speed and memory. Values are
//! drawn per block of elements from a ChaCha8 stream keyed by (seed, tensor,
//! block), so the output is the same whatever the thread count, and a tensor
//! is generated and written piece by piece without holding it in memory.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::checkpoint::{plan_shards, CheckpointWriter, OutputTensor, WriterOptions};
use crate::{encode_f32, DType, Error, Result};

/// Shape of a Llama-style decoder checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaSpec {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub vocab: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Attention heads per key/value head (grouped-query attention).
    pub gqa: usize,
    pub dtype: DType,
    pub seed: u64,
}

impl Default for LlamaSpec {
    /// The checkpoint shipped in `assets/tiny-llama`.
    fn default() -> Self {
        LlamaSpec {
            hidden: 256,
            intermediate: 768,
            layers: 2,
            vocab: 1024,
            head_dim: 64,
            gqa: 2,
            dtype: DType::BF16,
            seed: 0,
        }
    }
}

/// What kind of values a tensor gets.
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// N(0, std²) with rare outliers twenty times larger, as trained
    /// linear layers have.
    Linear { std: f32 },
    /// 1 + N(0, 0.05²): RMSNorm gains.
    Norm,
}

impl LlamaSpec {
    fn heads(&self) -> usize {
        (self.hidden / self.head_dim).max(1)
    }

    fn kv_heads(&self) -> usize {
        (self.heads() / self.gqa.max(1)).max(1)
    }

    /// Checks the dimensions fit together.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.intermediate == 0 || self.vocab == 0 || self.head_dim == 0 {
            return Err(Error::Invalid("dimensions must be positive".into()));
        }
        if !self.hidden.is_multiple_of(self.head_dim) {
            return Err(Error::Invalid(format!(
                "hidden size {} is not a multiple of the head size {}",
                self.hidden, self.head_dim
            )));
        }
        if !self.dtype.is_float_computable() {
            return Err(Error::Invalid(format!(
                "cannot generate {}: use F32, F16 or BF16",
                self.dtype
            )));
        }
        Ok(())
    }

    fn layout(&self) -> Vec<(OutputTensor, Fill)> {
        let (h, i, v) = (self.hidden, self.intermediate, self.vocab);
        let kv = self.kv_heads() * self.head_dim;
        let t = |name: String, shape: Vec<usize>, fill| {
            (
                OutputTensor {
                    name,
                    dtype: self.dtype,
                    shape,
                },
                fill,
            )
        };
        let lin = |fan_in: usize| Fill::Linear {
            std: 1.0 / (fan_in as f32).sqrt(),
        };
        let mut out = vec![t(
            "model.embed_tokens.weight".into(),
            vec![v, h],
            Fill::Linear { std: 0.02 },
        )];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            out.push(t(
                format!("{p}.input_layernorm.weight"),
                vec![h],
                Fill::Norm,
            ));
            out.push(t(
                format!("{p}.self_attn.q_proj.weight"),
                vec![h, h],
                lin(h),
            ));
            out.push(t(
                format!("{p}.self_attn.k_proj.weight"),
                vec![kv, h],
                lin(h),
            ));
            out.push(t(
                format!("{p}.self_attn.v_proj.weight"),
                vec![kv, h],
                lin(h),
            ));
            out.push(t(
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, h],
                lin(h),
            ));
            out.push(t(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                Fill::Norm,
            ));
            out.push(t(format!("{p}.mlp.gate_proj.weight"), vec![i, h], lin(h)));
            out.push(t(format!("{p}.mlp.up_proj.weight"), vec![i, h], lin(h)));
            out.push(t(format!("{p}.mlp.down_proj.weight"), vec![h, i], lin(i)));
        }
        out.push(t("model.norm.weight".into(), vec![h], Fill::Norm));
        out.push(t("lm_head.weight".into(), vec![v, h], lin(h)));
        out
    }

    /// The tensors this spec produces, in file order.
    pub fn tensors(&self) -> Vec<OutputTensor> {
        self.layout().into_iter().map(|(t, _)| t).collect()
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|t| t.nbytes().unwrap_or(0) as u64)
            .sum()
    }

    /// A Hugging Face `config.json` describing this model.
    pub fn config_json(&self) -> serde_json::Value {
        let torch_dtype = match self.dtype {
            DType::F32 => "float32",
            DType::F16 => "float16",
            _ => "bfloat16",
        };
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads(),
            "num_key_value_heads": self.kv_heads(),
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": false,
            "torch_dtype": torch_dtype,
            "shears_generator": { "seed": self.seed },
        })
    }
}

/// Elements generated per random stream (and per write).
const GEN_BLOCK: usize = 1 << 20;

fn fill_block(fill: Fill, seed: u64, tensor: usize, block: usize, out: &mut [f32]) {
    let key = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(((tensor as u64) << 32) | block as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(key);
    for x in out.iter_mut() {
        let z: f32 = rng.sample(StandardNormal);
        *x = match fill {
            Fill::Linear { std } => {
                let outlier = rng.random::<u32>() < (u32::MAX / 4096);
                z * std * if outlier { 20.0 } else { 1.0 }
            }
            Fill::Norm => 1.0 + 0.05 * z,
        };
    }
}

/// Writes the checkpoint described by `spec` into the folder `dest`
/// (sharded at `max_shard_bytes`, 0 for one file), calling `progress` with
/// the bytes written so far.
pub fn generate(
    spec: &LlamaSpec,
    dest: &Path,
    max_shard_bytes: u64,
    force: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PathBuf> {
    spec.validate()?;
    let layout = spec.layout();
    let shards = plan_shards(spec.tensors(), max_shard_bytes)?;
    let opts = WriterOptions {
        force,
        metadata: [("format".to_string(), "pt".to_string())].into(),
        ..Default::default()
    };
    let mut writer = CheckpointWriter::create(dest, shards, opts)?;
    let esize = spec.dtype.bits() / 8;
    let mut done = 0u64;
    // A few blocks at a time: generated in parallel, written in order.
    let group = rayon::current_num_threads().max(1) * 2;
    for (ti, (tensor, fill)) in layout.iter().enumerate() {
        let n: usize = tensor.shape.iter().product();
        let blocks = n.div_ceil(GEN_BLOCK);
        let mut b0 = 0;
        while b0 < blocks {
            let b1 = (b0 + group).min(blocks);
            let bytes: Vec<Vec<u8>> = (b0..b1)
                .into_par_iter()
                .map(|b| {
                    let len = GEN_BLOCK.min(n - b * GEN_BLOCK);
                    let mut vals = vec![0.0f32; len];
                    fill_block(*fill, spec.seed, ti, b, &mut vals);
                    let mut out = vec![0u8; len * esize];
                    encode_f32(spec.dtype, &vals, &mut out);
                    out
                })
                .collect();
            for chunk in &bytes {
                writer.write(chunk)?;
                done += chunk.len() as u64;
                progress(done);
            }
            b0 = b1;
        }
    }
    let config = serde_json::to_vec_pretty(&spec.config_json()).expect("config serialises");
    writer.add_file("config.json", &config)?;
    if spec.vocab >= 256 {
        let tok = serde_json::to_vec_pretty(&byte_tokenizer()).expect("tokenizer serialises");
        writer.add_file("tokenizer.json", &tok)?;
    }
    writer.finish()
}

/// A byte-level tokenizer.json with one token per byte (ids 0–255, no
/// merges), for generated models with a vocabulary of at least 256: text
/// then runs through them (`shears eval`, `shears calibrate`). Bytes are
/// spelled as GPT-2's byte-level BPE spells them (printable Latin-1 as
/// itself, the rest from U+0100 on), so the `tokenizers` crate reads it
/// as an ordinary byte-level BPE.
pub fn byte_tokenizer() -> serde_json::Value {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256u32;
    let mut vocab = serde_json::Map::new();
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        let ch = char::from_u32(c).expect("a valid code point");
        vocab.insert(ch.to_string(), b.into());
    }
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    })
}
