//! The validated plan of a run: per tensor of the checkpoint, what happens
//! to it (keep and why, prune, quantize, both) and the output layout
//! (names, dtypes, shards, config). Built before any tensor byte is read
//! (except with `--non-finite keep`, which must look at the data), so
//! `--dry-run` validates everything the real run would.

use anyhow::{bail, Result};
use shears_core::calibration::Calibration;
use shears_core::checkpoint::{OutputTensor, ShardSpec};
use shears_core::formats::compressed_tensors::layer_tensors;
use shears_core::reference::mask::check_nm;
use shears_core::Checkpoint;

use super::config::{Format, Mode, RunConfig};
use super::masks::{load_aux, prune_count_for, Aux};
use crate::output::{human_bytes, Out};
use crate::select::{self, Decision};

/// What happens to one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copied unchanged, with the reason.
    Keep(String),
    /// Pruned (and quantized when the run quantizes).
    Compress,
}

/// A run, validated and laid out.
pub struct Plan<'c> {
    pub cfg: &'c RunConfig,
    pub ckpt: &'c Checkpoint,
    /// One action per tensor of `ckpt`, in storage order.
    pub actions: Vec<Action>,
    /// Indices of the tensors whose action is `Compress`.
    pub chosen: Vec<usize>,
    /// --include / --exclude patterns that matched no tensor.
    pub unmatched: Vec<String>,
    /// Scoring inputs of each chosen tensor (pruning runs only).
    pub aux: Vec<Aux<'c>>,
    /// The calibration file, when the run has one.
    pub calibration: Option<&'c Calibration>,
    /// The output's config.json (compressed-tensors output only): the
    /// input's own, or an empty object for a checkpoint without one.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// The output shards: the input's file names, each tensor's output
    /// tensors in order.
    pub shards: Vec<ShardSpec>,
}

impl<'c> Plan<'c> {
    /// Checks `cfg` against `ckpt` and lays out the output; refuses, with
    /// one line naming the file and tensor, anything the run could not do.
    pub fn build(
        cfg: &'c RunConfig,
        ckpt: &'c Checkpoint,
        calib: Option<&'c Calibration>,
    ) -> Result<Self> {
        let mut selection = select::select(ckpt, &cfg.include, &cfg.exclude)?;
        for g in &selection.unmatched {
            tracing::warn!("pattern '{g}' matched no tensor");
        }
        select::apply_non_finite(ckpt, &mut selection, cfg.non_finite);
        let chosen: Vec<usize> = selection.compressed().collect();
        if chosen.is_empty() {
            let what = if cfg.quant.is_some() {
                "quantization"
            } else {
                "pruning"
            };
            tracing::warn!("no tensor is selected for {what}; the output is a copy");
        }
        for &i in &chosen {
            check_tensor(cfg, ckpt, i)?;
        }
        let config = output_config(cfg, ckpt)?;
        if cfg.hessian.is_some() {
            check_grams(cfg, ckpt, calib, &chosen)?;
        }
        if let (Some(c), true, true) = (calib, cfg.checks.validate, cfg.quant.is_some()) {
            // The calibration rows --validate will read, checked up front.
            for &i in &chosen {
                let t = &ckpt.tensors[i];
                c.input_rows(&t.name, t.shape[1])?;
            }
        }
        let aux = match &cfg.prune {
            Some(p) => load_aux(ckpt, &chosen, p, calib, cfg.checks.validate, cfg.seed)?,
            None => Vec::new(),
        };
        let actions = std::mem::take(&mut selection.decisions)
            .into_iter()
            .map(|d| match d {
                Decision::Compress => Action::Compress,
                Decision::Keep(why) => Action::Keep(why),
            })
            .collect();
        let mut plan = Plan {
            cfg,
            ckpt,
            actions,
            chosen,
            unmatched: selection.unmatched,
            aux,
            calibration: calib,
            config,
            shards: Vec::new(),
        };
        plan.shards = plan.layout();
        Ok(plan)
    }

    /// The output tensors, shard by shard, in the input's order.
    fn layout(&self) -> Vec<ShardSpec> {
        let mut shards = select::empty_shards(self.ckpt);
        for (t, action) in self.ckpt.tensors.iter().zip(&self.actions) {
            let list = &mut shards[t.shard].tensors;
            match (action, &self.cfg.quant) {
                (Action::Compress, Some(q)) if q.format == Format::CompressedTensors => {
                    let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
                    list.extend(layer_tensors(
                        prefix, t.shape[0], t.shape[1], t.dtype, q.scheme, &q.spec,
                    ));
                    if self.writes_g_idx() {
                        list.push(OutputTensor {
                            name: format!("{prefix}.weight_g_idx"),
                            dtype: shears_core::DType::I32,
                            shape: vec![t.shape[1]],
                        });
                    }
                }
                _ => list.push(OutputTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                }),
            }
        }
        shards
    }

    /// Whether each quantized layer gets `weight_g_idx` (GPTQ with group
    /// activation order).
    pub fn writes_g_idx(&self) -> bool {
        self.cfg.hessian.is_some_and(|h| {
            h.gptq && h.actorder == shears_core::reference::hessian::ActOrder::Group
        })
    }

    /// What the run does to a chosen tensor, in words.
    pub fn describe_compress(&self) -> String {
        let parts: Vec<String> = [
            self.cfg.prune.map(|p| p.describe()),
            self.cfg.quant.map(|q| q.describe()),
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join(" + ")
    }

    /// Prints the plan (`--dry-run`): every tensor, its action, bytes
    /// before and after.
    pub fn print(&self, out: &mut Out) {
        let ckpt = self.ckpt;
        let w = ckpt
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        out.line(&format!(
            "plan for {} ({} tensors):",
            ckpt.root.display(),
            ckpt.tensors.len()
        ));
        out.line(&format!(
            "{:<w$}  {:<6} {:<14} {:>10} {:>10}  action",
            "name", "dtype", "shape", "bytes", "after"
        ));
        let after = self.bytes_after();
        let mut pruned = 0u64;
        for (i, (t, a)) in ckpt.tensors.iter().zip(&self.actions).enumerate() {
            let action = match a {
                Action::Compress => {
                    if let Some(p) = &self.cfg.prune {
                        pruned += prune_count_for(t, p.mode);
                    }
                    self.describe_compress()
                }
                Action::Keep(why) => format!("keep ({why})"),
            };
            out.line(&format!(
                "{:<w$}  {:<6} {:<14} {:>10} {:>10}  {action}",
                t.name,
                t.dtype.name(),
                format!("{:?}", t.shape),
                human_bytes(t.nbytes() as u64),
                human_bytes(after[i])
            ));
        }
        let before = ckpt.total_bytes();
        let total: u64 = after.iter().sum();
        out.line(&format!(
            "{} of {} tensors compressed{}; checkpoint {} -> {}",
            self.chosen.len(),
            ckpt.tensors.len(),
            if self.cfg.prune.is_some() {
                format!(", about {pruned} weights zeroed")
            } else {
                String::new()
            },
            human_bytes(before),
            human_bytes(total)
        ));
        for g in &self.unmatched {
            out.line(&format!("warning: pattern '{g}' matched no tensor"));
        }
    }

    /// Output bytes of each input tensor.
    fn bytes_after(&self) -> Vec<u64> {
        let mut sizes = self
            .ckpt
            .tensors
            .iter()
            .map(|t| t.nbytes() as u64)
            .collect::<Vec<_>>();
        if let Some(q) = &self.cfg.quant {
            if q.format == Format::CompressedTensors {
                for &i in &self.chosen {
                    let t = &self.ckpt.tensors[i];
                    let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
                    sizes[i] =
                        layer_tensors(prefix, t.shape[0], t.shape[1], t.dtype, q.scheme, &q.spec)
                            .iter()
                            .map(|o| o.nbytes().unwrap_or(0) as u64)
                            .sum();
                }
            }
        }
        sizes
    }
}

/// Powers of two below `g` (at least 8) that divide `cols`, largest first,
/// at most two: what a refusal of group size `g` suggests.
fn dividing_groups(cols: usize, g: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut d = g.next_power_of_two() / 2;
    while d >= 8 && out.len() < 2 {
        if cols.is_multiple_of(d) {
            out.push(d);
        }
        d /= 2;
    }
    out
}

/// `--group-size auto` resolved against the checkpoint: the largest power
/// of two up to the scheme's group that divides the inputs of every
/// tensor the default rule and globs select (said on stderr).
pub fn resolve_auto_group(cfg: &RunConfig, ckpt: &Checkpoint) -> Result<RunConfig> {
    let mut cfg = cfg.clone();
    let Some(q) = cfg.quant.as_mut().filter(|q| q.auto_group) else {
        return Ok(cfg);
    };
    let Some(requested) = q.spec.group else {
        return Ok(cfg);
    };
    let selection = select::select(ckpt, &cfg.include, &cfg.exclude)?;
    let cols: Vec<usize> = selection
        .compressed()
        .map(|i| ckpt.tensors[i].shape[1])
        .collect();
    let mut g = if requested.is_power_of_two() {
        requested
    } else {
        requested.next_power_of_two() / 2
    };
    while g > 1 && !cols.iter().all(|c| c.is_multiple_of(g)) {
        g /= 2;
    }
    tracing::info!("--group-size auto: groups of {g}, the largest power of two up to {requested} that divides every selected layer");
    q.spec.group = Some(g);
    Ok(cfg)
}

/// Refuses a chosen tensor the run cannot compress.
fn check_tensor(cfg: &RunConfig, ckpt: &Checkpoint, i: usize) -> Result<()> {
    let t = &ckpt.tensors[i];
    let path = ckpt.path_of(t).display();
    if !t.dtype.is_float_computable() {
        bail!(
            "{path}: tensor '{}': dtype {} cannot be compressed",
            t.name,
            t.dtype
        );
    }
    if let Some(q) = &cfg.quant {
        if !t.name.ends_with(".weight") {
            bail!(
                "{path}: tensor '{}': only `.weight` tensors of Linear layers can be quantized",
                t.name
            );
        }
        if let Some(g) = q.scheme.fp4_group() {
            if !t.shape[1].is_multiple_of(g) {
                bail!(
                    "{path}: tensor '{}': {} needs its {} input columns to be a multiple of {g} \
                     (one scale per {g}); leave it out with --exclude",
                    t.name,
                    q.scheme.name(),
                    t.shape[1]
                );
            }
        }
        if let Some(g) = q.spec.group.filter(|_| !q.scheme.is_float()) {
            if !t.shape[1].is_multiple_of(g) {
                let fits: Vec<String> = dividing_groups(t.shape[1], g)
                    .iter()
                    .map(usize::to_string)
                    .collect();
                let hint = match fits.first() {
                    Some(best) => format!("; {} would (--group-size {best})", fits.join(" or ")),
                    None => String::new(),
                };
                bail!(
                    "{path}: tensor '{}': group size {g} does not divide its {} input columns{hint}, \
                     or --group-size auto picks the largest that divides every selected layer",
                    t.name,
                    t.shape[1]
                );
            }
        }
    }
    if let Some(Mode::Pattern { n, m }) = cfg.prune.map(|p| p.mode) {
        check_nm(n, m, t.shape[1])
            .map_err(|e| anyhow::anyhow!("{path}: tensor '{}': {e}", t.name))?;
    }
    Ok(())
}

/// The output's config.json, read and checked before any work: the
/// input's own (a JSON object) or, when there is none, an empty one that
/// will hold only the quantization_config, so the output still says how
/// to read it.
fn output_config(
    cfg: &RunConfig,
    ckpt: &Checkpoint,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    match &cfg.quant {
        Some(q) if q.format == Format::CompressedTensors => Ok(Some(match ckpt.config()? {
            Some(c) => c,
            None => {
                tracing::warn!(
                    "{} has no config.json: the output's config.json holds only the \
                     quantization_config; add the model's own fields (architectures, \
                     model_type, …) before loading it in vLLM or transformers",
                    cfg.model.display()
                );
                serde_json::Map::new()
            }
        })),
        _ => Ok(None),
    }
}

/// GPTQ and SparseGPT read each chosen weight's XᵀX: refused up front when
/// the calibration file lacks one.
fn check_grams(
    cfg: &RunConfig,
    ckpt: &Checkpoint,
    calib: Option<&Calibration>,
    chosen: &[usize],
) -> Result<()> {
    let method = match cfg.hessian {
        Some(h) if h.gptq => "gptq",
        _ => "sparsegpt",
    };
    let Some(c) = calib else {
        bail!(
            "{method} needs each layer's XᵀX: --calibration FILE from `shears calibrate --gram`, \
             or --calibration-text"
        );
    };
    for &i in chosen {
        let t = &ckpt.tensors[i];
        if !c.has_gram(&t.name, t.shape[1])? {
            bail!(
                "{}: no '{}.input_gram' (XᵀX), which {method} needs: make the file with \
                 `shears calibrate --gram`, or pass --calibration-text",
                c.path().display(),
                t.name
            );
        }
    }
    Ok(())
}
