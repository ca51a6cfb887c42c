//! Text to token sequences: a model folder's `tokenizer.json` through
//! Hugging Face's `tokenizers` crate, UTF-8 text files tokenized (without
//! special tokens), concatenated in the order given and cut into sequences
//! of `seq_len` tokens. A model whose tokenizer puts a BOS token before its
//! text (`add_bos_token` in `tokenizer_config.json`, or a post-processor
//! that adds one) gets it at the start of every sequence, followed by
//! `seq_len − 1` text tokens; the last partial sequence is dropped.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A model's tokenizer and whether its sequences start with BOS.
pub struct TextTokenizer {
    tok: tokenizers::Tokenizer,
    /// The BOS id every sequence starts with, if the model wants one.
    pub bos: Option<u32>,
    path: PathBuf,
}

impl TextTokenizer {
    /// Opens `tokenizer.json` in `dir` and settles BOS from
    /// `tokenizer_config.json` (`add_bos_token`, `bos_token`) or, without
    /// it, from what the tokenizer's post-processor adds.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::format(
                dir,
                "no tokenizer.json: shears needs the model's Hugging Face tokenizer to read text",
            ));
        }
        let tok = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::format(&path, format!("not a tokenizer shears can read: {e}")))?;
        let mut t = TextTokenizer {
            tok,
            bos: None,
            path,
        };
        t.bos = t.bos_from_config(dir)?.or_else(|| t.bos_from_template());
        Ok(t)
    }

    /// `tokenizer_config.json`'s say: `Some(Some(id))` BOS wanted, `Some(None)`
    /// not wanted, `None` when it does not say.
    fn bos_from_config(&self, dir: &Path) -> Result<Option<u32>> {
        let cfg_path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&cfg_path) else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&cfg_path, format!("not valid JSON: {e}")))?;
        match v.get("add_bos_token").and_then(|b| b.as_bool()) {
            Some(true) => {
                let name = match v.get("bos_token") {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                    None => None,
                };
                let id = name.as_deref().and_then(|n| self.tok.token_to_id(n));
                match id {
                    Some(id) => Ok(Some(id)),
                    None => Err(Error::format(
                        &cfg_path,
                        format!(
                            "add_bos_token is true but bos_token {name:?} is not in the vocabulary"
                        ),
                    )),
                }
            }
            _ => Ok(None),
        }
    }

    /// The special token the post-processor puts before a text, if any.
    fn bos_from_template(&self) -> Option<u32> {
        let with = self.tok.encode("a", true).ok()?;
        let without = self.tok.encode("a", false).ok()?;
        let first = *with.get_ids().first()?;
        let special = with.get_special_tokens_mask().first() == Some(&1);
        (with.len() > without.len() && special).then_some(first)
    }

    /// Token ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tok
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::format(&self.path, format!("tokenizing failed: {e}")))
    }
}

/// Reads a UTF-8 text file; anything else is refused with the byte offset
/// of the first invalid byte.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path,
            format!(
                "not UTF-8 text: invalid byte at offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The text ids of `files`, tokenized in order, stopping once `enough`
/// tokens are read.
pub fn read_tokens(tok: &TextTokenizer, files: &[PathBuf], enough: usize) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for f in files {
        let text = read_text(f)?;
        ids.extend(tok.encode(&text)?);
        if ids.len() >= enough {
            break;
        }
    }
    Ok(ids)
}

/// Token sequences from text files: at most `max_tokens` tokens (whole
/// sequences) of `seq_len` each, BOS first in each when the model wants
/// it. Fails when the files hold less than one sequence.
pub fn sequences(
    tok: &TextTokenizer,
    files: &[PathBuf],
    seq_len: usize,
    max_tokens: usize,
) -> Result<Vec<u32>> {
    if seq_len < 2 {
        return Err(Error::Invalid(format!(
            "--seq-len {seq_len}: a sequence needs at least 2 tokens"
        )));
    }
    let per_seq = seq_len - tok.bos.is_some() as usize;
    let want_seqs = (max_tokens / seq_len).max(1);
    let text_ids = read_tokens(tok, files, want_seqs * per_seq)?;
    let seqs = (text_ids.len() / per_seq).min(want_seqs);
    if seqs == 0 {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(Error::Invalid(format!(
            "{} hold {} tokens, less than one sequence of {seq_len} (lower --seq-len or give more text)",
            names.join(", "),
            text_ids.len()
        )));
    }
    let mut out = Vec::with_capacity(seqs * seq_len);
    for chunk in text_ids.chunks_exact(per_seq).take(seqs) {
        out.extend(tok.bos);
        out.extend_from_slice(chunk);
    }
    Ok(out)
}
