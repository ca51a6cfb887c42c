//! Reading GGUF back: `shears decompress MODEL.gguf -o DIR` writes a
//! safetensors folder with the checkpoint's names and row order (quantized
//! tensors as their f32 values, F16/BF16/F32 as stored) and, from a file
//! shears wrote, the original config.json and tokenizer.json; from any
//! other Llama-family file, config.json, tokenizer.json and
//! tokenizer_config.json rebuilt from its keys ([`hf`]). Either way the
//! folder runs through `shears eval` and every other command.
//! `shears inspect MODEL.gguf` lists the file's metadata and tensors.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use shears_core::checkpoint::{plan_shards, CheckpointWriter, OutputTensor, WriterOptions};
use shears_core::formats::gguf::{hf, llama, GgmlType, GgufFile, Value};
use shears_core::model::config::ModelConfig;
use shears_core::{DType, Error};

use crate::output::{human_bytes, Out};
use crate::progress::Progress;

/// Metadata key holding the tokenizer.json text (GGUF's own key for it).
pub const TOKENIZER_KEY: &str = "tokenizer.huggingface.json";
/// Metadata key holding the config.json text of the checkpoint.
pub const CONFIG_KEY: &str = "shears.config_json";

/// Shards of the written folder.
const SHARD_BYTES: u64 = 4 << 30;

fn text<'a>(f: &'a GgufFile, key: &str) -> Option<&'a str> {
    match f.get(key) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

pub fn decompress(
    model: &Path,
    output: &Path,
    force: bool,
    sync: bool,
    quiet: bool,
    out: &mut Out,
) -> Result<()> {
    let f = GgufFile::open(model)?;
    let arch = text(&f, "general.architecture").unwrap_or("");
    if !["llama", "qwen2", "qwen3"].contains(&arch) {
        return Err(Error::format(
            model,
            format!("architecture {arch:?}; shears reads llama, qwen2 and qwen3 GGUF files"),
        )
        .into());
    }
    // A file shears wrote carries the folder's own config.json and
    // tokenizer.json; any other gets them rebuilt from its keys.
    let (config, side) = match text(&f, CONFIG_KEY) {
        Some(c) => {
            let tok = text(&f, TOKENIZER_KEY).map(|t| vec![("tokenizer.json", t.to_string())]);
            (c.to_string(), Rebuilt::Carried(tok.unwrap_or_default()))
        }
        None => rebuild(&f, model)?,
    };
    let config_json: serde_json::Value = serde_json::from_str(&config)
        .map_err(|e| Error::format(model, format!("{CONFIG_KEY} is not valid JSON: {e}")))?;
    let cfg = ModelConfig::from_json(&config_json)
        .map_err(|e| Error::format(model, format!("config: {e}")))?;
    let mut planned = Vec::new();
    let mut order = Vec::new();
    for t in &f.tensors {
        if t.name == "rope_freqs.weight" {
            continue;
        }
        let Some(hf) = llama::hf_name(&t.name) else {
            return Err(Error::format(
                model,
                format!("tensor '{}' has no checkpoint name", t.name),
            )
            .into());
        };
        let Some(ty) = t.ty else {
            return Err(Error::format(
                model,
                format!(
                    "tensor '{}' has ggml type {}, which shears does not read",
                    t.name, t.type_id
                ),
            )
            .into());
        };
        let dtype = match ty {
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            _ => DType::F32,
        };
        planned.push(OutputTensor {
            name: hf.clone(),
            dtype,
            shape: t.shape(),
        });
        order.push((t, hf));
    }
    let opts = WriterOptions {
        force,
        sync,
        protected: vec![model.to_path_buf()],
        side_files: vec![
            "config.json".into(),
            "tokenizer.json".into(),
            "tokenizer_config.json".into(),
        ],
        ..Default::default()
    };
    let mut writer = CheckpointWriter::create(output, plan_shards(planned, SHARD_BYTES)?, opts)?;
    let total: u64 = f.tensors.iter().map(|t| t.len() as u64).sum();
    let mut progress = Progress::bytes(total, "decompress", quiet);
    let (mut done, mut written) = (0u64, 0u64);
    for (t, hf) in order {
        let ty = t.ty.expect("checked");
        let stored = f.bytes(t)?;
        let mut bytes = match ty {
            GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => stored.to_vec(),
            _ => ty
                .dequantize(stored)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        if let Some(heads) = llama::rope_heads(&cfg, &t.name) {
            let rows = t.shape()[0];
            bytes = llama::from_gguf_rows(&bytes, bytes.len() / rows.max(1), heads);
        }
        written += bytes.len() as u64;
        writer.write_tensor(&hf, &bytes)?;
        done += t.len() as u64;
        progress.set(done);
    }
    progress.finish();
    writer.add_file("config.json", config.as_bytes())?;
    let (files, note) = match side {
        Rebuilt::Carried(files) => (files, None),
        Rebuilt::Keys {
            files,
            no_tokenizer,
        } => (files, Some(no_tokenizer)),
    };
    for (name, body) in &files {
        writer.add_file(name, body.as_bytes())?;
    }
    let dest = writer.finish()?;
    out.line(&format!(
        "wrote {}: {} tensors of a {arch} GGUF file, {} -> {}",
        dest.display(),
        f.tensors.len(),
        human_bytes(std::fs::metadata(model).map(|m| m.len()).unwrap_or(0)),
        human_bytes(written)
    ));
    match note {
        Some(Some(why)) => out.line(&format!(
            "config.json rebuilt from the file's keys; no tokenizer.json: {why}"
        )),
        Some(None) => out.line("config.json and tokenizer.json rebuilt from the file's keys"),
        None => {}
    }
    Ok(())
}

/// The side files of the folder: those a shears-written file carries, or
/// those rebuilt from another file's keys (with the reason a tokenizer
/// could not be).
enum Rebuilt {
    Carried(Vec<(&'static str, String)>),
    Keys {
        files: Vec<(&'static str, String)>,
        no_tokenizer: Option<String>,
    },
}

/// config.json (and the tokenizer files when the vocabulary allows) from
/// the keys of a GGUF file shears did not write.
fn rebuild(f: &GgufFile, model: &Path) -> Result<(String, Rebuilt)> {
    let keys = hf::Keys(&f.metadata);
    let facts = hf::TensorFacts {
        embedding_rows: f.tensor("token_embd.weight").map(|t| t.shape()[0]),
        has_output: f.tensor("output.weight").is_some(),
        qkv_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        rope_freqs: f.tensor("rope_freqs.weight").is_some(),
    };
    let config = hf::config(&keys, &facts).map_err(|e| Error::format(model, e))?;
    let context = config["max_position_embeddings"].as_u64().unwrap_or(2048) as usize;
    let pretty = |j: &serde_json::Value| serde_json::to_string_pretty(j).expect("JSON values");
    let (files, no_tokenizer) = match hf::tokenizer(&keys, context) {
        Ok((tok, tcfg)) => (
            vec![
                ("tokenizer.json", pretty(&tok)),
                ("tokenizer_config.json", pretty(&tcfg)),
            ],
            None,
        ),
        Err(why) => (Vec::new(), Some(why)),
    };
    Ok((
        pretty(&config),
        Rebuilt::Keys {
            files,
            no_tokenizer,
        },
    ))
}

pub fn inspect(model: &Path, json_out: bool, report: Option<&Path>, out: &mut Out) -> Result<()> {
    let f = GgufFile::open(model)?;
    let type_name = |t: &shears_core::formats::gguf::GgufTensor| {
        t.ty.map(|ty| ty.name().to_string())
            .unwrap_or_else(|| format!("type {}", t.type_id))
    };
    let size = |t: &shears_core::formats::gguf::GgufTensor| f.bytes(t).map_or(0, |b| b.len());
    let doc = json!({
        "file": model,
        "format": "gguf",
        "version": f.version,
        "metadata": f.metadata.iter().filter(|(k, _)| k != TOKENIZER_KEY && k != CONFIG_KEY)
            .map(|(k, v)| (k.clone(), json!(v.show()))).collect::<serde_json::Map<_, _>>(),
        "tensors": f.tensors.iter().map(|t| json!({
            "name": t.name,
            "type": type_name(t),
            "shape": t.shape(),
            "bytes": size(t),
        })).collect::<Vec<_>>(),
    });
    if let Some(path) = report {
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .map_err(|e| Error::io(path, e))?;
    }
    if json_out {
        out.answer(&serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    out.line(&format!("{} (GGUF v{})", model.display(), f.version));
    for (k, v) in &f.metadata {
        if let (true, Value::Str(s)) = (k == TOKENIZER_KEY || k == CONFIG_KEY, v) {
            out.line(&format!("  {k:<44} [{} bytes of JSON]", s.len()));
            continue;
        }
        out.line(&format!("  {k:<44} {}", v.show()));
    }
    out.line(&format!(
        "{:<32} {:<8} {:>16} {:>10}",
        "tensor", "type", "shape", "bytes"
    ));
    for t in &f.tensors {
        out.line(&format!(
            "{:<32} {:<8} {:>16} {:>10}",
            t.name,
            type_name(t),
            format!("{:?}", t.shape()),
            human_bytes(size(t) as u64)
        ));
    }
    let total: usize = f.tensors.iter().map(size).sum();
    out.line(&format!(
        "{} tensors, {}",
        f.tensors.len(),
        human_bytes(total as u64)
    ));
    Ok(())
}
