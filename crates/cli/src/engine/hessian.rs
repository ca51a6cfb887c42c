//! GPTQ and SparseGPT in the engine: each selected weight is swept with its
//! input's XᵀX from the calibration file (one factor per input, kept while
//! the weights that share it — q/k/v, gate/up — pass), and its report row
//! gets the Hessian-weighted error of the result and of the round-to-
//! nearest / magnitude baseline at the same settings.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use shears_core::ops::quant::ErrorStats;
use shears_core::reference::hessian::{Factor, Job, QuantJob, Solved, Sparsify};
use shears_core::reference::matmul::relative_error;
use shears_core::reference::quant::Quantized;
use shears_core::{encode_f32, DType, TensorBuf, TensorInfo, TensorView};

use super::config::{HessianConfig, Mode, RunConfig, Scope};
use super::masks::Aux;
use super::report::{PruneRow, QuantRow, Row, Weighted};
use super::run::Stage;
use crate::pipeline::{Piece, Sink};

/// Factors kept at once: enough for q/k/v (with o between them in
/// alphabetical storage) and gate/up.
const CACHED: usize = 2;

/// Fraction of codes and mask entries `--verify` lets differ between
/// backends (the agreement DESIGN.md states for the hessian family).
const VERIFY_DIFFER_MAX: f64 = 0.01;

/// Codes and mask entries that differ between two sweeps.
fn differing(a: &Solved, b: &Solved) -> u64 {
    let mut d = 0;
    if let (Some(x), Some(y)) = (&a.quantized, &b.quantized) {
        d += x.codes.iter().zip(&y.codes).filter(|(p, q)| p != q).count();
    }
    if let (Some(x), Some(y)) = (&a.keep, &b.keep) {
        d += x.iter().zip(y).filter(|(p, q)| p != q).count();
    }
    d as u64
}

/// The weight whose input `name` reads: q/k/v share q's, gate/up gate's.
pub fn input_key(name: &str) -> String {
    for (from, to) in [
        ("self_attn.k_proj.", "self_attn.q_proj."),
        ("self_attn.v_proj.", "self_attn.q_proj."),
        ("mlp.up_proj.", "mlp.gate_proj."),
    ] {
        if let Some(i) = name.find(from) {
            return format!("{}{to}{}", &name[..i], &name[i + from.len()..]);
        }
    }
    name.to_string()
}

/// The last few factors, by input.
#[derive(Default)]
pub struct Factors {
    recent: VecDeque<(String, Arc<Factor>)>,
}

impl Factors {
    /// The factor of `key`'s input, made by `make` when not kept.
    pub fn get(
        &mut self,
        key: &str,
        make: impl FnOnce() -> shears_core::Result<Factor>,
    ) -> shears_core::Result<Arc<Factor>> {
        if let Some((_, f)) = self.recent.iter().find(|(k, _)| k == key) {
            return Ok(f.clone());
        }
        let f = Arc::new(make()?);
        if self.recent.len() == CACHED {
            self.recent.pop_front();
        }
        self.recent.push_back((key.to_string(), f.clone()));
        Ok(f)
    }
}

/// The sweep of one weight of `dtype` under `cfg`, with `keep` the mask of
/// a scoring method when the run prunes by one.
pub fn job<'a>(
    cfg: &RunConfig,
    h: &HessianConfig,
    dtype: DType,
    keep: Option<&'a [u8]>,
) -> Job<'a> {
    let quant = cfg.quant.filter(|_| h.gptq).map(|q| QuantJob {
        spec: q.spec,
        rounding: q.rounding,
        dtype,
        scales: h.scales,
    });
    let prune = match (cfg.prune, keep) {
        (Some(p), _) if p.sparsegpt => Some(match p.mode {
            Mode::Pattern { n, m } => Sparsify::Pattern { n, m },
            other => Sparsify::Unstructured(other.target()),
        }),
        (_, Some(k)) => Some(Sparsify::Keep(k)),
        _ => None,
    };
    Job {
        quant,
        prune,
        block: h.block,
    }
}

impl Stage<'_, '_> {
    /// GPTQ / SparseGPT on one tensor: sends its output tensors and returns
    /// its report row.
    pub(super) fn compress_hessian<'v>(
        &mut self,
        t: &TensorInfo,
        view: &TensorView<'v>,
        aux: Option<&Aux>,
        sink: &Sink<'v>,
    ) -> Result<Row> {
        let t0 = Instant::now();
        let cfg = self.plan.cfg;
        let h = cfg.hessian.expect("a hessian run");
        let ckpt = self.plan.ckpt;
        let ctx = |e: shears_core::Error| {
            anyhow::anyhow!("{}: tensor '{}': {e}", ckpt.path_of(t).display(), t.name)
        };
        let calib = self.plan.calibration.expect("checked by the plan");
        let (rows, cols) = view.matrix_dims();
        let gram = calib
            .gram(&t.name, cols)
            .map_err(ctx)?
            .expect("checked by the plan");
        let hess = self.backend.hessian();
        let factor = self
            .factors
            .get(&input_key(&t.name), || {
                hess.factor(&gram, cols, h.dampening, h.actorder)
            })
            .map_err(ctx)?;
        let w = view.to_f32().map_err(ctx)?;
        // A scoring method's mask (kept fixed in the sweep); under
        // SparseGPT, magnitude's at the same settings for the baseline.
        let scored = match (cfg.prune, aux) {
            (Some(p), Some(x)) => {
                let mode = match p.mode {
                    Mode::Unstructured { sparsity, .. } if p.sparsegpt => Mode::Unstructured {
                        sparsity,
                        scope: Scope::Tensor,
                    },
                    m => m,
                };
                Some(self.mask_of(view, x, p.method, mode).map_err(ctx)?.0)
            }
            _ => None,
        };
        let fixed = scored.as_deref().filter(|_| !h.sparsegpt);
        let the_job = job(cfg, &h, t.dtype, fixed);
        let solved = hess.solve(&w, rows, &factor, &the_job).map_err(ctx)?;
        // --verify: the verifier's sweep from its own factor, compared
        // within the family's tolerance (DESIGN.md: not bytes).
        let mismatches = match cfg.checks.verify {
            false => None,
            true => {
                let v = &self.verifier.hessian;
                let f2 = v
                    .factor(&gram, cols, h.dampening, h.actorder)
                    .map_err(ctx)?;
                let check = v.solve(&w, rows, &f2, &the_job).map_err(ctx)?;
                let d = differing(&solved, &check);
                if d as f64 > VERIFY_DIFFER_MAX * (rows * cols) as f64 {
                    tracing::error!(
                        "{}: {d} codes or mask entries differ from {} (more than {:.0}%)",
                        t.name,
                        v.backend(),
                        100.0 * VERIFY_DIFFER_MAX
                    );
                    self.mismatched += d;
                }
                Some(d)
            }
        };
        let Solved {
            values,
            quantized,
            g_idx,
            keep,
        } = solved;
        let quantized = match (cfg.quant, quantized) {
            (_, Some(q)) => Some(q),
            (Some(q), None) => {
                // Round to nearest after the sweep pruned (SparseGPT + rtn),
                // from the pruned weight as stored in its dtype.
                let buf = TensorBuf::from_f32(t.dtype, vec![rows, cols], &values)?;
                let mut out = Quantized::default();
                self.quant
                    .quantize(&q.spec, &buf.view(), keep.as_deref(), q.rounding, &mut out)
                    .map_err(ctx)?;
                Some(out)
            }
            (None, None) => None,
        };
        let result = match &quantized {
            Some(q) if g_idx.is_none() => q.dequantized(),
            _ => values,
        };
        // The baseline: round to nearest and/or the scored mask.
        let baseline = match cfg.quant {
            Some(q) => {
                let mut out = Quantized::default();
                self.quant
                    .quantize(&q.spec, view, scored.as_deref(), q.rounding, &mut out)
                    .map_err(ctx)?;
                out.dequantized()
            }
            None => {
                let k = scored.as_deref().expect("a pruning run has a mask");
                w.iter().zip(k).map(|(&v, &k)| v * k as f32).collect()
            }
        };
        let errors = hess
            .weighted_errors(&w, &[&result, &baseline], rows, &gram)
            .map_err(ctx)?;
        let weighted = Weighted {
            result: errors[0],
            baseline: errors[1],
        };
        let output_error = match cfg.checks.validate {
            true => Some(self.validate_values(&t.name, view, &result).map_err(ctx)?),
            false => None,
        };
        let zeros = keep.as_deref().map(shears_core::fast::mask::pruned_count);
        let Some(q) = cfg.quant else {
            let keep = keep.expect("a pruning run");
            let mut bytes = vec![0u8; t.nbytes()];
            encode_f32(t.dtype, &result, &mut bytes);
            sink.send(Piece::Bytes(t.name.clone(), bytes))?;
            let p = cfg.prune.expect("a pruning run");
            let row = PruneRow::new(t, &p, &keep, output_error, mismatches, t0).weighted(weighted);
            return Ok(Row::Prune(row));
        };
        self.qbuf = quantized.expect("a quantizing run");
        let mut bytes_after = self.send_quantized(t, sink)?;
        if let Some(g) = g_idx {
            let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
            let b: Vec<u8> = g.iter().flat_map(|v| v.to_le_bytes()).collect();
            bytes_after += b.len() as u64;
            sink.send(Piece::Bytes(format!("{prefix}.weight_g_idx"), b))?;
        }
        let mut stats = ErrorStats::default();
        for (&a, &b) in w.iter().zip(&result) {
            let e = (a - b) as f64;
            stats.max_abs = stats.max_abs.max(e.abs());
            stats.sum_sq_err += e * e;
            stats.sum_sq += a as f64 * a as f64;
        }
        let row = QuantRow::new(
            t,
            q.spec.bits,
            zeros,
            bytes_after,
            &stats,
            output_error,
            mismatches,
            t0,
        )
        .weighted(weighted);
        Ok(Row::Quant(row))
    }

    /// ‖Y − Ŷ‖/‖Y‖ of the solved weight `values` against the original, on
    /// the calibration rows of this weight or probes.
    fn validate_values(
        &self,
        name: &str,
        original: &TensorView,
        values: &[f32],
    ) -> shears_core::Result<f64> {
        let (rows, cols) = original.matrix_dims();
        let given = match self.plan.calibration {
            Some(c) => c.inputs(name, cols)?,
            None => None,
        };
        let (x, p) = given.unwrap_or_else(|| self.probes(cols));
        let buf = TensorBuf::from_f32(DType::F32, vec![rows, cols], values)?;
        let mm = self.backend.matmul();
        let y = mm.masked_matmul(&x, p, original, None)?;
        let yhat = mm.masked_matmul(&x, p, &buf.view(), None)?;
        Ok(relative_error(&y, &yhat))
    }
}
