//! A Hugging Face folder's `config.json`, `tokenizer.json` and
//! `tokenizer_config.json` from the keys of a GGUF file that shears did not
//! write (one from `convert_hf_to_gguf.py`, or a package that ships one), so
//! `shears decompress` turns such a file into a folder that every other
//! command reads.
//!
//! * The config comes from the architecture's hyperparameter keys (the
//!   inverse of [`super::llama::metadata`]): sizes, head counts, head
//!   width, RMS epsilon, RoPE base and linear scaling, context length, and
//!   tied embeddings when the file has no `output.weight`. What a config
//!   cannot say from these keys is refused: Llama 3's RoPE scaling (a
//!   `rope_freqs` tensor of divisors; its four parameters are not in the
//!   file), per-layer head counts, RoPE over part of a head.
//! * The tokenizer is rebuilt for llama.cpp's byte-level BPE vocabulary
//!   ("gpt2"): tokens by id (control tokens as special added tokens,
//!   user-defined ones as plain added tokens, `[PAD…]` fillers left out),
//!   the merges in order, and the pre-tokenizer llama.cpp's `pre` name
//!   stands for (the same rules [`super::vocab`] names when writing).
//!   SentencePiece vocabularies ("llama") keep only scores, not merges, and
//!   other names are unknown rules: for those the folder gets no tokenizer
//!   and the reason is said.

use serde_json::{json, Map, Value as Json};

use super::vocab::{CONTROL, LLAMA3_SPLIT, QWEN2_SPLIT, UNUSED, USER_DEFINED};
use super::Value;

/// Metadata keys of a GGUF file, looked up by name.
pub struct Keys<'a>(pub &'a [(String, Value)]);

impl<'a> Keys<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer key (any integer type); Err when present but not one.
    fn count(&self, key: &str) -> Result<Option<usize>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::U32(v)) => Ok(Some(*v as usize)),
            Some(Value::I32(v)) if *v >= 0 => Ok(Some(*v as usize)),
            Some(Value::U64(v)) => Ok(Some(*v as usize)),
            Some(Value::Other(v)) if *v >= 0.0 && v.fract() == 0.0 => Ok(Some(*v as usize)),
            Some(Value::ArrI32(_)) | Some(Value::ArrOther(..)) => Err(format!(
                "{key} is an array (one value per layer); shears reads one value"
            )),
            Some(other) => Err(format!("{key} is {}, not a count", other.show())),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::Other(v)) => Ok(Some(*v)),
            Some(Value::U32(v)) => Ok(Some(*v as f64)),
            Some(other) => Err(format!("{key} is {}, not a number", other.show())),
        }
    }

    fn flag(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// The Hugging Face class and `model_type` of llama.cpp's architecture.
fn hf_arch(arch: &str) -> Option<(&'static str, &'static str)> {
    match arch {
        "llama" => Some(("LlamaForCausalLM", "llama")),
        "qwen2" => Some(("Qwen2ForCausalLM", "qwen2")),
        "qwen3" => Some(("Qwen3ForCausalLM", "qwen3")),
        _ => None,
    }
}

/// The tensors of the file that decide parts of the config.
pub struct TensorFacts {
    /// Rows of `token_embd.weight` (the vocabulary when no key says it).
    pub embedding_rows: Option<usize>,
    /// Whether `output.weight` is present (untied head).
    pub has_output: bool,
    /// Whether layer 0 has q/k/v biases.
    pub qkv_bias: bool,
    /// Whether the file carries `rope_freqs.weight` (Llama 3 scaling).
    pub rope_freqs: bool,
}

/// config.json for the file's keys; Err says what cannot be expressed.
pub fn config(keys: &Keys, facts: &TensorFacts) -> Result<Json, String> {
    let arch = keys.text("general.architecture").unwrap_or("");
    let (class, model_type) = hf_arch(arch).ok_or_else(|| {
        format!("architecture {arch:?}; shears reads llama, qwen2 and qwen3 GGUF files")
    })?;
    let k = |s: &str| format!("{arch}.{s}");
    let need = |s: &str| -> Result<usize, String> {
        keys.count(&k(s))?.ok_or_else(|| format!("no {} key", k(s)))
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let head_dim = match keys.count(&k("attention.key_length"))? {
        Some(d) => d,
        None if heads > 0 && hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(format!(
                "{heads} heads do not split the embedding of {hidden}"
            ))
        }
    };
    let kv_heads = keys.count(&k("attention.head_count_kv"))?.unwrap_or(heads);
    if let Some(v) = keys.count(&k("attention.value_length"))? {
        if v != head_dim {
            return Err(format!(
                "value heads of {v} beside key heads of {head_dim}; shears runs equal widths"
            ));
        }
    }
    if let Some(rot) = keys.count(&k("rope.dimension_count"))? {
        if rot != head_dim {
            return Err(format!(
                "RoPE over {rot} of each head's {head_dim} dimensions; shears rotates whole heads"
            ));
        }
    }
    if facts.rope_freqs {
        return Err(
            "a rope_freqs tensor (Llama 3 RoPE scaling), whose parameters config.json needs are \
             not in the file"
                .into(),
        );
    }
    let vocab = match keys.count(&k("vocab_size"))? {
        Some(v) => v,
        None => facts
            .embedding_rows
            .ok_or("no vocab_size key and no token_embd.weight")?,
    };
    let mut o = Map::new();
    o.insert("architectures".into(), json!([class]));
    o.insert("model_type".into(), json!(model_type));
    o.insert("hidden_size".into(), json!(hidden));
    o.insert(
        "intermediate_size".into(),
        json!(need("feed_forward_length")?),
    );
    o.insert("num_hidden_layers".into(), json!(need("block_count")?));
    o.insert("num_attention_heads".into(), json!(heads));
    o.insert("num_key_value_heads".into(), json!(kv_heads));
    o.insert("head_dim".into(), json!(head_dim));
    o.insert("hidden_act".into(), json!("silu"));
    o.insert("vocab_size".into(), json!(vocab));
    o.insert(
        "max_position_embeddings".into(),
        json!(keys.count(&k("context_length"))?.unwrap_or(2048)),
    );
    let eps = keys
        .number(&k("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| format!("no {} key", k("attention.layer_norm_rms_epsilon")))?;
    // f32 in the file: its shortest decimal, not the widened f64's digits.
    o.insert("rms_norm_eps".into(), json!(short(eps)));
    let theta = keys.number(&k("rope.freq_base"))?.unwrap_or(10000.0);
    o.insert("rope_theta".into(), json!(short(theta)));
    match keys.text(&k("rope.scaling.type")) {
        None | Some("none") => {}
        Some("linear") => {
            let factor = keys.number(&k("rope.scaling.factor"))?.ok_or_else(|| {
                format!("linear RoPE scaling without {}", k("rope.scaling.factor"))
            })?;
            o.insert(
                "rope_scaling".into(),
                json!({"rope_type": "linear", "factor": short(factor)}),
            );
        }
        Some(other) => {
            return Err(format!(
                "RoPE scaling {other:?}; shears runs linear scaling"
            ))
        }
    }
    o.insert("tie_word_embeddings".into(), json!(!facts.has_output));
    if arch == "llama" {
        o.insert("attention_bias".into(), json!(facts.qkv_bias));
    }
    if arch == "qwen2" || arch == "qwen3" {
        o.insert("use_sliding_window".into(), json!(false));
    }
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = keys.count(key)? {
            o.insert(name.into(), json!(id));
        }
    }
    Ok(Json::Object(o))
}

/// The decimal an f32 widened to f64 was written from.
fn short(v: f64) -> f64 {
    (v as f32).to_string().parse().unwrap_or(v)
}

/// The pre-tokenizer llama.cpp's `pre` name stands for, as tokenizer.json
/// writes it.
pub fn pre_tokenizer(pre: &str) -> Option<Json> {
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        "gpt-2" => byte_level(true),
        "llama-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        "qwen2" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]})
        }
        // Digits one at a time, then GPT-2's split: llama.cpp applies the
        // same two patterns for all of these names.
        "smollm" | "starcoder" | "refact" | "codeshell" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        _ => return None,
    })
}

/// tokenizer.json and tokenizer_config.json for the file's vocabulary, or
/// the reason there is none.
pub fn tokenizer(keys: &Keys, context: usize) -> Result<(Json, Json), String> {
    let model = keys
        .text("tokenizer.ggml.model")
        .ok_or("no tokenizer.ggml.model key")?;
    if model != "gpt2" {
        return Err(format!(
            "a {model:?} vocabulary; shears rebuilds tokenizer.json from byte-level BPE (\"gpt2\") \
             vocabularies only"
        ));
    }
    let pre_name = keys.text("tokenizer.ggml.pre").unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        format!(
            "pre-tokenizer {pre_name:?}; shears knows gpt-2, llama-bpe, qwen2 and smollm \
             (starcoder, refact, codeshell)"
        )
    })?;
    let Some(Value::ArrStr(tokens)) = keys.get("tokenizer.ggml.tokens") else {
        return Err("no tokenizer.ggml.tokens".into());
    };
    let types: Vec<i32> = match keys.get("tokenizer.ggml.token_type") {
        Some(Value::ArrI32(t)) if t.len() == tokens.len() => t.clone(),
        Some(_) => return Err("tokenizer.ggml.token_type does not list every token".into()),
        None => vec![1; tokens.len()],
    };
    let merges = match keys.get("tokenizer.ggml.merges") {
        Some(Value::ArrStr(m)) => m.clone(),
        _ => return Err("no tokenizer.ggml.merges".into()),
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if ty == UNUSED {
            continue;
        }
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == CONTROL
            }));
        }
        vocab.entry(tok.clone()).or_insert(json!(id));
    }
    let name = |key: &str| -> Result<Option<&str>, String> {
        Ok(keys
            .count(key)?
            .and_then(|id| tokens.get(id))
            .map(String::as_str))
    };
    let bos = name("tokenizer.ggml.bos_token_id")?;
    let add_bos = keys.flag("tokenizer.ggml.add_bos_token").unwrap_or(false) && bos.is_some();
    let post = match (add_bos, bos) {
        (true, Some(b)) => {
            let id = keys.count("tokenizer.ggml.bos_token_id")?;
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {b: {"id": b, "ids": [id], "tokens": [b]}}
            })
        }
        _ => Json::Null,
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false,
            // Llama 3's tokenizer takes a word that is a token whole
            // (llama.cpp's ignore_merges for "llama-bpe").
            "ignore_merges": pre_name == "llama-bpe",
            "vocab": vocab,
            "merges": merges
        }
    });
    let mut cfg = Map::new();
    cfg.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    cfg.insert("add_bos_token".into(), json!(add_bos));
    cfg.insert("model_max_length".into(), json!(context));
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
    ] {
        if let Some(n) = name(key)? {
            cfg.insert(field.into(), json!(n));
        }
    }
    if let Some(t) = keys.text("tokenizer.chat_template") {
        cfg.insert("chat_template".into(), json!(t));
    }
    Ok((tokenizer, Json::Object(cfg)))
}
