//! What llama.cpp expects of a Llama-family model in GGUF: the
//! architecture name and hyperparameter keys, the tensor names, the row
//! order of q and k, and extra tensors (Llama 3's RoPE frequency factors).
//!
//! * Llama and Mistral are llama.cpp's `llama` architecture, whose RoPE
//!   rotates adjacent pairs (x₀,x₁), (x₂,x₃), … of each head, while the
//!   Hugging Face checkpoints rotate the halves (xᵢ, xᵢ₊d/2). So the rows of
//!   q and k (weights and biases) are reordered per head: row 2j + i of a
//!   head in GGUF is row i·d/2 + j of it in the checkpoint (i ∈ {0, 1}).
//!   Rows are whole blocks, so the reorder can run on quantized rows.
//! * Qwen2 and Qwen3 are `qwen2` and `qwen3`, which rotate halves as the
//!   checkpoints do: rows are kept.
//! * Llama 3's `llama3` RoPE scaling is a tensor, `rope_freqs.weight`
//!   [head_dim / 2] f32, each frequency's divisor; linear scaling is the
//!   `rope.scaling.type` / `rope.scaling.factor` keys.

use super::{GgmlType, Value};
use crate::model::config::{Family, ModelConfig, RopeScaling};

/// llama.cpp's architecture name for `family`.
pub fn arch(family: Family) -> &'static str {
    match family {
        Family::Llama | Family::Mistral => "llama",
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
    }
}

/// Pairs of (Hugging Face suffix within a decoder layer, GGUF suffix).
const LAYER_NAMES: [(&str, &str); 16] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    // Never written: the checkpoint's cached RoPE table.
    ("self_attn.rotary_emb.inv_freq", ""),
];

/// Pairs of (Hugging Face name, GGUF name) outside the decoder layers.
const MODEL_NAMES: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// The GGUF name of checkpoint tensor `hf`: `Some("")` for a tensor
/// llama.cpp does not take, `None` for one shears cannot place.
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((_, g)) = MODEL_NAMES.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, g) = LAYER_NAMES.iter().find(|(h, _)| *h == suffix)?;
    Some(match g.is_empty() {
        true => String::new(),
        false => format!("blk.{layer}.{g}"),
    })
}

/// The checkpoint name of GGUF tensor `g` (the inverse of [`gguf_name`]).
pub fn hf_name(g: &str) -> Option<String> {
    if let Some((h, _)) = MODEL_NAMES.iter().find(|(_, n)| *n == g) {
        return Some(h.to_string());
    }
    let rest = g.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (h, _) = LAYER_NAMES
        .iter()
        .find(|(_, n)| !n.is_empty() && *n == suffix)?;
    Some(format!("model.layers.{layer}.{h}"))
}

/// The number of heads whose rows of GGUF tensor `g` are reordered for
/// llama.cpp's RoPE (q: heads, k: KV heads), or `None` when rows are kept.
pub fn rope_heads(cfg: &ModelConfig, g: &str) -> Option<usize> {
    if arch(cfg.family) != "llama" {
        return None;
    }
    let suffix = g.strip_prefix("blk.")?.split_once('.')?.1;
    match suffix {
        "attn_q.weight" | "attn_q.bias" => Some(cfg.heads),
        "attn_k.weight" | "attn_k.bias" => Some(cfg.kv_heads),
        _ => None,
    }
}

/// The checkpoint row that GGUF row `r` of a tensor of `rows` rows in
/// `heads` heads holds (see the module docs).
pub fn source_row(r: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, w) = (r / d, r % d);
    let (j, i) = (w / 2, w % 2);
    h * d + i * (d / 2) + j
}

/// Rows of `bytes` (`row` bytes each) in GGUF order: row r is checkpoint
/// row [`source_row`]`(r)`.
pub fn to_gguf_rows(bytes: &[u8], row: usize, heads: usize) -> Vec<u8> {
    let rows = bytes.len() / row.max(1);
    let mut out = Vec::with_capacity(bytes.len());
    for r in 0..rows {
        let s = source_row(r, rows, heads);
        out.extend_from_slice(&bytes[s * row..(s + 1) * row]);
    }
    out
}

/// Rows of `bytes` back in checkpoint order (the inverse of
/// [`to_gguf_rows`]).
pub fn from_gguf_rows(bytes: &[u8], row: usize, heads: usize) -> Vec<u8> {
    let rows = bytes.len() / row.max(1);
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        let s = source_row(r, rows, heads);
        out[s * row..(s + 1) * row].copy_from_slice(&bytes[r * row..(r + 1) * row]);
    }
    out
}

/// Llama 3's RoPE frequency divisors (`rope_freqs.weight`), when the model
/// scales RoPE that way.
pub fn rope_freqs(cfg: &ModelConfig) -> Option<Vec<f32>> {
    if !matches!(cfg.rope_scaling, RopeScaling::Llama3 { .. }) {
        return None;
    }
    let plain = ModelConfig {
        rope_scaling: RopeScaling::None,
        ..cfg.clone()
    };
    let base = crate::model::rope::inv_freq(&plain);
    let scaled = crate::model::rope::inv_freq(cfg);
    Some(base.iter().zip(&scaled).map(|(b, s)| b / s).collect())
}

/// llama.cpp's file type number for a file whose weights are `ty`.
pub fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        // llama.cpp has no all-Q4_K file type; its nearest is Q4_K_S.
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q4_K => 14,
        GgmlType::Q5_K => 16,
        GgmlType::Q6_K => 18,
        GgmlType::BF16 => 32,
    }
}

/// The `general.*` and architecture keys of `cfg` (`file_type`:
/// llama.cpp's number for its weights' types); `context` is config.json's
/// `max_position_embeddings`.
pub fn metadata(
    cfg: &ModelConfig,
    name: &str,
    context: usize,
    file_type: u32,
) -> Vec<(String, Value)> {
    let a = arch(cfg.family);
    let k = |s: &str| format!("{a}.{s}");
    let u = |v: usize| Value::U32(v as u32);
    let mut m = vec![
        ("general.architecture".into(), Value::Str(a.into())),
        ("general.name".into(), Value::Str(name.into())),
        ("general.file_type".into(), Value::U32(file_type)),
        ("general.quantization_version".into(), Value::U32(2)),
        (k("vocab_size"), u(cfg.vocab)),
        (k("context_length"), u(context)),
        (k("embedding_length"), u(cfg.hidden)),
        (k("block_count"), u(cfg.layers)),
        (k("feed_forward_length"), u(cfg.intermediate)),
        (k("attention.head_count"), u(cfg.heads)),
        (k("attention.head_count_kv"), u(cfg.kv_heads)),
        (k("attention.key_length"), u(cfg.head_dim)),
        (k("attention.value_length"), u(cfg.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_eps),
        ),
        (k("rope.dimension_count"), u(cfg.head_dim)),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta)),
    ];
    if let RopeScaling::Linear { factor } = cfg.rope_scaling {
        m.push((k("rope.scaling.type"), Value::Str("linear".into())));
        m.push((k("rope.scaling.factor"), Value::F32(factor)));
    }
    m
}
