//! Pruning inside a GGUF export (`shears compress` with `--type` or a
//! `[gguf]` recipe table): each selected linear weight is masked on the
//! backend's select and mask families, exactly as `shears prune` masks it,
//! and the masked values go on to the GGUF blocks. llama.cpp has no sparse
//! kernels, so a pruned file is no smaller or faster; the zeros survive
//! the block types without an offset (Q8_0, Q6_K, Q5_0, Q4_0 and the float
//! types) and move by the block's minimum in those with one (Q4_K, Q5_K,
//! Q5_1).

use std::collections::HashMap;

use anyhow::Result;
use shears_core::calibration::Calibration;
use shears_core::reference::mask::zero_pruned;
use shears_core::{Checkpoint, TensorView};

use crate::args::RunArgs;
use crate::backend::Backend;
use crate::engine::config::PruneConfig;
use crate::engine::masks::{load_aux, make_mask, Aux, MaskFamilies};

/// The selected weights' scoring inputs and the backend's families.
pub struct Pruning<'c> {
    p: PruneConfig,
    aux: HashMap<usize, Aux<'c>>,
    importance: Box<dyn shears_core::reference::importance::Importance + 'c>,
    select: Box<dyn shears_core::reference::select::Select + 'c>,
    mask: Box<dyn shears_core::reference::mask::Mask + 'c>,
    /// Weights pruned and kept so far, for the report.
    pub pruned: u64,
    pub total: u64,
    pub tensors: usize,
}

impl<'c> Pruning<'c> {
    /// Selects the tensors `run`'s --include/--exclude (or the default:
    /// every linear layer's weight but the embeddings and the output head)
    /// name and loads their scoring inputs from `calib` where the method
    /// needs them.
    pub fn new(
        ckpt: &Checkpoint,
        run: &RunArgs,
        p: PruneConfig,
        calib: Option<&'c Calibration>,
        backend: &'c Backend,
    ) -> Result<Self> {
        let selection = crate::select::select(ckpt, &run.select.include, &run.select.exclude)?;
        for g in &selection.unmatched {
            tracing::warn!("--include/--exclude pattern '{g}' matched no tensor");
        }
        let chosen: Vec<usize> = selection.compressed().collect();
        let aux = load_aux(ckpt, &chosen, &p, calib, false, run.seed)?;
        Ok(Pruning {
            p,
            aux: chosen.into_iter().zip(aux).collect(),
            importance: backend.importance(),
            select: backend.select(),
            mask: backend.mask(),
            pruned: 0,
            total: 0,
            tensors: 0,
        })
    }

    /// Tensor `i`'s bytes with its pruned weights zeroed, when it is
    /// selected.
    pub fn apply(&mut self, i: usize, view: &TensorView) -> Result<Option<Vec<u8>>> {
        let Some(x) = self.aux.get(&i) else {
            return Ok(None);
        };
        let families = MaskFamilies {
            importance: self.importance.as_ref(),
            select: self.select.as_ref(),
            mask: self.mask.as_ref(),
        };
        let (keep, _) = make_mask(&families, view, &x.scorer(self.p.method), self.p.mode, None)?;
        self.pruned += keep.iter().filter(|&&k| k == 0).count() as u64;
        self.total += keep.len() as u64;
        self.tensors += 1;
        Ok(Some(zero_pruned(view.dtype(), view.bytes(), &keep)))
    }
}
