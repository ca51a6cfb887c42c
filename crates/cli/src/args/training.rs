//! Arguments of the training commands: `train`, `distill model`,
//! `distill layers`, `evaluate`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::SelectArgs;

/// How a classifier is trained and its data split; shared by `train` and
/// `distill model`.
#[derive(Debug, Clone, Args)]
pub struct FitArgs {
    /// Passes over the training examples.
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    /// Examples per Adam step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Seed of the initial weights and the batch order (and of the split,
    /// unless --split-seed is given).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the stratified train/test split (default: --seed).
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// Fraction of each class held out for testing, in [0, 1).
    #[arg(long, default_value_t = 0.25)]
    pub test_fraction: f64,
    /// Write the mean loss of every epoch to this CSV file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Write the final metrics as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace the output model if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// CSV (optionally gzipped): features, then the integer class label.
    #[arg(long)]
    pub data: PathBuf,
    /// Hidden layer widths, e.g. 256,128.
    #[arg(long, required_unless_present = "init")]
    pub hidden: Option<String>,
    /// Start from this model's weights instead of a seeded initialisation.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The model to write (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub fit: FitArgs,
}

#[derive(Debug, Args)]
pub struct DistillArgs {
    #[command(subcommand)]
    pub command: DistillCommand,
}

#[derive(Debug, Subcommand)]
pub enum DistillCommand {
    /// Train a smaller MLP classifier on a teacher's temperature-softened
    /// outputs and the labels: T²·KL(teacher_T ‖ student_T) + α·CE.
    Model(DistillModelArgs),
    /// Layer-wise distillation (ZeroQuant's LKD): train each compressed
    /// linear layer of a pruned and/or quantized student to reproduce its
    /// dense teacher's outputs, mask and quantization grid held fixed;
    /// writes the student in its own format.
    Layers(DistillLayersArgs),
}

#[derive(Debug, Args)]
pub struct DistillLayersArgs {
    /// The dense checkpoint the student was compressed from (file or folder).
    #[arg(long)]
    pub teacher: PathBuf,
    /// The compressed student: dense safetensors with pruned zeros (what
    /// `prune` writes) or a compressed-tensors folder (`quantize`,
    /// `compress`).
    #[arg(long)]
    pub student: PathBuf,
    /// Output folder (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Calibration safetensors with `<weight>.inputs` [n, in] for every
    /// layer distilled (seeded Gaussian probes otherwise).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// In-process calibration of the teacher (see `shears prune --help`).
    #[command(flatten)]
    pub calibration_text: super::CalibrationTextArgs,
    /// What each student layer learns from, with --calibration-text (the
    /// model runs): `sequential` (the default there) trains layer i on the
    /// inputs the student itself produces from its layers before i, already
    /// distilled, against the dense teacher's outputs for the same tokens;
    /// `independent` on the teacher's own inputs; `block` trains all the
    /// compressed linears of a decoder block together against the teacher
    /// block's output, on the student's own inputs (CPU only). Without
    /// text, layers are always independent.
    #[arg(long, value_enum)]
    pub mode: Option<DistillMode>,
    /// Text the student's perplexity and KL to the teacher are measured on,
    /// before and after (default: the held-out sequences of
    /// --calibration-text). Needs the model to run (config.json and
    /// tokenizer.json in the teacher's folder).
    #[arg(long, num_args = 1..)]
    pub eval_text: Vec<PathBuf>,
    /// What the evaluation text judges the distilled student by: its
    /// perplexity, or its KL divergence from the teacher (what distillation
    /// minimizes; the better measure for a model whose perplexity means
    /// little, such as a randomly initialized one).
    #[arg(long, value_enum, default_value_t = Judge::Perplexity)]
    pub judge: Judge,
    /// Write the result even when it is worse than the student on the
    /// evaluation text by --judge (by default nothing is written then).
    #[arg(long)]
    pub keep_worse: bool,
    /// Stop a layer's training once its held-out error has not improved for
    /// this many epochs, keeping its best epoch (0: train every epoch and
    /// keep the last).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Seeded Gaussian probe rows per layer when there is no calibration file.
    #[arg(long, default_value_t = 256)]
    pub probe_rows: usize,
    /// Fraction of each layer's input rows held out to measure the output
    /// error before and after, in (0, 1).
    #[arg(long, default_value_t = 0.25)]
    pub held_out_fraction: f64,
    /// Passes over each layer's training rows.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Input rows per Adam step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate of Adam (cosine-decayed to 0). Default 0.0003
    /// with --calibration-text (every token a row: many steps per epoch),
    /// 0.005 otherwise (a few hundred rows); with --mode block, 0.015 × the
    /// RMS of each block's kept weights. All measured, see the README.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of the batch order and of the probes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Write the per-layer figures as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DistillModelArgs {
    /// The teacher: an MLP classifier (.safetensors).
    #[arg(long)]
    pub teacher: PathBuf,
    /// CSV (optionally gzipped) the teacher was trained on.
    #[arg(long)]
    pub data: PathBuf,
    /// The student's hidden layer widths, e.g. 16.
    #[arg(long, required_unless_present = "init")]
    pub hidden: Option<String>,
    /// Start the student from this model's weights.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Temperature T that softens both models' outputs.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// Weight α of the cross-entropy on the labels.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// The student to write (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub fit: FitArgs,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// An MLP classifier (.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// CSV (optionally gzipped): features, then the integer class label.
    #[arg(long)]
    pub data: PathBuf,
    /// Which rows: test, train (the split `train` made with the same seed
    /// and fraction) or all.
    #[arg(long, value_enum, default_value_t = SplitChoice::Test)]
    pub split: SplitChoice,
    /// Seed of the split (the --split-seed, or else --seed, of training).
    #[arg(long, alias = "split-seed", default_value_t = 0)]
    pub seed: u64,
    /// Fraction of each class in the test split.
    #[arg(long, default_value_t = 0.25)]
    pub test_fraction: f64,
    /// Also write the metrics as JSON to this file (beside the table).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the metrics as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Rows of a data set to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitChoice {
    Test,
    Train,
    All,
}

/// `distill layers --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistillMode {
    /// Each layer on the teacher's inputs.
    Independent,
    /// Each layer on the student's own inputs, layers in order.
    Sequential,
    /// Every compressed linear of a decoder block together, on the
    /// student's own inputs, against the teacher block's output (CPU).
    Block,
}

/// `distill layers --judge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Judge {
    Perplexity,
    Kl,
}
