//! The backend half of `shears distill layers`: each target layer
//! distilled on the training device, its output encoded as the student
//! stores it, and the checkpoint streamed to the writer thread.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use shears_core::calibration::Calibration;
use shears_core::checkpoint::{CheckpointWriter, OutputTensor};
use shears_core::reference::fp4::pack_e2m1;
use shears_core::reference::matmul::probe_inputs;
use shears_core::reference::quant::round_to;
use shears_core::train::{
    distill_layer, held_out_error, Device, Grid, GridShape, LayerProblem, Levels, LkdConfig,
    Targets,
};
use shears_core::{encode_f32, Checkpoint, DType};

use super::layers::{Student, Target};
use super::report::LayerRow;
use crate::args::DistillLayersArgs;
use crate::pipeline::{self, Piece};
use crate::progress::Progress;
use crate::select;
use crate::training::OnDevice;

/// Distillation and writing on one backend.
pub(super) struct Job<'a> {
    pub(super) a: &'a DistillLayersArgs,
    pub(super) cfg: LkdConfig,
    pub(super) teacher: &'a Checkpoint,
    pub(super) student: &'a Student<'a>,
    pub(super) targets: &'a [Target],
    pub(super) calibration: Option<&'a Calibration>,
    pub(super) quiet: bool,
    /// `--sync`: shards fsynced before the output appears.
    pub(super) sync: bool,
}

/// A distilled layer's output bytes (None: the student's own bytes are
/// kept) and how many of its tensors are still to be written.
pub(super) struct Written {
    pub(super) weight: Option<Vec<u8>>,
    pub(super) bias: Option<Vec<u8>>,
    pub(super) pending: usize,
}

/// One distilled layer: its report row, its output bytes, and the values
/// the layer computes with as written (the student's own when training did
/// not help).
pub(super) struct Distilled {
    pub(super) row: LayerRow,
    pub(super) written: Written,
    pub(super) values: Vec<f32>,
    pub(super) bias: Option<Vec<f32>>,
}

impl OnDevice for Job<'_> {
    type Output = Vec<LayerRow>;

    fn run<D: Device>(self, dev: &D) -> Result<Vec<LayerRow>> {
        let mut rows = Vec::new();
        self.write(|i| {
            let d = self.distill(dev, i)?;
            log_layer(&d.row, rows.len() + 1, self.targets.len());
            rows.push(d.row);
            Ok(d.written)
        })?;
        Ok(rows)
    }
}

/// A line per finished layer, so logs that are not a terminal (no progress
/// bar) still show the run moving.
pub(super) fn log_layer(row: &LayerRow, k: usize, n: usize) {
    tracing::info!(
        "layer {k}/{n} {}: held-out error {:.5} -> {:.5} ({:.1} s)",
        row.name,
        row.error_before,
        row.error_after,
        row.seconds
    );
}

impl Job<'_> {
    /// Streams the student to the output, each target's tensors replaced by
    /// what `produce(i)` returns for target `i` (called once per target,
    /// when the first of its tensors is reached).
    pub(super) fn write(&self, mut produce: impl FnMut(usize) -> Result<Written>) -> Result<()> {
        let s = self.student;
        let ckpt = s.ckpt;
        // Which target each replaced student tensor belongs to.
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.targets.iter().enumerate() {
            owner.insert(&t.stored, i);
            if let Some(b) = &t.student_bias {
                owner.insert(b, i);
            }
        }
        let mut shards = select::empty_shards(ckpt);
        for t in &ckpt.tensors {
            shards[t.shard].tensors.push(OutputTensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            });
        }
        let opts = select::writer_options(ckpt, &self.a.student, self.a.force, self.sync);
        let mut opts = opts;
        opts.protected.push(self.a.teacher.clone());
        let writer = CheckpointWriter::create(&self.a.output, shards, opts)?;
        let mut progress = Progress::bytes(ckpt.total_bytes(), "distill", self.quiet);
        let mut cache: HashMap<usize, Written> = HashMap::new();
        let mut produced = 0;
        let mut done = 0u64;
        // Streamed like every command: training overlaps the writer thread.
        let ((), mut writer) = pipeline::streamed(writer, |sink| {
            for t in &ckpt.tensors {
                let Some(&i) = owner.get(t.name.as_str()) else {
                    sink.send(Piece::View(t.name.clone(), ckpt.view(t)))?;
                    done += t.nbytes() as u64;
                    progress.set(done);
                    continue;
                };
                let w = match cache.entry(i) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        progress.tensor(produced, self.targets.len(), &self.targets[i].name);
                        produced += 1;
                        e.insert(produce(i)?)
                    }
                };
                let is_bias = Some(&t.name) == self.targets[i].student_bias.as_ref();
                let bytes = if is_bias {
                    w.bias.take()
                } else {
                    w.weight.take()
                };
                match bytes {
                    Some(b) => sink.send(Piece::Bytes(t.name.clone(), b))?,
                    None => sink.send(Piece::View(t.name.clone(), ckpt.view(t)))?,
                }
                w.pending -= 1;
                if w.pending == 0 {
                    cache.remove(&i);
                }
                done += t.nbytes() as u64;
                progress.set(done);
            }
            Ok(())
        })?;
        progress.finish();
        for f in &ckpt.extra_files {
            writer.copy_file(f)?;
        }
        writer.finish()?;
        Ok(())
    }

    /// The input rows of target `i`: its calibration inputs, or seeded
    /// Gaussian probes.
    pub(super) fn inputs(&self, i: usize) -> Result<(Vec<f32>, usize)> {
        let t = &self.targets[i];
        if let Some(c) = self.calibration {
            return Ok(c.inputs(&t.name, t.inn)?.expect("checked before training"));
        }
        let n = self.a.probe_rows;
        let seed = self.a.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9);
        Ok((probe_inputs(n, t.inn, seed), n))
    }

    /// The student's weight of target `t` as f32, its fixed grid when
    /// quantized, and the dtype it is stored in (a quantized layer: the
    /// dtype its values decode to).
    pub(super) fn student_weight(&self, t: &Target) -> Result<(Vec<f32>, Option<Grid>, DType)> {
        let s = self.student;
        match t.quant {
            Some(q) if s.scheme.as_ref().is_some_and(|rs| rs.float.is_some()) => {
                // A float layer: trained on its own scales, re-encoded in
                // its own format.
                let rs = s.scheme.as_ref().expect("checked");
                let l = &s.quantized[q];
                let fg = l.read_float(s.ckpt, rs)?;
                l.release(s.ckpt);
                let grid = Grid {
                    shape: GridShape {
                        levels: fg.levels,
                        group: fg.group,
                    },
                    scales: fg.divisors,
                    zero_points: None,
                };
                Ok((fg.values, Some(grid), rs.dense_dtype_for(l.scale.dtype)))
            }
            Some(q) => {
                let rs = s.scheme.as_ref().expect("quantized layers have a scheme");
                let l = &s.quantized[q];
                let qz = l.read(s.ckpt, rs)?;
                l.release(s.ckpt);
                let grid = Grid {
                    shape: GridShape::int(rs.spec.bits, qz.group),
                    scales: qz.params.iter().map(|p| p.scale).collect(),
                    zero_points: (!rs.spec.symmetric)
                        .then(|| qz.params.iter().map(|p| p.zero_point as f32).collect()),
                };
                Ok((qz.dequantized(), Some(grid), l.scale.dtype))
            }
            None => {
                let info = s.ckpt.get(&t.stored).expect("checked");
                let w = decoded(s.ckpt, &t.stored)?;
                Ok((w, None, info.dtype))
            }
        }
    }

    /// The trained weight as it will be written: its values (rounded to
    /// the stored dtype or on the grid), its bytes, and the kept weights it
    /// turned into exact zeros.
    pub(super) fn encode_weight(
        &self,
        t: &Target,
        weight: &[f32],
        codes: Option<&Vec<i8>>,
        grid: Option<&Grid>,
        dtype: DType,
        mask: &[f32],
    ) -> (Vec<f32>, Vec<u8>, usize) {
        let (values, bytes) = match (grid, codes) {
            (Some(g), Some(codes)) => {
                let rs = self.student.scheme.as_ref().expect("scheme");
                let bytes = if g.shape.levels == Levels::E2M1 {
                    // FP4: two codes a byte, element 2k in the low nibble.
                    codes
                        .chunks(t.inn.max(1))
                        .flat_map(|row| {
                            let row: Vec<u8> = row.iter().map(|&c| c as u8).collect();
                            pack_e2m1(&row)
                        })
                        .collect()
                } else if rs.packed {
                    shears_core::fast::quant::pack_rows_le(codes, t.out, t.inn, rs.spec.bits)
                } else {
                    codes.iter().map(|&c| c as u8).collect()
                };
                // As a loader decodes them: in the dense dtype.
                let values = g.dequantize(codes, t.out, t.inn);
                (values.iter().map(|&v| round_to(dtype, v)).collect(), bytes)
            }
            _ => {
                let values: Vec<f32> = weight.iter().map(|&w| round_to(dtype, w)).collect();
                let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
                encode_f32(dtype, &values, &mut bytes);
                (values, bytes)
            }
        };
        let nz = count_new_zeros(&values, mask);
        (values, bytes, nz)
    }

    /// The keep-mask of a student weight: a zero of a pruned student is a
    /// pruned weight; a quantized student that was not pruned keeps every
    /// weight trainable (a code equal to the zero point is not pruned).
    pub(super) fn mask_of(&self, weight: &[f32]) -> Vec<f32> {
        let pruned = self.student.pruned;
        weight
            .iter()
            .map(|&w| if w == 0.0 && pruned { 0.0 } else { 1.0 })
            .collect()
    }

    /// Distills target `i` on its calibration inputs or probes.
    fn distill<D: Device>(&self, dev: &D, i: usize) -> Result<Distilled> {
        let (x, n) = self.inputs(i)?;
        self.distill_on(dev, i, &x, self.held_rows(n), None)
    }

    /// Of `n` input rows, how many are held out.
    pub(super) fn held_rows(&self, n: usize) -> usize {
        ((n as f64 * self.a.held_out_fraction).round() as usize).clamp(1, n - 1)
    }

    /// Distills target `i` on the input rows `x`, the last `held` of them
    /// held out, against the teacher layer's outputs on them or, when
    /// given, `targets` (the teacher's outputs for the same tokens, as
    /// [`Targets`]).
    pub(super) fn distill_on<D: Device>(
        &self,
        dev: &D,
        i: usize,
        x: &[f32],
        held: usize,
        targets: Option<Targets>,
    ) -> Result<Distilled> {
        let start = Instant::now();
        let t = &self.targets[i];
        let (s, teacher) = (self.student, self.teacher);
        let f32s = decoded;
        let teacher_w = f32s(teacher, &t.name)?;
        let teacher_b = t
            .teacher_bias
            .as_ref()
            .map(|b| f32s(teacher, b))
            .transpose()?;
        let student_b = t
            .student_bias
            .as_ref()
            .map(|b| f32s(s.ckpt, b))
            .transpose()?;
        let bias_dtype = t
            .student_bias
            .as_ref()
            .map(|b| s.ckpt.get(b).expect("checked").dtype);

        // The student's weight, its mask and (quantized) its fixed grid.
        let (weight, grid, dtype) = self.student_weight(t)?;
        let mask = self.mask_of(&weight);
        let kept = mask.iter().filter(|&&m| m != 0.0).count();

        let n = x.len() / t.inn;
        let (x_train, x_held) = x.split_at((n - held) * t.inn);
        let problem = LayerProblem {
            inputs: t.inn,
            outputs: t.out,
            x_train,
            x_held,
            teacher_weight: &teacher_w,
            teacher_bias: teacher_b.as_deref(),
            student_weight: &weight,
            student_bias: student_b.as_deref(),
            mask: Some(&mask),
            grid: grid.as_ref(),
            targets,
        };
        let r =
            distill_layer(dev, &problem, &self.cfg).with_context(|| format!("layer {}", t.name))?;

        // What would be written, and its error measured as written.
        let bias_out = match (&r.bias, bias_dtype) {
            (Some(b), Some(dt)) => Some(b.iter().map(|&v| round_to(dt, v)).collect::<Vec<_>>()),
            _ => None,
        };
        let (values, weight_bytes, new_zeros) =
            self.encode_weight(t, &r.weight, r.codes.as_ref(), grid.as_ref(), dtype, &mask);
        let error_after = held_out_error(dev, &problem, &values, bias_out.as_deref())?;
        let improved = error_after < r.error_before;
        let bias_bytes = bias_out.as_ref().zip(bias_dtype).map(|(b, dt)| {
            let mut bytes = vec![0u8; b.len() * dt.bits() / 8];
            encode_f32(dt, b, &mut bytes);
            bytes
        });
        let (values, bias_values) = match improved {
            true => (values, bias_out),
            false => (weight, student_b),
        };
        let written = Written {
            weight: improved.then_some(weight_bytes),
            bias: bias_bytes.filter(|_| improved),
            pending: 1 + usize::from(t.student_bias.is_some()),
        };
        let row = LayerRow {
            name: t.name.clone(),
            shape: [t.out, t.inn],
            quantized: grid.is_some(),
            density: kept as f64 / (t.out * t.inn) as f64,
            train_rows: n - held,
            held_rows: held,
            error_before: r.error_before,
            error_after: if improved {
                error_after
            } else {
                r.error_before
            },
            trained_error: error_after,
            kept_student: !improved,
            new_zeros: if improved { new_zeros } else { 0 },
            first_loss: r.losses.first().copied().unwrap_or(f64::NAN),
            last_loss: r.losses.last().copied().unwrap_or(f64::NAN),
            steps: r.losses.len(),
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok(Distilled {
            row,
            written,
            values,
            bias: bias_values,
        })
    }
}

/// Kept weights (mask 1) that the written layer stores as exactly zero.
fn count_new_zeros(values: &[f32], mask: &[f32]) -> usize {
    values
        .iter()
        .zip(mask)
        .filter(|(&v, &m)| m != 0.0 && v == 0.0)
        .count()
}

/// Tensor `name` (checked to exist) in f32, its mapped pages dropped from
/// memory after, so a run's memory holds what it decoded, not the files.
fn decoded(ckpt: &Checkpoint, name: &str) -> Result<Vec<f32>> {
    let info = ckpt.get(name).expect("checked");
    let view = ckpt.view(info);
    let v = view
        .to_f32()
        .with_context(|| format!("{}: tensor '{name}'", ckpt.path_of(info).display()))?;
    view.release(0..info.nbytes());
    Ok(v)
}
