//! The float schemes in the engine (FP8 per channel or block, NVFP4,
//! MXFP4): each layer on the backend's float family (the fast CPU path or
//! shaders/float.wgsl), checked against the verifier's under --verify,
//! measured, and sent in the compressed-tensors layout; NVFP4's global
//! scales from a read-only pass.

use anyhow::Result;
use shears_core::formats::compressed_tensors::layer_tensors;
use shears_core::reference::matmul::relative_error;
use shears_core::{encode_f32, DType, TensorInfo, TensorView};

use super::config::Format;
use super::plan::Plan;
use super::run::Stage;
use crate::pipeline::{Piece, Sink};

impl Stage<'_, '_> {
    /// A float layer (FP8, NVFP4 or MXFP4): codes and scales on the
    /// backend's float family (pruned weights zeroed first), checked
    /// against the verifier's under --verify, measured, validated, and
    /// sent. Returns the error statistics, the output error, the bytes
    /// written and, under --verify, how many codes and scales differ.
    #[allow(clippy::type_complexity)]
    pub(super) fn compress_float(
        &self,
        t: &TensorInfo,
        view: &TensorView,
        keep: Option<&[u8]>,
        sink: &Sink,
    ) -> shears_core::Result<(
        shears_core::ops::quant::ErrorStats,
        Option<f64>,
        u64,
        Option<u64>,
    )> {
        use shears_core::fast::float as fast;
        use shears_core::formats::compressed_tensors::Scheme;
        let q = self.plan.cfg.quant.expect("a quantizing run");
        // A pruned layer: its bytes with the pruned values set to +0 (exact
        // in every dtype).
        let masked = match keep {
            Some(k) => {
                let size = t.dtype.bits() / 8;
                let mut data = view.bytes().to_vec();
                for (e, _) in k.iter().enumerate().filter(|(_, &k)| k == 0) {
                    data[e * size..(e + 1) * size].fill(0);
                }
                Some(shears_core::TensorBuf {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data,
                })
            }
            None => None,
        };
        let w = masked.as_ref().map_or(*view, |b| b.view());
        let verify = self.plan.cfg.checks.verify;
        // The dense values, only where something reads them: --validate's
        // product, or the `--format dense` output.
        let dense = self.plan.cfg.checks.validate || q.format == Format::Dense;
        let (stats, deq, parts, diff) = if q.scheme.fp4_group().is_some() {
            let gs = match q.scheme {
                Scheme::Nvfp4A16 => Some(self.global_scales.get(&t.name).copied().unwrap_or(1.0)),
                _ => None,
            };
            let mut fq = self.float.fp4(&w, gs)?;
            if self.inject_fault {
                fq.codes.iter_mut().take(1).for_each(|c| *c ^= 1);
            }
            let diff = match verify {
                true => {
                    let r = self.verifier.float.fp4(&w, gs)?;
                    Some(differing(&fq.codes, &r.codes, &fq.scales, &r.scales))
                }
                false => None,
            };
            let stats = fast::error_stats_rows(&w, |r, out| fast::fp4_row(&fq, r, out))?;
            let deq = dense.then(|| fast::dequantize_fp4(&fq));
            let mut parts = vec![fq.packed(), fq.scales.clone()];
            parts.extend(fq.global_scale.map(|g| g.to_le_bytes().to_vec()));
            (stats, deq, parts, diff)
        } else {
            let block = q.scheme.block();
            let mut fq = self.float.fp8(&w, block, q.rounding)?;
            if self.inject_fault {
                fq.codes.iter_mut().take(1).for_each(|c| *c ^= 1);
            }
            let diff = match verify {
                true => {
                    let r = self.verifier.float.fp8(&w, block, q.rounding)?;
                    let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    Some(differing(
                        &fq.codes,
                        &r.codes,
                        &bits(&fq.scales),
                        &bits(&r.scales),
                    ))
                }
                false => None,
            };
            let table = fast::e4m3_table();
            let stats = fast::error_stats_rows(&w, |r, out| fast::fp8_row(&fq, &table, r, out))?;
            let deq = dense.then(|| fast::dequantize_fp8(&fq));
            let mut scales = vec![0u8; fq.scales.len() * t.dtype.bits() / 8];
            encode_f32(t.dtype, &fq.scales, &mut scales);
            (stats, deq, vec![fq.codes, scales], diff)
        };
        let error = match &deq {
            Some(d) => self.validate_dense(t, view, d)?,
            None => None,
        };
        let n = self.send_layer(t, deq.as_deref(), parts, sink)?;
        Ok((stats, error, n, diff))
    }

    /// Under --validate, ‖Y − Ŷ‖/‖Y‖ of the layer against its dequantized
    /// values `deq`, on its calibration inputs or probes.
    fn validate_dense(
        &self,
        t: &TensorInfo,
        view: &TensorView,
        deq: &[f32],
    ) -> shears_core::Result<Option<f64>> {
        if !self.plan.cfg.checks.validate {
            return Ok(None);
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let given = match self.plan.calibration {
            Some(c) => c.inputs(&t.name, cols)?,
            None => None,
        };
        let (xs, p) = given.unwrap_or_else(|| self.probes(cols));
        let dense = shears_core::TensorBuf::from_f32(DType::F32, vec![rows, cols], deq)?;
        let mm = self.backend.matmul();
        let y = mm.masked_matmul(&xs, p, view, None)?;
        let yhat = mm.masked_matmul(&xs, p, &dense.view(), None)?;
        Ok(Some(relative_error(&y, &yhat)))
    }

    /// Sends a float layer: its dequantized values in the input's dtype
    /// (`--format dense`), or `parts` under the names the scheme gives
    /// them. Returns the bytes sent.
    fn send_layer(
        &self,
        t: &TensorInfo,
        deq: Option<&[f32]>,
        parts: Vec<Vec<u8>>,
        sink: &Sink,
    ) -> shears_core::Result<u64> {
        let q = self.plan.cfg.quant.expect("a quantizing run");
        let send = |name: String, bytes: Vec<u8>| {
            sink.send(Piece::Bytes(name, bytes))
                .map_err(|e| shears_core::Error::Invalid(e.to_string()))
        };
        if q.format == Format::Dense {
            let mut bytes = vec![0u8; t.nbytes()];
            encode_f32(
                t.dtype,
                deq.expect("dense values for --format dense"),
                &mut bytes,
            );
            let n = bytes.len() as u64;
            send(t.name.clone(), bytes)?;
            return Ok(n);
        }
        let prefix = t.name.strip_suffix(".weight").unwrap_or(&t.name);
        let names = layer_tensors(prefix, t.shape[0], t.shape[1], t.dtype, q.scheme, &q.spec);
        let mut n = 0;
        for (o, bytes) in names.into_iter().zip(parts) {
            n += bytes.len() as u64;
            send(o.name, bytes)?;
        }
        Ok(n)
    }
}

/// How many codes and scales of one backend differ from another's.
fn differing<S: PartialEq>(codes: &[u8], want: &[u8], scales: &[S], want_scales: &[S]) -> u64 {
    let n = codes.iter().zip(want).filter(|(a, b)| a != b).count()
        + scales
            .iter()
            .zip(want_scales)
            .filter(|(a, b)| a != b)
            .count();
    n as u64
}

/// NVFP4's global scales, from a read-only pass over the selected weights:
/// the layers vLLM fuses (q/k/v, and gate/up, of one decoder layer) share
/// the scale of their joint maximum; empty for other schemes.
pub(super) fn nvfp4_global_scales(plan: &Plan) -> Result<std::collections::HashMap<String, f32>> {
    use shears_core::formats::compressed_tensors::Scheme;
    use shears_core::reference::fp4::nv_global_scale;
    let mut out = std::collections::HashMap::new();
    if plan.cfg.quant.map(|q| q.scheme) != Some(Scheme::Nvfp4A16) {
        return Ok(out);
    }
    let fused = |name: &str| -> String {
        for (member, group) in [
            ("self_attn.q_proj", "self_attn.qkv"),
            ("self_attn.k_proj", "self_attn.qkv"),
            ("self_attn.v_proj", "self_attn.qkv"),
            ("mlp.gate_proj", "mlp.gate_up"),
            ("mlp.up_proj", "mlp.gate_up"),
        ] {
            if let Some(stem) = name.strip_suffix(&format!("{member}.weight")) {
                return format!("{stem}{group}");
            }
        }
        name.to_string()
    };
    let mut amax: std::collections::HashMap<String, (f32, shears_core::DType)> =
        std::collections::HashMap::new();
    let ckpt = plan.ckpt;
    for &i in &plan.chosen {
        let t = &ckpt.tensors[i];
        let view = ckpt.view(t);
        let m = shears_core::fast::float::amax_view(&view)?;
        view.release(0..t.nbytes());
        let e = amax.entry(fused(&t.name)).or_insert((0.0, t.dtype));
        e.0 = e.0.max(m);
    }
    for &i in &plan.chosen {
        let t = &ckpt.tensors[i];
        let (m, dtype) = amax[&fused(&t.name)];
        out.insert(t.name.clone(), nv_global_scale(m, dtype));
    }
    Ok(out)
}
