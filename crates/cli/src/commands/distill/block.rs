//! `distill layers --mode block`: every compressed linear of a decoder
//! block trained together on the student's own inputs against the teacher
//! block's output for the same tokens (`shears_core::train::blockwise`, on
//! the backend's training device), then each written in the student's
//! format like the other modes.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use shears_core::encode_f32;
use shears_core::model::rope::RopeTable;
use shears_core::model::LayerWeights;
use shears_core::reference::quant::round_to;
use shears_core::train::block::BlockShape;
use shears_core::train::block_device::BlockOps;
use shears_core::train::blockwise::{block_error, distill_block, BlockProblem};
use shears_core::train::Grid;

use super::job::{log_layer, Written};
use super::model::{ModelJob, Spill};
use super::report::LayerRow;
use shears_core::model::weights::LINEARS;

/// What one target linear of the block starts from.
struct Part {
    target: usize,
    mask: Vec<f32>,
    grid: Option<Grid>,
    dtype: shears_core::DType,
}

impl ModelJob<'_> {
    /// Distills decoder layer `layer`'s targets as one block: `xs` are the
    /// student block's inputs, `yt` the teacher block's outputs (whole
    /// sequences, the last `held_seqs` held out). Updates `ls` to what is
    /// written, parks the output in `spill` and adds the report rows.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_layer<D: BlockOps>(
        &self,
        dev: &D,
        layer: usize,
        ls: &mut LayerWeights,
        xs: &[f32],
        yt: &[f32],
        by_name: &HashMap<&str, usize>,
        spill: &mut Spill,
        rows: &mut Vec<LayerRow>,
    ) -> Result<()> {
        let start = Instant::now();
        let job = &self.job;
        let mut parts: [Option<Part>; 7] = Default::default();
        for (l, rest) in LINEARS.iter().enumerate() {
            let name = format!("model.layers.{layer}.{rest}.weight");
            let Some(&i) = by_name.get(name.as_str()) else {
                continue;
            };
            let (weight, grid, dtype) = job.student_weight(&job.targets[i])?;
            parts[l] = Some(Part {
                target: i,
                mask: job.mask_of(&weight),
                grid,
                dtype,
            });
        }
        if parts.iter().all(Option::is_none) {
            return Ok(());
        }
        let cfg = self.teacher.config();
        let shape = BlockShape::new(cfg, self.seq_len);
        let rope = RopeTable::new(cfg, self.seq_len);
        let split = xs.len() - self.held_seqs * self.seq_len * cfg.hidden;
        let problem = BlockProblem {
            shape,
            rope: &rope,
            x_train: &xs[..split],
            y_train: &yt[..split],
            x_held: &xs[split..],
            y_held: &yt[split..],
            block: ls,
            trained: parts.each_ref().map(Option::is_some),
            masks: parts
                .each_ref()
                .map(|p| p.as_ref().map(|p| p.mask.as_slice())),
            grids: parts
                .each_ref()
                .map(|p| p.as_ref().and_then(|p| p.grid.as_ref())),
        };
        let mut lkd = job.cfg;
        if super::layers::lr_from_weights(job.a) {
            let per_rms = super::layers::BLOCK_LR_PER_RMS
                * super::layers::lr_scale(job.student.scheme.as_ref());
            lkd.lr = per_rms * kept_rms(&parts, ls);
            tracing::info!("decoder layer {layer}: learning rate {:.3e}", lkd.lr);
        }
        let r =
            distill_block(dev, &problem, &lkd).with_context(|| format!("decoder layer {layer}"))?;
        // The block as it would be written (its values swapped into the
        // layer), measured on the held-out sequences; written only when
        // better than the student's block, else the given values go back.
        let mut encoded = Vec::new();
        for (l, p) in parts.iter().enumerate() {
            let Some(p) = p else { continue };
            let t = &job.targets[p.target];
            let codes = p
                .grid
                .as_ref()
                .map(|g| g.codes(&r.weights[l], t.out, t.inn));
            let (values, bytes, new_zeros) = job.encode_weight(
                t,
                &r.weights[l],
                codes.as_ref(),
                p.grid.as_ref(),
                p.dtype,
                &p.mask,
            );
            let given = std::mem::replace(&mut ls.linears_mut()[l].w, values);
            encoded.push((l, given, bytes, new_zeros));
        }
        drop(r.weights);
        // The trained biases as written (the student's dtype), swapped in
        // like the weights.
        let mut biases: HashMap<usize, (Option<Vec<f32>>, Vec<u8>)> = HashMap::new();
        for (l, b) in r.biases.iter().enumerate() {
            let (Some(b), Some(p)) = (b, &parts[l]) else {
                continue;
            };
            let t = &job.targets[p.target];
            let Some(name) = &t.student_bias else {
                continue;
            };
            let dtype = job.student.ckpt.get(name).expect("checked").dtype;
            let values: Vec<f32> = b.iter().map(|&v| round_to(dtype, v)).collect();
            let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
            encode_f32(dtype, &values, &mut bytes);
            let given = ls.linears_mut()[l].bias.replace(values);
            biases.insert(l, (given, bytes));
        }
        let error_written = block_error(dev, shape, &rope, ls, &xs[split..], &yt[split..])?;
        let improved = error_written < r.error_before;
        let seconds = start.elapsed().as_secs_f64() / encoded.len() as f64;
        let train_rows = split / cfg.hidden;
        for (l, given, bytes, new_zeros) in encoded {
            let p = parts[l].as_ref().expect("encoded");
            let t = &job.targets[p.target];
            let kept = p.mask.iter().filter(|&&m| m != 0.0).count();
            let bias = biases.remove(&l);
            if !improved {
                ls.linears_mut()[l].w = given;
                if let Some((given_bias, _)) = &bias {
                    ls.linears_mut()[l].bias = given_bias.clone();
                }
            }
            let row = LayerRow {
                name: t.name.clone(),
                shape: [t.out, t.inn],
                quantized: p.grid.is_some(),
                density: kept as f64 / (t.out * t.inn) as f64,
                train_rows,
                held_rows: (xs.len() - split) / cfg.hidden,
                error_before: r.error_before,
                error_after: if improved {
                    error_written
                } else {
                    r.error_before
                },
                trained_error: error_written,
                kept_student: !improved,
                new_zeros: if improved { new_zeros } else { 0 },
                first_loss: r.losses.first().copied().unwrap_or(f64::NAN),
                last_loss: r.losses.last().copied().unwrap_or(f64::NAN),
                steps: r.losses.len(),
                seconds,
            };
            log_layer(&row, rows.len() + 1, job.targets.len());
            rows.push(row);
            let w = Written {
                weight: improved.then_some(bytes),
                bias: bias.filter(|_| improved).map(|(_, b)| b),
                pending: 1 + usize::from(t.student_bias.is_some()),
            };
            spill.put(p.target, w)?;
        }
        Ok(())
    }
}

/// The root mean square of the kept weights of the block's trained linears.
fn kept_rms(parts: &[Option<Part>; 7], ls: &LayerWeights) -> f32 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (p, l) in parts.iter().zip(ls.linears()) {
        let Some(p) = p else { continue };
        for (&w, &m) in l.w.iter().zip(&p.mask) {
            if m != 0.0 {
                sum += (w as f64) * (w as f64);
                n += 1;
            }
        }
    }
    (sum / n.max(1) as f64).sqrt() as f32
}
