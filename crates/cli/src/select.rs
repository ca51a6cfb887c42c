//! Which tensors a command compresses: the default rule (2-D float weights
//! of linear layers; embeddings, lm_head, norms, biases and routers left
//! alone) adjusted by --include / --exclude globs.

use anyhow::{Context, Result};
use std::path::Path;

use shears_core::checkpoint::{ShardSpec, WriterOptions};
use shears_core::{Checkpoint, TensorInfo, TensorView};

use crate::args::NonFinitePolicy;

/// What happens to one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The command compresses it.
    Compress,
    /// Copied unchanged, with the reason.
    Keep(String),
}

/// The decision for every tensor of a checkpoint, in storage order.
#[derive(Debug)]
pub struct Selection {
    pub decisions: Vec<Decision>,
    /// Patterns given with --include / --exclude that matched no tensor.
    pub unmatched: Vec<String>,
}

impl Selection {
    /// Indices of the tensors to compress.
    pub fn compressed(&self) -> impl Iterator<Item = usize> + '_ {
        self.decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| **d == Decision::Compress)
            .map(|(i, _)| i)
    }
}

/// Why the default rule leaves a tensor alone, if it does.
fn default_exclusion(t: &TensorInfo) -> Option<&'static str> {
    let name = t.name.to_ascii_lowercase();
    if t.shape.len() != 2 {
        return Some("not 2-D");
    }
    if !t.dtype.is_float_computable() {
        return Some("not a float tensor");
    }
    if !name.ends_with(".weight") && name != "weight" {
        return Some("not a weight");
    }
    let leaf = name.rsplit('.').nth(1).unwrap_or("");
    if name.contains("embed") || name.contains("wte") || name.contains("wpe") {
        return Some("embedding");
    }
    if name.contains("lm_head") || name.contains("output_layer") {
        return Some("lm_head");
    }
    if name.contains("norm") || leaf.ends_with("ln") || leaf.starts_with("ln_") {
        return Some("norm");
    }
    if name.contains("router") || leaf == "gate" {
        return Some("router");
    }
    None
}

fn patterns(globs: &[String], flag: &str) -> Result<Vec<glob::Pattern>> {
    globs
        .iter()
        .map(|g| glob::Pattern::new(g).with_context(|| format!("{flag} '{g}' is not a valid glob")))
        .collect()
}

/// Applies the default rule and the globs to every tensor of `ckpt`.
pub fn select(ckpt: &Checkpoint, include: &[String], exclude: &[String]) -> Result<Selection> {
    let inc = patterns(include, "--include")?;
    let exc = patterns(exclude, "--exclude")?;
    let mut inc_hit = vec![false; inc.len()];
    let mut exc_hit = vec![false; exc.len()];
    let decisions = ckpt
        .tensors
        .iter()
        .map(|t| {
            let hit = |pats: &[glob::Pattern], seen: &mut [bool]| {
                let mut any = false;
                for (p, s) in pats.iter().zip(seen.iter_mut()) {
                    if p.matches(&t.name) {
                        *s = true;
                        any = true;
                    }
                }
                any
            };
            let excluded = hit(&exc, &mut exc_hit);
            let included = hit(&inc, &mut inc_hit);
            if excluded {
                return Decision::Keep("excluded".into());
            }
            if t.shape.contains(&0) {
                // Nothing to compress, and no buffer may be sized from the
                // other dimensions of an empty tensor.
                return Decision::Keep("empty".into());
            }
            match default_exclusion(t) {
                None => Decision::Compress,
                Some(why) if included && t.shape.len() == 2 && t.dtype.is_float_computable() => {
                    let _ = why;
                    Decision::Compress
                }
                Some(why) if included => Decision::Keep(format!("{why}; cannot be compressed")),
                Some(why) => Decision::Keep(why.to_string()),
            }
        })
        .collect();
    let unmatched = include
        .iter()
        .zip(&inc_hit)
        .chain(exclude.iter().zip(&exc_hit))
        .filter(|(_, hit)| !**hit)
        .map(|(g, _)| g.clone())
        .collect();
    Ok(Selection {
        decisions,
        unmatched,
    })
}

/// Applies `--non-finite` to the selection before the output is laid out:
/// with `keep`, every selected tensor holding NaN or ±inf is read once and
/// kept unchanged (a warning names each); with `error` nothing is read
/// here, and the command refuses such a tensor when it reaches it
/// ([`check_values`]).
pub fn apply_non_finite(ckpt: &Checkpoint, sel: &mut Selection, policy: NonFinitePolicy) {
    if policy != NonFinitePolicy::Keep {
        return;
    }
    for (t, d) in ckpt.tensors.iter().zip(sel.decisions.iter_mut()) {
        if *d != Decision::Compress {
            continue;
        }
        let view = ckpt.view(t);
        if let Some(nf) = view.non_finite() {
            tracing::warn!("{}: kept unchanged (--non-finite keep): {nf}", t.name);
            *d = Decision::Keep("non-finite values".into());
        }
        view.release(0..t.nbytes());
    }
}

/// The error for a selected tensor holding NaN or ±inf, under
/// `--non-finite error`: quantizing it would spread NaN over its row or
/// group (or silently turn NaN into 0), and pruning cannot rank it.
/// Otherwise the tensor's count of exact zeros (found in the same pass).
pub fn check_values(ckpt: &Checkpoint, t: &TensorInfo, view: &TensorView) -> Result<u64> {
    match view.scan() {
        (None, zeros) => Ok(zeros),
        (Some(nf), _) => anyhow::bail!(
            "{}: tensor '{}': {nf}; shears does not compress non-finite weights \
             (pass --non-finite keep to leave such tensors unchanged)",
            ckpt.path_of(t).display(),
            t.name
        ),
    }
}

/// Output shards with the input's file names and no tensors yet: every
/// command's output mirrors the input's sharding.
pub fn empty_shards(ckpt: &Checkpoint) -> Vec<ShardSpec> {
    ckpt.shards
        .iter()
        .map(|s| ShardSpec {
            file_name: s.file_name(),
            tensors: Vec::new(),
        })
        .collect()
}

/// Writer options for an output made from `model`: the input protected,
/// its first shard's `__metadata__` kept, shards fsynced when `sync`
/// (`--sync`).
pub fn writer_options(ckpt: &Checkpoint, model: &Path, force: bool, sync: bool) -> WriterOptions {
    WriterOptions {
        force,
        sync,
        protected: vec![model.to_path_buf()],
        side_files: ckpt.extra_files.iter().map(|f| f.name.clone()).collect(),
        metadata: ckpt
            .shards
            .first()
            .map(|s| s.metadata.clone())
            .unwrap_or_default(),
    }
}
