//! `shears distill layers --teacher DENSE --student COMPRESSED -o OUT`:
//! layer-wise distillation (ZeroQuant's LKD). Every compressed linear
//! layer of the student (quantized, or a 2-D weight that differs from the
//! teacher's) learns to reproduce its teacher layer's outputs on
//! calibration inputs or seeded probes, its mask and quantization grid held
//! fixed; everything else is copied. The student keeps its format: dense
//! safetensors in its dtype with its zeros exact, or compressed-tensors with
//! new codes on the same scales and zero points.
//!
//! Everything that can be wrong with the inputs (names, shapes, the
//! calibration file) is checked before the first layer is trained, and the
//! output folder appears only when complete.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shears_core::calibration::Calibration;
use shears_core::checkpoint::{CheckpointWriter, OutputTensor};
use shears_core::formats::compressed_tensors::{read_config, ReadScheme};
use shears_core::reference::matmul::probe_inputs;
use shears_core::reference::quant::round_to;
use shears_core::train::{
    distill_layer, held_out_error, Device, Grid, GridShape, LayerProblem, LkdConfig,
};
use shears_core::{encode_f32, Checkpoint, Error, TensorInfo};

use super::report::{self, LayerRow};
use crate::args::{BackendChoice, DistillLayersArgs};
use crate::commands::decompress::{self, read_json_config};
use crate::commands::train::{on_device, OnDevice};
use crate::output::Out;
use crate::progress::Progress;
use crate::select;

/// One layer to distill.
struct Target {
    /// `<prefix>.weight`, the name in the teacher.
    name: String,
    out: usize,
    inn: usize,
    /// Index into the student's quantized layers, or None for a dense weight.
    quant: Option<usize>,
    teacher_bias: Option<String>,
    /// The student's `<prefix>.bias`, trained along and written back.
    student_bias: Option<String>,
    /// The student tensor holding the weight (codes when quantized).
    stored: String,
}

/// The student as it is stored.
struct Student<'c> {
    ckpt: &'c Checkpoint,
    /// The config and scheme of a compressed-tensors student.
    scheme: Option<ReadScheme>,
    quantized: Vec<decompress::Layer<'c>>,
}

/// Checks the flags into the training settings.
fn config(a: &DistillLayersArgs) -> Result<LkdConfig> {
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if !(a.held_out_fraction > 0.0 && a.held_out_fraction < 1.0) {
        bail!(
            "--held-out-fraction must be in (0, 1), got {}",
            a.held_out_fraction
        );
    }
    if a.calibration.is_none() && a.probe_rows < 2 {
        bail!("--probe-rows must be at least 2 (training and held-out rows)");
    }
    Ok(LkdConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
    })
}

/// Whether `ckpt` is a compressed-tensors folder (its config.json has a
/// `quantization_config`).
fn is_compressed(ckpt: &Checkpoint) -> bool {
    ckpt.side_file("config.json").is_some()
        && read_json_config(ckpt)
            .map(|(c, _)| c.get("quantization_config").is_some())
            .unwrap_or(false)
}

/// The student's tensors as the teacher names them: every stored tensor,
/// a quantized layer's tensors standing for its `<prefix>.weight`. Each
/// must match a teacher tensor in name and shape, and the other way round.
fn match_names(teacher: &Checkpoint, s: &Student) -> Result<()> {
    let mut logical: Vec<(String, Vec<usize>, &TensorInfo)> = Vec::new();
    let mut hidden = std::collections::HashSet::new();
    for l in &s.quantized {
        hidden.extend(l.tensor_names());
        logical.push((format!("{}.weight", l.prefix), vec![l.out, l.inn], l.codes));
    }
    for t in &s.ckpt.tensors {
        if !hidden.contains(&t.name) {
            logical.push((t.name.clone(), t.shape.clone(), t));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, shape, t) in &logical {
        let path = s.ckpt.path_of(t);
        let Some(tt) = teacher.get(name) else {
            return Err(Error::tensor(
                path,
                name,
                format!("not in the teacher {}", teacher.root.display()),
            )
            .into());
        };
        if &tt.shape != shape {
            return Err(Error::tensor(
                path,
                name,
                format!(
                    "shape {shape:?}, but the teacher's ({}) is {:?}",
                    teacher.path_of(tt).display(),
                    tt.shape
                ),
            )
            .into());
        }
        seen.insert(name.clone());
    }
    if let Some(t) = teacher.tensors.iter().find(|t| !seen.contains(&t.name)) {
        return Err(Error::tensor(
            teacher.path_of(t),
            &t.name,
            format!("missing from the student {}", s.ckpt.root.display()),
        )
        .into());
    }
    Ok(())
}

/// Whether a dense student weight differs from the teacher's.
fn differs(teacher: &Checkpoint, tt: &TensorInfo, student: &Checkpoint, st: &TensorInfo) -> bool {
    if tt.dtype == st.dtype {
        return teacher.view(tt).bytes() != student.view(st).bytes();
    }
    match (teacher.view(tt).to_f32(), student.view(st).to_f32()) {
        (Ok(a), Ok(b)) => a != b,
        _ => true,
    }
}

/// The layers to distill, in the order the student stores them.
fn targets(
    a: &DistillLayersArgs,
    teacher: &Checkpoint,
    s: &Student,
) -> Result<(Vec<Target>, Vec<String>)> {
    let selection = select::select(teacher, &a.select.include, &a.select.exclude)?;
    let selected: std::collections::HashSet<&str> = selection
        .compressed()
        .map(|i| teacher.tensors[i].name.as_str())
        .collect();
    let bias = |ckpt: &Checkpoint, prefix: &str, out: usize| -> Result<Option<String>> {
        let name = format!("{prefix}.bias");
        match ckpt.get(&name) {
            None => Ok(None),
            Some(t) if t.shape == [out] && t.dtype.is_float_computable() => Ok(Some(name)),
            Some(t) => Err(Error::tensor(
                ckpt.path_of(t),
                &name,
                format!("{} {:?}, expected a float [{out}]", t.dtype, t.shape),
            )
            .into()),
        }
    };
    let mut found = Vec::new();
    for t in &s.ckpt.tensors {
        let (prefix, out, inn, quant) =
            if let Some(i) = s.quantized.iter().position(|l| std::ptr::eq(l.codes, t)) {
                let l = &s.quantized[i];
                (l.prefix.clone(), l.out, l.inn, Some(i))
            } else if let Some(p) = t.name.strip_suffix(".weight") {
                if t.shape.len() != 2 || !t.dtype.is_float_computable() {
                    continue;
                }
                (p.to_string(), t.shape[0], t.shape[1], None)
            } else {
                continue;
            };
        let name = format!("{prefix}.weight");
        if !selected.contains(name.as_str()) {
            continue;
        }
        let tt = teacher.get(&name).expect("names matched");
        if quant.is_none() && !differs(teacher, tt, s.ckpt, t) {
            continue;
        }
        found.push(Target {
            teacher_bias: bias(teacher, &prefix, out)?,
            student_bias: bias(s.ckpt, &prefix, out)?,
            name,
            out,
            inn,
            quant,
            stored: t.name.clone(),
        });
    }
    Ok((found, selection.unmatched))
}

pub fn run(
    a: &DistillLayersArgs,
    backend: BackendChoice,
    quiet: bool,
    out: &mut Out,
) -> Result<()> {
    let cfg = config(a)?;
    if a.output.exists() && !a.force {
        bail!("{}: exists (use --force to replace it)", a.output.display());
    }
    let teacher = Checkpoint::open(&a.teacher)?;
    if is_compressed(&teacher) {
        bail!(
            "{}: the teacher is a compressed-tensors checkpoint; give the dense one (or `shears decompress` it first)",
            a.teacher.display()
        );
    }
    let student_ckpt = Checkpoint::open(&a.student)?;
    // A compressed-tensors student keeps its config.json as it is: the
    // grid is fixed, so the quantization_config still describes it.
    let scheme = if is_compressed(&student_ckpt) {
        let (c, p) = read_json_config(&student_ckpt)?;
        Some(read_config(&c, &p)?)
    } else {
        None
    };
    let quantized = match &scheme {
        Some(rs) => decompress::layers(&student_ckpt, rs)?,
        None => Vec::new(),
    };
    let student = Student {
        ckpt: &student_ckpt,
        scheme,
        quantized,
    };
    match_names(&teacher, &student)?;
    let (targets, unmatched) = targets(a, &teacher, &student)?;
    for g in &unmatched {
        tracing::warn!("--include/--exclude pattern '{g}' matched no tensor");
    }
    if targets.is_empty() {
        bail!(
            "{}: no compressed linear layer to distill (every selected weight equals the teacher's and none is quantized)",
            a.student.display()
        );
    }
    let calibration = match &a.calibration {
        Some(p) => {
            let c = Calibration::open(p)?;
            for t in &targets {
                match c.input_rows(&t.name, t.inn)? {
                    Some(n) if n >= 2 => {}
                    Some(n) => bail!(
                        "{}: tensor '{}.inputs': {n} rows; at least 2 are needed (training and held-out)",
                        p.display(),
                        t.name
                    ),
                    None => {
                        return Err(Error::tensor(
                            p,
                            format!("{}.inputs", t.name),
                            "missing (layer-wise distillation needs the layer's inputs)",
                        )
                        .into())
                    }
                }
            }
            Some(c)
        }
        None => None,
    };
    let job = Job {
        a,
        cfg,
        teacher: &teacher,
        student: &student,
        targets: &targets,
        calibration: calibration.as_ref(),
        quiet,
    };
    let rows = on_device(backend, job)?;
    report::print(a, &rows, student.scheme.as_ref(), out)
}

/// Distillation and writing on one backend.
struct Job<'a> {
    a: &'a DistillLayersArgs,
    cfg: LkdConfig,
    teacher: &'a Checkpoint,
    student: &'a Student<'a>,
    targets: &'a [Target],
    calibration: Option<&'a Calibration>,
    quiet: bool,
}

/// A distilled layer's output bytes (None: the student's own bytes are
/// kept) and how many of its tensors are still to be written.
struct Written {
    weight: Option<Vec<u8>>,
    bias: Option<Vec<u8>>,
    pending: usize,
}

impl OnDevice for Job<'_> {
    type Output = Vec<LayerRow>;

    fn run<D: Device>(self, dev: &D) -> Result<Vec<LayerRow>> {
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
        let opts = select::writer_options(ckpt, &self.a.student, self.a.force);
        let mut opts = opts;
        opts.protected.push(self.a.teacher.clone());
        let mut writer = CheckpointWriter::create(&self.a.output, shards, opts)?;
        let mut progress = Progress::bytes(ckpt.total_bytes(), "distill", self.quiet);
        let mut cache: HashMap<usize, Written> = HashMap::new();
        let mut rows = Vec::new();
        let mut done = 0u64;
        for t in &ckpt.tensors {
            let Some(&i) = owner.get(t.name.as_str()) else {
                writer.write(ckpt.view(t).bytes())?;
                done += t.nbytes() as u64;
                progress.set(done);
                continue;
            };
            let w = match cache.entry(i) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    progress.tensor(rows.len(), self.targets.len(), &self.targets[i].name);
                    let (row, w) = self.distill(dev, i)?;
                    tracing::debug!(
                        "{}: {:.5} -> {:.5}",
                        row.name,
                        row.error_before,
                        row.error_after
                    );
                    rows.push(row);
                    e.insert(w)
                }
            };
            let is_bias = Some(&t.name) == self.targets[i].student_bias.as_ref();
            let bytes = if is_bias { &w.bias } else { &w.weight };
            match bytes {
                Some(b) => writer.write(b)?,
                None => writer.write(ckpt.view(t).bytes())?,
            }
            w.pending -= 1;
            if w.pending == 0 {
                cache.remove(&i);
            }
            done += t.nbytes() as u64;
            progress.set(done);
        }
        progress.finish();
        for f in &ckpt.extra_files {
            writer.copy_file(f)?;
        }
        writer.finish()?;
        Ok(rows)
    }
}

impl Job<'_> {
    /// The input rows of target `i`: its calibration inputs, or seeded
    /// Gaussian probes.
    fn inputs(&self, i: usize) -> Result<(Vec<f32>, usize)> {
        let t = &self.targets[i];
        if let Some(c) = self.calibration {
            return Ok(c.inputs(&t.name, t.inn)?.expect("checked before training"));
        }
        let n = self.a.probe_rows;
        let seed = self.a.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9);
        Ok((probe_inputs(n, t.inn, seed), n))
    }

    /// Distills target `i` and returns its report row and output bytes.
    fn distill<D: Device>(&self, dev: &D, i: usize) -> Result<(LayerRow, Written)> {
        let start = Instant::now();
        let t = &self.targets[i];
        let (s, teacher) = (self.student, self.teacher);
        let f32s = |ckpt: &Checkpoint, name: &str| -> Result<Vec<f32>> {
            let info = ckpt.get(name).expect("checked");
            ckpt.view(info)
                .to_f32()
                .with_context(|| format!("{}: tensor '{name}'", ckpt.path_of(info).display()))
        };
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
        let (weight, grid, dtype) = match t.quant {
            Some(q) => {
                let rs = s.scheme.as_ref().expect("quantized layers have a scheme");
                let l = &s.quantized[q];
                let qz = l.read(s.ckpt, rs)?;
                let grid = Grid {
                    shape: GridShape {
                        bits: rs.spec.bits,
                        group: qz.group,
                    },
                    scales: qz.params.iter().map(|p| p.scale).collect(),
                    zero_points: (!rs.spec.symmetric)
                        .then(|| qz.params.iter().map(|p| p.zero_point as f32).collect()),
                };
                (qz.dequantized(), Some(grid), l.scale.dtype)
            }
            None => {
                let info = s.ckpt.get(&t.stored).expect("checked");
                (f32s(s.ckpt, &t.stored)?, None, info.dtype)
            }
        };
        let mask: Vec<f32> = weight
            .iter()
            .map(|&w| if w == 0.0 { 0.0 } else { 1.0 })
            .collect();
        let kept = mask.iter().filter(|&&m| m != 0.0).count();

        let (x, n) = self.inputs(i)?;
        let held = ((n as f64 * self.a.held_out_fraction).round() as usize).clamp(1, n - 1);
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
        };
        let r =
            distill_layer(dev, &problem, &self.cfg).with_context(|| format!("layer {}", t.name))?;

        // What would be written, and its error measured as written.
        let bias_out = match (&r.bias, bias_dtype) {
            (Some(b), Some(dt)) => Some(b.iter().map(|&v| round_to(dt, v)).collect::<Vec<_>>()),
            _ => None,
        };
        let (values, weight_bytes, new_zeros) = match (&grid, &r.codes) {
            (Some(g), Some(codes)) => {
                let rs = s.scheme.as_ref().expect("scheme");
                let values = g.dequantize(codes, t.out, t.inn);
                let bytes = if rs.packed {
                    shears_core::fast::quant::pack_rows_le(codes, t.out, t.inn, rs.spec.bits)
                } else {
                    codes.iter().map(|&c| c as u8).collect()
                };
                let nz = count_new_zeros(&values, &mask);
                (values, bytes, nz)
            }
            _ => {
                let values: Vec<f32> = r.weight.iter().map(|&w| round_to(dtype, w)).collect();
                let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
                encode_f32(dtype, &values, &mut bytes);
                let nz = count_new_zeros(&values, &mask);
                (values, bytes, nz)
            }
        };
        let error_after = held_out_error(dev, &problem, &values, bias_out.as_deref())?;
        let improved = error_after < r.error_before;
        let bias_bytes = bias_out.as_ref().zip(bias_dtype).map(|(b, dt)| {
            let mut bytes = vec![0u8; b.len() * dt.bits() / 8];
            encode_f32(dt, b, &mut bytes);
            bytes
        });
        let pending = 1 + usize::from(t.student_bias.is_some());
        let written = if improved {
            Written {
                weight: Some(weight_bytes),
                bias: bias_bytes,
                pending,
            }
        } else {
            Written {
                weight: None,
                bias: None,
                pending,
            }
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
        Ok((row, written))
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
