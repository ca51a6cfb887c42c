//! Sequential GPTQ / SparseGPT (llm-compressor's sequential pipeline):
//! while `--calibration-text` calibrates, each decoder layer's linear
//! weights are compressed from the XᵀX the layer just gathered, and the
//! calibration states go on through the compressed layer, so layer i is
//! calibrated on the outputs of layers 0…i−1 as compressed. The engine's
//! pass then compresses every weight from those XᵀX again (the same sweep
//! on the same inputs, so the same result) and writes it.

use std::collections::HashMap;

use anyhow::{bail, Result};
use shears_core::model::collect::InputStats;
use shears_core::model::LayerWeights;
use shears_core::reference::hessian::Hessian;
use shears_core::reference::quant::{quantize_matrix, round_to};
use shears_core::{Checkpoint, DType};

use super::config::{HessianConfig, RunConfig};
use super::hessian::{input_key, job, Factors};
use crate::backend::Backend;

/// Compresses each decoder layer's selected weights in memory.
pub struct LayerCompressor<'b> {
    cfg: RunConfig,
    h: HessianConfig,
    /// Every selected weight and its dtype.
    chosen: HashMap<String, DType>,
    hess: Box<dyn Hessian + 'b>,
    factors: Factors,
}

impl<'b> LayerCompressor<'b> {
    /// For the run `cfg` (its group size resolved) on `ckpt`, or `None` when
    /// the run is not sequential GPTQ / SparseGPT.
    pub fn new(cfg: &RunConfig, ckpt: &Checkpoint, backend: &'b Backend) -> Result<Option<Self>> {
        let Some(h) = cfg.hessian.filter(|h| h.sequential) else {
            return Ok(None);
        };
        if cfg.prune.is_some_and(|p| !p.sparsegpt) {
            bail!(
                "--sequential true compresses with gptq and sparsegpt only; with --method {} \
                 pass --sequential false",
                cfg.prune.map_or("", |p| p.method.name())
            );
        }
        let selection = crate::select::select(ckpt, &cfg.include, &cfg.exclude)?;
        let chosen = selection
            .compressed()
            .map(|i| (ckpt.tensors[i].name.clone(), ckpt.tensors[i].dtype))
            .collect();
        Ok(Some(LayerCompressor {
            cfg: cfg.clone(),
            h,
            chosen,
            hess: backend.hessian(),
            factors: Factors::default(),
        }))
    }

    /// Replaces each selected weight of `lw` by its compressed values, as a
    /// runtime decodes them (rounded to the weight's dtype).
    pub fn compress(&mut self, lw: &mut LayerWeights, stats: &InputStats) -> Result<()> {
        for lin in lw.linears_mut() {
            let Some(&dtype) = self.chosen.get(&lin.name) else {
                continue;
            };
            let Some(gram) = stats.gram(&lin.name) else {
                bail!("no inputs of '{}' were gathered", lin.name);
            };
            let (h, hess) = (self.h, &self.hess);
            let f = self
                .factors
                .get(&input_key(&lin.name), || {
                    hess.factor(gram, lin.inn, h.dampening, h.actorder)
                })
                .map_err(|e| anyhow::anyhow!("tensor '{}': {e}", lin.name))?;
            let solved = self
                .hess
                .solve(&lin.w, lin.out, &f, &job(&self.cfg, &h, dtype, None))
                .map_err(|e| anyhow::anyhow!("tensor '{}': {e}", lin.name))?;
            let values = match (self.cfg.quant, &solved.quantized) {
                (Some(q), None) => {
                    // As the engine does: the pruned values in the weight's
                    // dtype, rounded to nearest.
                    let mut v: Vec<f32> =
                        solved.values.iter().map(|&x| round_to(dtype, x)).collect();
                    if let Some(k) = &solved.keep {
                        v.iter_mut().zip(k).for_each(|(x, &k)| *x *= k as f32);
                    }
                    quantize_matrix(&q.spec, &v, lin.out, lin.inn, dtype, q.rounding).dequantized()
                }
                _ => solved.values,
            };
            lin.w = values.iter().map(|&v| round_to(dtype, v)).collect();
        }
        Ok(())
    }
}
