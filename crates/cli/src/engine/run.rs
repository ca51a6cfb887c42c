//! The engine's one streaming loop: each tensor is read (the next one read
//! ahead), kept or compressed on the backend, checked (`--verify`,
//! `--validate`) and handed by name to the writer thread; then the config
//! and side files, the report, and the rename into place. Commands build a
//! [`Plan`]; this runs it.

use std::time::Instant;

use anyhow::Result;
use shears_core::checkpoint::CheckpointWriter;
use shears_core::formats::compressed_tensors::{layer_bytes, layer_tensors};
use shears_core::reference::mask::zero_pruned;
use shears_core::reference::matmul::{probe_inputs, relative_error, PackedParts};
use shears_core::reference::quant::Quantized;
use shears_core::reference::score::Method;
use shears_core::reference::select::Cut;
use shears_core::{encode_f32, TensorInfo, TensorView};

use super::config::{Format, Mode};
use super::masks::{global_scope_cut, make_mask, Aux, MaskFamilies};
use super::plan::{Action, Plan};
use super::report::{PruneRow, QuantRow, Report, Row};
use crate::backend::{Backend, Verifier};
use crate::output::Out;
use crate::pipeline::{self, Piece, Sink};
use crate::progress::Progress;
use crate::CheckFailed;

/// Runs `plan` on `backend`, prints the report, and writes the output only
/// when every check passed.
pub fn execute(plan: &Plan, backend: &Backend, quiet: bool, out: &mut Out) -> Result<()> {
    let cfg = plan.cfg;
    let ckpt = plan.ckpt;
    let opts = crate::select::writer_options(ckpt, &cfg.model, cfg.force, cfg.sync);
    let writer = CheckpointWriter::create(&cfg.output, plan.shards.clone(), opts)?;
    let mut stage = Stage::new(plan, backend)?;
    let start = Instant::now();
    let label = if cfg.quant.is_some() {
        "quantize"
    } else {
        "prune"
    };
    let mut progress = Progress::bytes(ckpt.total_bytes(), label, quiet);
    let mut rows = Vec::new();
    let ((), mut writer) = pipeline::streamed(writer, |sink| {
        let mut aux = plan.aux.iter();
        let mut done = 0u64;
        for (ti, (t, action)) in ckpt.tensors.iter().zip(&plan.actions).enumerate() {
            progress.tensor(ti, ckpt.tensors.len(), &t.name);
            // Reading the next tensor overlaps this one's compute.
            if let Some(next) = ckpt.tensors.get(ti + 1) {
                ckpt.view(next).prefetch();
            }
            let view = ckpt.view(t);
            match action {
                Action::Keep(_) => sink.send(Piece::View(t.name.clone(), view))?,
                Action::Compress => {
                    let zeros = crate::select::check_values(ckpt, t, &view)?;
                    let mut row = stage.compress(t, &view, aux.next(), sink)?;
                    if let Row::Quant(q) = &mut row {
                        q.input_zeros = zeros;
                    }
                    view.release(0..t.nbytes());
                    rows.push(row);
                }
            }
            done += t.nbytes() as u64;
            progress.set(done);
        }
        Ok(())
    })?;
    progress.finish();
    if let (Some(mut config), Some(q)) = (plan.config.clone(), &cfg.quant) {
        config.insert(
            "quantization_config".into(),
            super::report::quantization_config(plan, q, &rows),
        );
        writer.add_file("config.json", &serde_json::to_vec_pretty(&config)?)?;
    }
    for f in &ckpt.extra_files {
        if !(f.name == "config.json" && plan.config.is_some()) {
            writer.copy_file(f)?;
        }
    }
    let report = Report {
        rows,
        seconds: start.elapsed().as_secs_f64(),
        backend: backend.describe(),
    };
    report.emit(plan, out)?;
    if stage.mismatched > 0 {
        drop(writer); // a failed check leaves no output behind
        return Err(CheckFailed(format!(
            "--verify: {} values differ between {} and the CPU reference; no output written",
            stage.mismatched,
            backend.describe()
        ))
        .into());
    }
    let dest = writer.finish()?;
    tracing::info!("wrote {}", dest.display());
    Ok(())
}

/// The compute of one run: the backend's families, the verifier's, the
/// global cut and the code buffer reused across tensors.
pub(crate) struct Stage<'p, 'b> {
    pub(super) plan: &'p Plan<'p>,
    pub(super) backend: &'b Backend,
    pub(super) importance: Box<dyn shears_core::reference::importance::Importance + 'b>,
    pub(super) select: Box<dyn shears_core::reference::select::Select + 'b>,
    pub(super) mask: Box<dyn shears_core::reference::mask::Mask + 'b>,
    pub(super) quant: Box<dyn shears_core::ops::quant::Quant + 'b>,
    pub(super) float: Box<dyn shears_core::ops::float::FloatQuant + 'b>,
    pub(super) verifier: Verifier,
    pub(super) global: Option<Cut>,
    pub(super) ties_left: u64,
    pub(super) qbuf: Quantized,
    pub(super) mismatched: u64,
    pub(super) inject_fault: bool,
    /// NVFP4: the global scale of every selected weight (its fused group's).
    pub(super) global_scales: std::collections::HashMap<String, f32>,
    /// GPTQ / SparseGPT: the inverse Hessian factors of the last inputs.
    pub(super) factors: super::hessian::Factors,
}

impl<'p, 'b> Stage<'p, 'b> {
    fn new(plan: &'p Plan<'p>, backend: &'b Backend) -> Result<Self> {
        let select = backend.select();
        // Global scope: one cut over every selected tensor, found by a
        // first (read-only) pass; ties at the cut are pruned in tensor order.
        let global = match &plan.cfg.prune {
            Some(p) => global_scope_cut(plan.ckpt, &plan.chosen, &plan.aux, p, select.as_ref())?,
            None => None,
        };
        Ok(Stage {
            plan,
            backend,
            importance: backend.importance(),
            select,
            mask: backend.mask(),
            quant: backend.quant(),
            float: backend.float(),
            verifier: backend.verifier(),
            global,
            ties_left: global.map_or(0, |c| c.ties),
            qbuf: Quantized::default(),
            mismatched: 0,
            inject_fault: fault_injected(),
            global_scales: super::float::nvfp4_global_scales(plan)?,
            factors: Default::default(),
        })
    }

    /// Prunes and/or quantizes one tensor, sends its output tensors, and
    /// returns its report row.
    fn compress<'v>(
        &mut self,
        t: &TensorInfo,
        view: &TensorView<'v>,
        aux: Option<&Aux>,
        sink: &Sink<'v>,
    ) -> Result<Row> {
        if self.plan.cfg.hessian.is_some() {
            return self.compress_hessian(t, view, aux, sink);
        }
        let t0 = Instant::now();
        let ckpt = self.plan.ckpt;
        let ctx = |e: shears_core::Error| {
            anyhow::anyhow!("{}: tensor '{}': {e}", ckpt.path_of(t).display(), t.name)
        };
        if let Some(row) = self.prune_and_quantize(t, view, aux, sink, t0)? {
            return Ok(row);
        }
        let mut mask_mismatches = None;
        let keep = match (&self.plan.cfg.prune, aux) {
            (Some(p), Some(x)) => {
                let (m, diff) = self.mask_of(view, x, p.method, p.mode).map_err(ctx)?;
                mask_mismatches = diff;
                Some(m)
            }
            _ => None,
        };
        let Some(q) = self.plan.cfg.quant else {
            let keep = keep.expect("a pruning run has a mask");
            let output_error = match self.plan.cfg.checks.validate {
                true => Some(self.validate_mask(view, &keep, aux).map_err(ctx)?),
                false => None,
            };
            sink.send(Piece::Bytes(
                t.name.clone(),
                zero_pruned(t.dtype, view.bytes(), &keep),
            ))?;
            let p = self.plan.cfg.prune.expect("a pruning run");
            return Ok(Row::Prune(PruneRow::new(
                t,
                &p,
                &keep,
                output_error,
                mask_mismatches,
                t0,
            )));
        };
        if q.scheme.is_float() {
            let z = keep.as_deref().map(shears_core::fast::mask::pruned_count);
            let (stats, error, bytes, diff) = self
                .compress_float(t, view, keep.as_deref(), sink)
                .map_err(ctx)?;
            let mismatches = diff.map(|d| d + mask_mismatches.unwrap_or(0));
            if let Some(d) = mismatches.filter(|&d| d > 0) {
                tracing::error!("{}: {d} values differ from the CPU reference", t.name);
                self.mismatched += d;
            }
            let row = QuantRow::new(t, 8, z, bytes, &stats, error, mismatches, t0);
            return Ok(Row::Quant(row));
        }
        let stats = self
            .quant
            .quantize(&q.spec, view, keep.as_deref(), q.rounding, &mut self.qbuf)
            .map_err(ctx)?;
        self.finish_quant(t, view, keep, mask_mismatches, stats, sink, t0)
    }

    /// Magnitude N:M pruning and integer quantization in one pass over the
    /// weight, where the backend has one; `None` otherwise (or for any
    /// other recipe).
    fn prune_and_quantize<'v>(
        &mut self,
        t: &TensorInfo,
        view: &TensorView<'v>,
        aux: Option<&Aux>,
        sink: &Sink<'v>,
        t0: Instant,
    ) -> Result<Option<Row>> {
        let (Some(p), Some(q), Some(x)) = (self.plan.cfg.prune, self.plan.cfg.quant, aux) else {
            return Ok(None);
        };
        let Mode::Pattern { n, m } = p.mode else {
            return Ok(None);
        };
        if p.method != Method::Magnitude || q.scheme.is_float() {
            return Ok(None);
        }
        let ctx = |e: shears_core::Error| {
            let path = self.plan.ckpt.path_of(t);
            anyhow::anyhow!("{}: tensor '{}': {e}", path.display(), t.name)
        };
        let mut keep = Vec::new();
        let fused = self
            .quant
            .quantize_magnitude_nm(&q.spec, view, n, m, q.rounding, &mut keep, &mut self.qbuf)
            .map_err(ctx)?;
        let Some(stats) = fused else {
            return Ok(None);
        };
        let diff = self
            .verify_mask(view, x, p.method, p.mode, None, &keep)
            .map_err(ctx)?;
        let row = self.finish_quant(t, view, Some(keep), diff, stats, sink, t0)?;
        Ok(Some(row))
    }

    /// The rest of quantizing one tensor once its codes are in `qbuf`:
    /// `--verify` against the verifier's codes, `--validate`, sending, and
    /// the report row.
    #[allow(clippy::too_many_arguments)]
    fn finish_quant<'v>(
        &mut self,
        t: &TensorInfo,
        view: &TensorView<'v>,
        keep: Option<Vec<u8>>,
        mask_mismatches: Option<u64>,
        stats: shears_core::ops::quant::ErrorStats,
        sink: &Sink<'v>,
        t0: Instant,
    ) -> Result<Row> {
        let q = self.plan.cfg.quant.expect("a quantizing run");
        let ckpt = self.plan.ckpt;
        let ctx = |e: shears_core::Error| {
            anyhow::anyhow!("{}: tensor '{}': {e}", ckpt.path_of(t).display(), t.name)
        };
        if self.inject_fault {
            if let Some(c) = self.qbuf.codes.first_mut() {
                *c = c.wrapping_add(1);
            }
        }
        let mut mismatches = mask_mismatches;
        if self.plan.cfg.checks.verify {
            let mut check = Quantized::default();
            self.verifier
                .quant
                .quantize(&q.spec, view, keep.as_deref(), q.rounding, &mut check)
                .map_err(ctx)?;
            *mismatches.get_or_insert(0) += differing_codes(&self.qbuf, &check);
        }
        if let Some(d) = mismatches.filter(|&d| d > 0) {
            tracing::error!("{}: {d} values differ from the CPU reference", t.name);
            self.mismatched += d;
        }
        let output_error = match self.plan.cfg.checks.validate {
            true => Some(self.validate_codes(&t.name, view).map_err(ctx)?),
            false => None,
        };
        let bytes_after = self.send_quantized(t, sink)?;
        let zeros = keep
            .as_ref()
            .map(|m| shears_core::fast::mask::pruned_count(m));
        Ok(Row::Quant(QuantRow::new(
            t,
            q.spec.bits,
            zeros,
            bytes_after,
            &stats,
            output_error,
            mismatches,
            t0,
        )))
    }

    /// The keep-mask of a tensor and, under --verify, how many entries the
    /// verifier's mask differs in.
    pub(super) fn mask_of(
        &mut self,
        view: &TensorView,
        x: &Aux,
        method: Method,
        mode: Mode,
    ) -> shears_core::Result<(Vec<u8>, Option<u64>)> {
        let scorer = x.scorer(method);
        let cut = self.global.map(|c| Cut {
            key: c.key,
            ties: self.ties_left,
        });
        let families = MaskFamilies {
            importance: self.importance.as_ref(),
            select: self.select.as_ref(),
            mask: self.mask.as_ref(),
        };
        let (m, used) = make_mask(&families, view, &scorer, mode, cut)?;
        if self.global.is_some() {
            // Ties at the global cut are pruned in tensor order.
            self.ties_left -= used;
        }
        let diff = self.verify_mask(view, x, method, mode, cut, &m)?;
        Ok((m, diff))
    }

    /// Under --verify, how many entries of `keep` differ from the mask the
    /// verifier makes; `None` otherwise.
    fn verify_mask(
        &self,
        view: &TensorView,
        x: &Aux,
        method: Method,
        mode: Mode,
        cut: Option<Cut>,
        keep: &[u8],
    ) -> shears_core::Result<Option<u64>> {
        if !self.plan.cfg.checks.verify {
            return Ok(None);
        }
        let check = MaskFamilies {
            importance: self.importance.as_ref(),
            select: self.verifier.select.as_ref(),
            mask: self.verifier.mask.as_ref(),
        };
        let (m2, _) = make_mask(&check, view, &x.scorer(method), mode, cut)?;
        let diff = keep.iter().zip(&m2).filter(|(a, b)| a != b).count() as u64;
        Ok(Some(diff))
    }

    /// Sends the quantized tensor in the output format; returns its bytes.
    pub(super) fn send_quantized(&self, t: &TensorInfo, sink: &Sink) -> Result<u64> {
        let q = self.plan.cfg.quant.expect("a quantizing run");
        match q.format {
            Format::CompressedTensors => {
                let parts = layer_bytes(&self.qbuf, t.dtype, q.scheme, &q.spec);
                let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
                let names =
                    layer_tensors(prefix, t.shape[0], t.shape[1], t.dtype, q.scheme, &q.spec);
                let mut n = 0u64;
                for (o, p) in names.into_iter().zip(parts) {
                    n += p.len() as u64;
                    sink.send(Piece::Bytes(o.name, p))?;
                }
                Ok(n)
            }
            Format::Dense => {
                let deq = self.qbuf.dequantized();
                let mut bytes = vec![0u8; t.nbytes()];
                encode_f32(t.dtype, &deq, &mut bytes);
                let n = bytes.len() as u64;
                sink.send(Piece::Bytes(t.name.clone(), bytes))?;
                Ok(n)
            }
        }
    }

    /// Seeded probe rows for validation.
    pub(super) fn probes(&self, cols: usize) -> (Vec<f32>, usize) {
        let rows = self.plan.cfg.checks.probe_rows;
        (probe_inputs(rows, cols, self.plan.cfg.seed), rows)
    }

    /// ‖Y − Ŷ‖/‖Y‖ of a pruned layer, on its calibration rows or probes.
    fn validate_mask(
        &self,
        w: &TensorView,
        keep: &[u8],
        aux: Option<&Aux>,
    ) -> shears_core::Result<f64> {
        let (_, cols) = w.matrix_dims();
        let (x, p) = match aux.and_then(|a| a.inputs.clone()) {
            Some(given) => given,
            None => self.probes(cols),
        };
        let mm = self.backend.matmul();
        let y = mm.masked_matmul(&x, p, w, None)?;
        let yhat = mm.masked_matmul(&x, p, w, Some(keep))?;
        Ok(relative_error(&y, &yhat))
    }

    /// ‖Y − Ŷ‖/‖Y‖ against the original layer, Ŷ read straight from the
    /// packed codes, on the calibration inputs of this weight or probes.
    fn validate_codes(&self, name: &str, original: &TensorView) -> shears_core::Result<f64> {
        let q = self.plan.cfg.quant.expect("a quantizing run");
        let cols = self.qbuf.cols;
        let given = match self.plan.calibration {
            Some(c) => c.inputs(name, cols)?,
            None => None,
        };
        let (x, p) = given.unwrap_or_else(|| self.probes(cols));
        let parts = PackedParts::from_quantized(&self.qbuf, q.spec.bits, q.spec.symmetric);
        let mm = self.backend.matmul();
        let y = mm.masked_matmul(&x, p, original, None)?;
        let yhat = mm.dequant_matmul(&x, p, &parts.view())?;
        Ok(relative_error(&y, &yhat))
    }
}

/// Codes, scales and zero points that differ between two quantizations.
fn differing_codes(a: &Quantized, b: &Quantized) -> u64 {
    let codes = a.codes.iter().zip(&b.codes).filter(|(x, y)| x != y).count();
    let params = a
        .params
        .iter()
        .zip(&b.params)
        .filter(|(x, y)| x.scale.to_bits() != y.scale.to_bits() || x.zero_point != y.zero_point)
        .count();
    (codes + params) as u64
}

/// Test seam, in debug builds only (what `cargo test` runs):
/// `SHEARS_INJECT_FAULT=codes`, read once per run, makes the first code of
/// every tensor wrong so tests can watch `--verify` catch it (exit 1,
/// nothing written). Release builds have no such switch.
fn fault_injected() -> bool {
    cfg!(debug_assertions) && std::env::var_os("SHEARS_INJECT_FAULT").is_some_and(|v| v == "codes")
}
