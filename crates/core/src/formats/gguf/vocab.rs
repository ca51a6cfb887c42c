//! The tokenizer keys of a GGUF file, from a Hugging Face `tokenizer.json`.
//!
//! Byte-level BPE tokenizers (GPT-2's scheme, used by Llama 3, Qwen2/3 and
//! SmolLM) become llama.cpp's "gpt2" vocabulary: the tokens in id order
//! with their types (1 normal, 3 control for special added tokens, 4
//! user-defined for other added tokens, 5 unused for the ids the model's
//! vocabulary has beyond the tokenizer's, named `[PAD<id>]`), the merges as
//! "left right", the BOS/EOS/PAD ids and whether BOS is added.
//! `tokenizer.ggml.pre` names the pre-tokenizer's split rule: a plain
//! byte-level split with GPT-2's pattern is "gpt-2", Llama 3's regex split
//! "llama-bpe", Qwen2's (and Qwen3's) "qwen2", single digits before GPT-2's
//! split (SmolLM's) "smollm" — the names under which
//! llama.cpp applies the same patterns. Other pre-tokenizers are refused
//! rather than written with a rule llama.cpp would apply differently.
//!
//! SentencePiece-style BPE tokenizers (byte fallback and "▁" for spaces:
//! Llama 2, Mistral, TinyLlama) become its "llama" vocabulary: tokens with
//! SentencePiece's types (2 unknown, 6 for the `<0xNN>` bytes), scores
//! that make llama.cpp's highest-score-first merging follow the file's
//! merge order, `add_space_prefix`, and the unknown token's id. llama.cpp
//! tokenizes text with such a file as the `tokenizers` library does with
//! the tokenizer.json (scripts/gguf-tokenizer-check.py).

use std::path::Path;

use serde_json::Value as Json;

use super::Value;
use crate::{Error, Result};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
pub(super) const CONTROL: i32 = 3;
pub(super) const USER_DEFINED: i32 = 4;
pub(super) const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// A tokenizer.json section's `type`.
fn json_type(j: &Json) -> Option<&str> {
    j.get("type").and_then(|t| t.as_str())
}

/// SentencePiece's byte tokens `<0xNN>`.
fn is_byte_token(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// Whether a SentencePiece-style tokenizer puts "▁" before its text
/// (llama.cpp's `add_space_prefix`), for the two ways tokenizer.json
/// writes the "▁"-for-space scheme: a normalizer replacing " " by "▁"
/// (after prepending "▁", as Llama 2's), or a Metaspace pre-tokenizer that
/// does not split (newer files). None for anything else.
fn spm_space_prefix(tj: &Json) -> Option<bool> {
    let ty = json_type;
    let norm = tj.get("normalizer").unwrap_or(&Json::Null);
    let pre = tj.get("pre_tokenizer").unwrap_or(&Json::Null);
    let replaces_space = |j: &Json| {
        ty(j) == Some("Replace")
            && j.get("pattern")
                .and_then(|p| p.get("String"))
                .and_then(|s| s.as_str())
                == Some(" ")
            && j.get("content").and_then(|c| c.as_str()) == Some("\u{2581}")
    };
    let prepends = |j: &Json| {
        ty(j) == Some("Prepend") && j.get("prepend").and_then(|p| p.as_str()) == Some("\u{2581}")
    };
    if pre.is_null() {
        let steps: Vec<&Json> = match ty(norm) {
            Some("Sequence") => norm.get("normalizers")?.as_array()?.iter().collect(),
            Some(_) => vec![norm],
            None => return None,
        };
        return match steps.as_slice() {
            [p, r] if prepends(p) && replaces_space(r) => Some(true),
            [r] if replaces_space(r) => Some(false),
            _ => None,
        };
    }
    if norm.is_null()
        && ty(pre) == Some("Metaspace")
        && pre.get("replacement").and_then(|r| r.as_str()) == Some("\u{2581}")
        && pre.get("split").and_then(|s| s.as_bool()) == Some(false)
    {
        return match pre.get("prepend_scheme").and_then(|p| p.as_str()) {
            Some("first") | Some("always") => Some(true),
            Some("never") => Some(false),
            _ => None,
        };
    }
    None
}

/// SentencePiece scores for llama.cpp's tokenizer, which merges the
/// adjacent pair whose result scores highest: the earlier a token's first
/// merge comes in tokenizer.json's merge list, the higher its score
/// (−rank); tokens no merge makes (characters, bytes, specials) 0.
fn merge_scores(names: &[String], types: &[i32], merges: &[String]) -> Vec<f32> {
    let mut first: std::collections::HashMap<String, usize> = Default::default();
    for (rank, m) in merges.iter().enumerate() {
        if let Some((l, r)) = m.split_once(' ') {
            first.entry(format!("{l}{r}")).or_insert(rank);
        }
    }
    names
        .iter()
        .zip(types)
        .map(|(n, &t)| match first.get(n) {
            Some(&rank) if t == NORMAL => -(rank as f32),
            _ => 0.0,
        })
        .collect()
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

/// Llama 3's split pattern as its tokenizer.json writes it (llama.cpp's
/// "llama-bpe" applies the same rule).
pub(super) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's (and Qwen3's): digits one at a time (llama.cpp's "qwen2").
pub(super) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's name (`tokenizer.ggml.pre`) for the pre-tokenizer `pre`:
/// "gpt-2" for a byte-level split with GPT-2's own pattern (alone, or the
/// only step of a sequence); "llama-bpe" or "qwen2" for Llama 3's or
/// Qwen2's regex split (isolated matches) followed by a byte-level step
/// without its own pattern; "smollm" for single digits split off before
/// GPT-2's byte-level split (SmolLM's; llama.cpp applies the same two
/// patterns under "starcoder" and "refact"). None for any other.
fn pre_name(pre: &Json) -> Option<&'static str> {
    let kind = json_type;
    match kind(pre) {
        Some("ByteLevel") => {
            (pre.get("use_regex").and_then(|u| u.as_bool()) != Some(false)).then_some("gpt-2")
        }
        Some("Sequence") => match pre
            .get("pretokenizers")
            .and_then(|p| p.as_array())?
            .as_slice()
        {
            [one] => pre_name(one).filter(|&n| n == "gpt-2"),
            [digits, byte]
                if kind(digits) == Some("Digits")
                    && digits.get("individual_digits").and_then(|d| d.as_bool()) == Some(true)
                    && pre_name(byte) == Some("gpt-2") =>
            {
                Some("smollm")
            }
            [split, byte] => {
                let plain_bytes = kind(byte) == Some("ByteLevel")
                    && byte.get("use_regex").and_then(|u| u.as_bool()) == Some(false);
                let isolated = kind(split) == Some("Split")
                    && split.get("behavior").and_then(|b| b.as_str()) == Some("Isolated")
                    && split.get("invert").and_then(|i| i.as_bool()) != Some(true);
                let pattern = split
                    .get("pattern")
                    .and_then(|p| p.get("Regex"))
                    .and_then(|r| r.as_str())?;
                if !(plain_bytes && isolated) {
                    return None;
                }
                match pattern {
                    p if p == LLAMA3_SPLIT => Some("llama-bpe"),
                    p if p == QWEN2_SPLIT => Some("qwen2"),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// The id of a special token named in tokenizer_config.json (a string or
/// an object with `content`).
fn named_id(cfg: &Json, key: &str, id_of: &dyn Fn(&str) -> Option<u32>) -> Option<u32> {
    let v = cfg.get(key)?;
    let name = v
        .as_str()
        .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
    id_of(name)
}

/// The tokenizer keys for the model folder `dir` (its `tokenizer.json`, or
/// `tokenizer` when given), with `vocab` ids (the model's vocabulary, at
/// least the tokenizer's) and `bos` the BOS shears adds to each sequence.
pub fn metadata(
    dir: &Path,
    tokenizer: Option<&Path>,
    vocab: usize,
    bos: Option<u32>,
) -> Result<Vec<(String, Value)>> {
    let path = tokenizer
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    if !path.is_file() {
        return Err(Error::format(
            &path,
            "missing: GGUF carries the tokenizer, so shears needs the model's tokenizer.json \
             (or --tokenizer FILE)",
        ));
    }
    let tj = read_json(&path)?;
    let model = tj
        .get("model")
        .ok_or_else(|| Error::format(&path, "no \"model\" section"))?;
    let kind = model.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if kind != "BPE" {
        return Err(Error::format(
            &path,
            format!("a {kind:?} tokenizer; shears writes byte-level BPE tokenizers to GGUF"),
        ));
    }
    // SentencePiece-style BPE (Llama 2, Mistral, TinyLlama): llama.cpp's
    // "llama" tokenizer; byte-level BPE: its "gpt2" one.
    let spm = model.get("byte_fallback").and_then(|b| b.as_bool()) == Some(true);
    let space_prefix = if spm {
        Some(spm_space_prefix(&tj).ok_or_else(|| {
            Error::format(
                &path,
                "a SentencePiece-style tokenizer whose normalizer / pre-tokenizer shears does not \
                 know (it writes the \"▁\"-for-space scheme of Llama 2 and Mistral)",
            )
        })?)
    } else {
        None
    };
    let pre = tj.get("pre_tokenizer").unwrap_or(&Json::Null);
    let Some(pre_name) = (if spm { Some("default") } else { pre_name(pre) }) else {
        let rendered = pre.to_string();
        let short: String = rendered.chars().take(120).collect();
        return Err(Error::format(
            &path,
            format!(
                "pre-tokenizer {short} has no GGUF name shears knows (it writes GPT-2's \
                 byte-level split \"gpt-2\", Llama 3's \"llama-bpe\", Qwen2's \"qwen2\" and \
                 SmolLM's \"smollm\")"
            ),
        ));
    };
    let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: usize, s: &str, t: i32| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some((s.to_string(), t));
    };
    let entries = model
        .get("vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| Error::format(&path, "no vocab in the BPE model"))?;
    let unk = model.get("unk_token").and_then(|u| u.as_str());
    for (s, id) in entries {
        let id = id
            .as_u64()
            .ok_or_else(|| Error::format(&path, format!("token {s:?} has no integer id")))?;
        let t = match s.as_str() {
            _ if !spm => NORMAL,
            b if is_byte_token(b) => BYTE,
            u if Some(u) == unk => UNKNOWN,
            _ => NORMAL,
        };
        put(id as usize, s, t);
    }
    for a in tj
        .get("added_tokens")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(s)) = (
            a.get("id").and_then(|i| i.as_u64()),
            a.get("content").and_then(|c| c.as_str()),
        ) else {
            continue;
        };
        let special = a.get("special").and_then(|s| s.as_bool()) == Some(true);
        let t = match () {
            // SentencePiece's unknown piece keeps its own type.
            _ if spm && Some(s) == unk => UNKNOWN,
            _ if special => CONTROL,
            _ => USER_DEFINED,
        };
        put(id as usize, s, t);
    }
    if tokens.len() > vocab {
        return Err(Error::format(
            &path,
            format!(
                "{} token ids, more than the model's vocabulary of {vocab}",
                tokens.len()
            ),
        ));
    }
    tokens.resize(vocab, None);
    let (names, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED)))
        .unzip();
    let merges: Vec<String> = model
        .get("merges")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(p) if p.len() == 2 => {
                Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?))
            }
            _ => None,
        })
        .collect();
    let id_of = |s: &str| names.iter().position(|n| n == s).map(|i| i as u32);
    let unk_id = unk.and_then(id_of);
    let tcfg = read_json(&dir.join("tokenizer_config.json")).unwrap_or(Json::Null);
    let mcfg = read_json(&dir.join("config.json")).unwrap_or(Json::Null);
    let config_id = |key: &str| -> Option<u32> {
        let v = mcfg.get(key)?;
        v.as_u64()
            .or_else(|| v.as_array()?.first()?.as_u64())
            .map(|x| x as u32)
    };
    let bos_id = named_id(&tcfg, "bos_token", &id_of)
        .or_else(|| config_id("bos_token_id"))
        .or(bos);
    let eos_id = named_id(&tcfg, "eos_token", &id_of).or_else(|| config_id("eos_token_id"));
    let pad_id = named_id(&tcfg, "pad_token", &id_of).or_else(|| config_id("pad_token_id"));
    let model_name = if spm { "llama" } else { "gpt2" };
    let mut m = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::Str(model_name.into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::Str(pre_name.into()),
        ),
    ];
    if let Some(prefix) = space_prefix {
        m.push((
            "tokenizer.ggml.scores".to_string(),
            Value::ArrF32(merge_scores(&names, &types, &merges)),
        ));
        m.push(("tokenizer.ggml.tokens".to_string(), Value::ArrStr(names)));
        m.push((
            "tokenizer.ggml.token_type".to_string(),
            Value::ArrI32(types),
        ));
        m.push((
            "tokenizer.ggml.add_space_prefix".to_string(),
            Value::Bool(prefix),
        ));
        if let Some(id) = unk_id {
            m.push((
                "tokenizer.ggml.unknown_token_id".to_string(),
                Value::U32(id),
            ));
        }
    } else {
        m.push(("tokenizer.ggml.tokens".to_string(), Value::ArrStr(names)));
        m.push((
            "tokenizer.ggml.token_type".to_string(),
            Value::ArrI32(types),
        ));
        m.push(("tokenizer.ggml.merges".to_string(), Value::ArrStr(merges)));
    }
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos_id),
        ("tokenizer.ggml.eos_token_id", eos_id),
        ("tokenizer.ggml.padding_token_id", pad_id),
    ] {
        if let Some(id) = id {
            m.push((key.to_string(), Value::U32(id)));
        }
    }
    m.push((
        "tokenizer.ggml.add_bos_token".to_string(),
        Value::Bool(bos.is_some()),
    ));
    Ok(m)
}
