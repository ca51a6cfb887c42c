//! `distill layers` with the model running: teacher and student go through
//! the calibration text side by side, one decoder layer at a time (memory:
//! one layer's weights and the tokens' states), and each layer's targets are
//! distilled in execution order (q/k/v, o, gate/up, down), each on
//!
//! - `sequential`: the inputs the student itself produces, from its layers
//!   before (already distilled) and its linears before in this layer,
//!   against the teacher's outputs for the same tokens on the teacher's own
//!   path, so a layer also learns to undo what the layers before it lost;
//! - `independent`: the teacher's inputs (as without the model), from the
//!   text, or from a calibration file's rows;
//! - `block`: all of a block's targets at once against the teacher block's
//!   output ([`super::block`]).
//!
//! Meanwhile the evaluation text runs through the teacher, the student as
//! given and the student as distilled, so the run ends with both students'
//! perplexity and KL to the teacher. Distilled tensors wait in an unnamed
//! temporary file until that verdict; only then is the output written.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use shears_core::model::eval::{score, Scores, Windows};
use shears_core::model::{Capture, LayerWeights, Linear, NoCapture, Runner, Weights};
use shears_core::reference::forward::Forward;
use shears_core::train::block_device::BlockOps;
use shears_core::train::Targets;

use super::job::{log_layer, Job, Written};
use super::report::LayerRow;
use crate::args::{DistillMode, Judge};
use crate::training::OnDevice;

/// Where each layer's input rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The calibration tokens run through the models (`--mode`).
    Text(DistillMode),
    /// The rows of the calibration file (or probes), as without the model.
    File,
}

/// The run, on the training device.
pub(super) struct ModelJob<'a> {
    pub(super) job: Job<'a>,
    pub(super) fw: &'a dyn Forward,
    pub(super) teacher: &'a Weights<'a>,
    pub(super) student: &'a Weights<'a>,
    pub(super) source: Source,
    /// Calibration sequences (whole sequences of `seq_len`; the last
    /// `held_seqs` held out), empty for [`Source::File`].
    pub(super) ids: Vec<u32>,
    pub(super) seq_len: usize,
    pub(super) held_seqs: usize,
    pub(super) eval: Windows,
    pub(super) keep_worse: bool,
    pub(super) judge: Judge,
}

/// The students on the evaluation text: as given and as distilled, each
/// against the teacher.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    pub(super) before: Scores,
    pub(super) after: Scores,
    /// Whether the output was written (not when worse, unless asked).
    pub(super) written: bool,
}

/// The linears of a decoder layer in the groups that share an input, in
/// execution order.
const GROUPS: [&[&str]; 4] = [
    &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    &["self_attn.o_proj"],
    &["mlp.gate_proj", "mlp.up_proj"],
    &["mlp.down_proj"],
];

impl OnDevice for ModelJob<'_> {
    type Output = (Vec<LayerRow>, Verdict);

    fn run<D: BlockOps>(self, dev: &D) -> Result<(Vec<LayerRow>, Verdict)> {
        let layers = self.teacher.config().layers;
        let by_name: HashMap<&str, usize> = self
            .job
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        // The evaluation windows are as long as the calibration sequences.
        let (rt, rs) = (
            Runner::new(self.teacher, self.fw, self.seq_len)?,
            Runner::new(self.student, self.fw, self.seq_len)?,
        );
        let text = matches!(self.source, Source::Text(_));
        let (mut xt, mut xs) = match text {
            true => (rt.embed(&self.ids)?, rs.embed(&self.ids)?),
            false => (Vec::new(), Vec::new()),
        };
        let mut et = rt.embed(&self.eval.ids)?;
        let mut e0 = rs.embed(&self.eval.ids)?;
        let mut e1 = e0.clone();
        let held_rows = self.held_seqs * self.seq_len;
        let mut spill = Spill::new(&self.job.a.output)?;
        let mut rows = Vec::new();
        for layer in 0..layers {
            // One layer of each model in memory: the evaluation states go
            // through the teacher's and the given student's layer first.
            let lt = self.teacher.layer(layer)?;
            let mut ls = self.student.layer(layer)?;
            rt.layer(&lt, &mut et, &mut NoCapture)?;
            rs.layer(&ls, &mut e0, &mut NoCapture)?;
            if self.source == Source::Text(DistillMode::Block) {
                let mut yt = xt.clone();
                rt.layer(&lt, &mut yt, &mut NoCapture)?;
                self.block_layer(
                    dev, layer, &mut ls, &xs, &yt, &by_name, &mut spill, &mut rows,
                )?;
            }
            for group in GROUPS {
                if self.source == Source::Text(DistillMode::Block) {
                    break;
                }
                let names: Vec<String> = group
                    .iter()
                    .map(|l| format!("model.layers.{layer}.{l}.weight"))
                    .collect();
                let todo: Vec<(usize, &String)> = names
                    .iter()
                    .filter_map(|n| by_name.get(n.as_str()).map(|&i| (i, n)))
                    .collect();
                if todo.is_empty() {
                    continue;
                }
                // The group's input on the teacher's path and, sequential,
                // on the student's (with this layer's earlier linears
                // already distilled).
                let (teacher_in, student_in) = match self.source {
                    Source::File => (Vec::new(), None),
                    Source::Text(mode) => {
                        let t = input_of(&rt, &lt, &xt, &names[0])?;
                        let s = match mode {
                            DistillMode::Sequential => Some(input_of(&rs, &ls, &xs, &names[0])?),
                            DistillMode::Independent | DistillMode::Block => None,
                        };
                        (t, s)
                    }
                };
                for (i, name) in todo {
                    let d = match (self.source, &student_in) {
                        (Source::File, _) => {
                            let (x, n) = self.job.inputs(i)?;
                            let held = self.job.held_rows(n);
                            self.job.distill_on(dev, i, &x, held, None)?
                        }
                        (Source::Text(_), None) => {
                            self.job.distill_on(dev, i, &teacher_in, held_rows, None)?
                        }
                        (Source::Text(_), Some(x)) => {
                            let tl = linear(&lt, name);
                            let rows_in = teacher_in.len() / tl.inn;
                            let y = self.fw.linear(
                                &teacher_in,
                                rows_in,
                                &tl.w,
                                tl.out,
                                tl.bias.as_deref(),
                            )?;
                            let (train, held) = y.split_at((rows_in - held_rows) * tl.out);
                            let targets = Targets { train, held };
                            self.job.distill_on(dev, i, x, held_rows, Some(targets))?
                        }
                    };
                    let lin = linear_mut(&mut ls, name);
                    lin.w = d.values;
                    if worse_injected() {
                        lin.w.iter_mut().for_each(|w| *w = -*w);
                    }
                    if d.bias.is_some() {
                        lin.bias = d.bias;
                    }
                    log_layer(&d.row, rows.len() + 1, self.job.targets.len());
                    rows.push(d.row);
                    spill.put(i, d.written)?;
                }
            }
            if text {
                rt.layer(&lt, &mut xt, &mut NoCapture)?;
                rs.layer(&ls, &mut xs, &mut NoCapture)?;
            }
            rs.layer(&ls, &mut e1, &mut NoCapture)?;
            tracing::info!("distill: decoder layer {}/{layers} done", layer + 1);
        }
        drop((xt, xs));
        let (ht, hs) = (self.teacher.lm_head()?, self.student.lm_head()?);
        let nt = rt.final_norm(&et)?;
        let judge = |x: &[f32]| -> Result<Scores> {
            let xn = rs.final_norm(x)?;
            Ok(score(self.fw, &hs, &xn, &self.eval, Some((&ht, &nt)))?)
        };
        let (before, after) = (judge(&e0)?, judge(&e1)?);
        let written = !worse(&before, &after, self.judge) || self.keep_worse;
        if written {
            self.job.write(|i| spill.take(i))?;
        }
        let verdict = Verdict {
            before,
            after,
            written,
        };
        Ok((rows, verdict))
    }
}

/// Whether `after` is worse than `before` by `judge`.
pub(super) fn worse(before: &Scores, after: &Scores, judge: Judge) -> bool {
    match judge {
        Judge::Perplexity => after.perplexity > before.perplexity,
        Judge::Kl => {
            let kl = |s: &Scores| s.reference.as_ref().map_or(f64::NAN, |r| r.kl_mean);
            kl(after) > kl(before)
        }
    }
}

/// The rows of the input `name` reads when `lw` runs over the states `x`.
fn input_of(runner: &Runner, lw: &LayerWeights, x: &[f32], name: &str) -> Result<Vec<f32>> {
    let mut grab = Grab {
        name,
        rows: Vec::new(),
    };
    runner.layer(lw, &mut x.to_vec(), &mut grab)?;
    Ok(grab.rows)
}

/// A [`Capture`] of one input.
struct Grab<'n> {
    name: &'n str,
    rows: Vec<f32>,
}

impl Capture for Grab<'_> {
    fn inputs(&mut self, names: &[String], x: &[f32], _rows: usize) -> shears_core::Result<()> {
        if names.iter().any(|n| n == self.name) {
            self.rows.extend_from_slice(x);
        }
        Ok(())
    }
}

/// The linear of `lw` whose weight is `name`.
fn linear<'l>(lw: &'l LayerWeights, name: &str) -> &'l Linear {
    let found = lw.linears().into_iter().find(|l| l.name == name);
    found.expect("a decoder linear")
}

/// [`linear`], to change.
fn linear_mut<'l>(lw: &'l mut LayerWeights, name: &str) -> &'l mut Linear {
    let found = lw.linears_mut().into_iter().find(|l| l.name == name);
    found.expect("a decoder linear")
}

/// Checks that every target is a decoder linear layer of the model.
pub(super) fn check_targets(job: &Job, layers: usize) -> Result<()> {
    for t in job.targets {
        let ok = (0..layers).any(|i| {
            GROUPS
                .iter()
                .flat_map(|g| g.iter())
                .any(|l| t.name == format!("model.layers.{i}.{l}.weight"))
        });
        if !ok {
            let ckpt = job.student.ckpt;
            let info = ckpt.get(&t.stored).expect("a student tensor");
            bail!(
                "{}: tensor '{}': distilling with the model running trains the decoder's linear \
                 layers only; leave it out with --exclude",
                ckpt.path_of(info).display(),
                t.name
            );
        }
    }
    Ok(())
}

/// Distilled tensors parked until the verdict: an unnamed temporary file
/// beside the output (gone with the process, whatever ends it).
pub(super) struct Spill {
    file: std::fs::File,
    /// Per target: where its weight and bias bytes are (offset, length),
    /// and its tensors still to write.
    at: HashMap<usize, (Parked, Parked, usize)>,
    end: u64,
}

/// Where parked bytes are in the spill file, if any.
type Parked = Option<(u64, usize)>;

impl Spill {
    fn new(output: &std::path::Path) -> Result<Self> {
        // The output's folder, or its nearest existing ancestor (the
        // writer creates the rest only when the output is written).
        let mut dir = output.parent().map(std::path::Path::to_path_buf);
        while let Some(d) = dir
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            dir = d.parent().map(std::path::Path::to_path_buf);
        }
        let dir = dir
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        let file = tempfile::tempfile_in(&dir).with_context(|| {
            format!(
                "{}: a temporary file for the distilled layers",
                dir.display()
            )
        })?;
        Ok(Spill {
            file,
            at: HashMap::new(),
            end: 0,
        })
    }

    fn park(&mut self, bytes: Option<Vec<u8>>) -> Result<Parked> {
        let Some(b) = bytes else {
            return Ok(None);
        };
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(&b)?;
        let at = (self.end, b.len());
        self.end += b.len() as u64;
        Ok(Some(at))
    }

    pub(super) fn put(&mut self, i: usize, w: Written) -> Result<()> {
        let weight = self.park(w.weight)?;
        let bias = self.park(w.bias)?;
        self.at.insert(i, (weight, bias, w.pending));
        Ok(())
    }

    fn take(&mut self, i: usize) -> Result<Written> {
        let (weight, bias, pending) = self.at.remove(&i).expect("every target was distilled");
        let mut read = |at: Parked| -> Result<Option<Vec<u8>>> {
            let Some((off, len)) = at else {
                return Ok(None);
            };
            let mut b = vec![0u8; len];
            self.file.seek(SeekFrom::Start(off))?;
            self.file.read_exact(&mut b)?;
            Ok(Some(b))
        };
        Ok(Written {
            weight: read(weight)?,
            bias: read(bias)?,
            pending,
        })
    }
}

/// Test seam, in debug builds only: `SHEARS_INJECT_FAULT=distill-worse`
/// negates every distilled layer the verdict judges (not what would be
/// written), so tests can watch a worse student be refused. Release builds
/// have no such switch.
fn worse_injected() -> bool {
    cfg!(debug_assertions)
        && std::env::var_os("SHEARS_INJECT_FAULT").is_some_and(|v| v == "distill-worse")
}
