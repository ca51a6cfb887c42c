//! `shears decompress DIR -o OUT`: a compressed-tensors checkpoint back to
//! dense safetensors in the original dtype, values (q − zp)·scale, on the
//! fast CPU path or the GPU (`--backend`). Every
//! quantized layer is checked against the config before anything is
//! written.

use std::collections::HashSet;

use anyhow::Result;
use shears_core::checkpoint::{CheckpointWriter, OutputTensor};
use shears_core::formats::ct_reader::{dense_bytes, layers, scheme_of};
use shears_core::{Checkpoint, Error};

use crate::args::{DecompressArgs, GlobalArgs};
use crate::backend::Backend;
use crate::output::{human_bytes, Out};
use crate::pipeline::{self, Piece};
use crate::progress::Progress;
use crate::select;

pub fn run(a: &DecompressArgs, g: &GlobalArgs, out: &mut Out) -> Result<()> {
    let (choice, quiet) = (g.backend, g.quiet);
    if super::gguf::is_gguf(&a.model) {
        return super::gguf::import::decompress(&a.model, &a.output, a.force, g.sync, quiet, out);
    }
    let ckpt = Checkpoint::open(&a.model)?;
    let config_path = ckpt.root.join("config.json");
    let Some(rs) = scheme_of(&ckpt)? else {
        return Err(Error::format(
            &config_path,
            "no quantization_config (missing or not a compressed-tensors checkpoint)",
        )
        .into());
    };
    let mut config = ckpt.config()?.unwrap_or_default();
    let layers = layers(&ckpt, &rs)?;

    // Output: each layer's tensors become one dense `<prefix>.weight`.
    let mut consumed = HashSet::new();
    for l in &layers {
        for t in [Some(l.codes), Some(l.scale), l.zero_point]
            .into_iter()
            .flatten()
        {
            consumed.insert(t.name.clone());
        }
        consumed.insert(format!("{}.weight_shape", l.prefix));
    }
    let mut shards = select::empty_shards(&ckpt);
    let mut order = Vec::new();
    for t in &ckpt.tensors {
        if let Some(l) = layers.iter().find(|l| std::ptr::eq(l.scale, t)) {
            shards[t.shard].tensors.push(OutputTensor {
                name: format!("{}.weight", l.prefix),
                dtype: rs.dense_dtype_for(t.dtype),
                shape: vec![l.out, l.inn],
            });
            order.push((t, Some(l)));
        } else if !consumed.contains(&t.name) {
            shards[t.shard].tensors.push(OutputTensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            });
            order.push((t, None));
        }
    }
    let opts = select::writer_options(&ckpt, &a.model, a.force, g.sync);
    let writer = CheckpointWriter::create(&a.output, shards, opts)?;
    let backend = Backend::open(choice)?;
    let quant = backend.quant();
    let mut progress = Progress::bytes(ckpt.total_bytes(), "decompress", quiet);
    let mut written = 0u64;
    // Streamed like every command: decoding overlaps the writer thread.
    let ((), mut writer) = pipeline::streamed(writer, |sink| {
        let mut done = 0u64;
        for (ti, (t, layer)) in order.iter().enumerate() {
            if let Some((next, _)) = order.get(ti + 1) {
                ckpt.view(next).prefetch();
            }
            match layer {
                None => {
                    sink.send(Piece::View(t.name.clone(), ckpt.view(t)))?;
                    written += t.nbytes() as u64;
                }
                Some(l) => {
                    let bytes = dense_bytes(&ckpt, &rs, l, quant.as_ref())?;
                    l.release(&ckpt);
                    written += bytes.len() as u64;
                    sink.send(Piece::Bytes(format!("{}.weight", l.prefix), bytes))?;
                }
            }
            done += t.nbytes() as u64;
            progress.set(done);
        }
        Ok(())
    })?;
    progress.finish();
    config.remove("quantization_config");
    writer.add_file("config.json", &serde_json::to_vec_pretty(&config)?)?;
    for f in &ckpt.extra_files {
        if f.name != "config.json" {
            writer.copy_file(f)?;
        }
    }
    let dest = writer.finish()?;
    out.line(&format!(
        "wrote {}: {} layers decompressed, {} -> {}",
        dest.display(),
        layers.len(),
        human_bytes(ckpt.total_bytes()),
        human_bytes(written)
    ));
    Ok(())
}
