//! A decoder-only model's `config.json`, read for the families shears runs:
//! Llama, Mistral, Qwen2 and Qwen3. Both config styles are read: the older
//! one with `rope_theta` / `rope_scaling` at the top level and transformers
//! 5's `rope_parameters`. Anything shears cannot run exactly (another
//! architecture, another RoPE type, another activation, sliding-window or
//! biased MLP layers it does not implement) is refused here, before any
//! work, with one line naming the field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The model families shears runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    /// Biases on q, k and v.
    Qwen2,
    /// RMSNorm on each head's q and k.
    Qwen3,
}

impl Family {
    /// The `architectures` names, in the order they are tried.
    pub const NAMES: [(&'static str, Family); 4] = [
        ("LlamaForCausalLM", Family::Llama),
        ("MistralForCausalLM", Family::Mistral),
        ("Qwen2ForCausalLM", Family::Qwen2),
        ("Qwen3ForCausalLM", Family::Qwen3),
    ];

    /// The `architectures` name of the family.
    pub fn name(self) -> &'static str {
        Family::NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .expect("every family is named")
    }
}

/// How RoPE frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `default`: none.
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3's `llama3`: low frequencies divided by `factor`, high ones
    /// kept, the band between blended.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// What a forward pass needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// The output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q, k and v have biases (Qwen2 always; Llama with `attention_bias`,
    /// which also gives o one).
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Mistral's sliding window: tokens further back are not attended to.
    /// Sequences no longer than it are unaffected; longer ones are refused.
    pub sliding_window: Option<usize>,
    /// BOS id, when the config names one.
    pub bos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Reads `config.json` of a model folder (`path` names it in messages).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&value).map_err(|reason| Error::format(path, reason))
    }

    /// Reads a parsed config; the error is the reason alone (no file).
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let o = v.as_object().ok_or("the config is not a JSON object")?;
        let family = family(o)?;
        let hidden = count(o, "hidden_size")?;
        let heads = count(o, "num_attention_heads")?;
        let kv_heads = optional_count(o, "num_key_value_heads")?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            ));
        }
        let head_dim = match optional_count(o, "head_dim")? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(format!(
                    "head_dim is missing and hidden_size {hidden} is not a multiple of \
                     num_attention_heads {heads}"
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(format!("head_dim {head_dim} is odd; RoPE needs pairs"));
        }
        let act = o
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(format!(
                "hidden_act '{act}' is not supported (shears runs SwiGLU with silu)"
            ));
        }
        if flag(o, "mlp_bias")? {
            return Err("mlp_bias true is not supported".into());
        }
        if let Some(types) = o.get("layer_types").and_then(Value::as_array) {
            if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
                return Err(format!(
                    "layer_types holds {t}; shears runs full attention only"
                ));
            }
        }
        let attention_bias = flag(o, "attention_bias")?;
        let (rope_theta, rope_scaling) = rope(o)?;
        Ok(ModelConfig {
            family,
            hidden,
            intermediate: count(o, "intermediate_size")?,
            layers: count(o, "num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: count(o, "vocab_size")?,
            rms_eps: number(o, "rms_norm_eps")? as f32,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: flag(o, "tie_word_embeddings")?,
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family != Family::Qwen2 && attention_bias,
            sliding_window: sliding_window(o, family)?,
            bos_token_id: o
                .get("bos_token_id")
                .and_then(Value::as_u64)
                .map(|b| b as u32),
        })
    }

    /// FLOPs of one decoder layer over `tokens` tokens in sequences of
    /// `seq_len`: 2 per multiply-add of the seven products, and of QKᵀ and
    /// PV over the causal half attention needs (norms, RoPE and softmax
    /// left out: a few per value).
    pub fn layer_flops(&self, tokens: usize, seq_len: usize) -> f64 {
        let (h, q, kv) = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
        );
        let linear = (h * q + 2 * h * kv + q * h + 3 * h * self.intermediate) as f64;
        let attention = 2.0 * (self.heads * self.head_dim) as f64 * (seq_len + 1) as f64 / 2.0;
        2.0 * (linear + attention) * tokens as f64
    }
}

fn family(o: &Map<String, Value>) -> std::result::Result<Family, String> {
    let archs = o
        .get("architectures")
        .and_then(Value::as_array)
        .ok_or("architectures is missing")?;
    let name = archs
        .first()
        .and_then(Value::as_str)
        .ok_or("architectures is empty")?;
    Family::NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let known: Vec<&str> = Family::NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "architecture '{name}' is not supported (shears runs {})",
                known.join(", ")
            )
        })
}

fn number(o: &Map<String, Value>, key: &str) -> std::result::Result<f64, String> {
    match o.get(key) {
        None | Some(Value::Null) => Err(format!("{key} is missing")),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{key} is {v}, not a number")),
    }
}

fn optional_count(o: &Map<String, Value>, key: &str) -> std::result::Result<Option<usize>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 && n <= 1 << 24 => Ok(Some(n as usize)),
            _ => Err(format!("{key} is {v}, not a positive count")),
        },
    }
}

fn count(o: &Map<String, Value>, key: &str) -> std::result::Result<usize, String> {
    optional_count(o, key)?.ok_or_else(|| format!("{key} is missing"))
}

fn flag(o: &Map<String, Value>, key: &str) -> std::result::Result<bool, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("{key} is {v}, not true or false")),
    }
}

/// rope_theta and the scaling, from `rope_parameters` (transformers 5) or
/// the top-level `rope_theta` / `rope_scaling`.
fn rope(o: &Map<String, Value>) -> std::result::Result<(f32, RopeScaling), String> {
    let (params, prefix) = match o.get("rope_parameters") {
        Some(Value::Object(p)) => (Some(p), "rope_parameters."),
        Some(Value::Null) | None => match o.get("rope_scaling") {
            Some(Value::Object(p)) => (Some(p), "rope_scaling."),
            Some(Value::Null) | None => (None, ""),
            Some(v) => return Err(format!("rope_scaling is {v}, not an object")),
        },
        Some(v) => return Err(format!("rope_parameters is {v}, not an object")),
    };
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(_) => {
            number(params.expect("present"), "rope_theta").map_err(|e| format!("{prefix}{e}"))?
        }
        // transformers' default when a config names none.
        None => match o.get("rope_theta") {
            None | Some(Value::Null) => 10_000.0,
            Some(_) => number(o, "rope_theta")?,
        },
    };
    let Some(p) = params else {
        return Ok((theta as f32, RopeScaling::None));
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| {
        number(p, key)
            .map(|x| x as f32)
            .map_err(|e| format!("{prefix}{e}"))
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(format!(
            "{prefix}rope_type '{other}' is not supported (shears runs default, linear and llama3)"
        ))
        }
    };
    Ok((theta as f32, scaling))
}

fn sliding_window(
    o: &Map<String, Value>,
    family: Family,
) -> std::result::Result<Option<usize>, String> {
    // Qwen2/3 configs carry a window that only `use_sliding_window` enables.
    if matches!(family, Family::Qwen2 | Family::Qwen3) && !flag(o, "use_sliding_window")? {
        return Ok(None);
    }
    optional_count(o, "sliding_window")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        })
    }

    #[test]
    fn reads_both_rope_styles() {
        let c = ModelConfig::from_json(&llama()).unwrap();
        assert_eq!((c.head_dim, c.kv_heads, c.rope_theta), (16, 2, 10000.0));
        assert_eq!(c.rope_scaling, RopeScaling::None);
        let mut v = llama();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = json!({"rope_theta": 1e6, "rope_type": "linear", "factor": 2.0});
        let c = ModelConfig::from_json(&v).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    }

    #[test]
    fn refuses_by_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"architectures": ["GPT2LMHeadModel"]}),
                "architecture 'GPT2LMHeadModel'",
            ),
            (
                {
                    let mut v = llama();
                    v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
                    v
                },
                "rope_scaling.rope_type 'yarn'",
            ),
            (
                {
                    let mut v = llama();
                    v.as_object_mut().unwrap().remove("hidden_size");
                    v
                },
                "hidden_size is missing",
            ),
            (
                {
                    let mut v = llama();
                    v["hidden_act"] = json!("gelu");
                    v
                },
                "hidden_act 'gelu'",
            ),
            (
                {
                    let mut v = llama();
                    v["num_key_value_heads"] = json!(3);
                    v
                },
                "not a multiple of num_key_value_heads 3",
            ),
            (
                {
                    let mut v = llama();
                    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
                    v
                },
                "rope_scaling.low_freq_factor is missing",
            ),
        ];
        for (v, want) in cases {
            let e = ModelConfig::from_json(&v).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
