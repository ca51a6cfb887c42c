//! Arguments of the commands that run a language model: `calibrate` and
//! `eval`.

use std::path::PathBuf;

use clap::Args;

/// The text a model runs on: files, how many tokens, how long a sequence.
#[derive(Debug, Clone, Args)]
pub struct TextArgs {
    /// UTF-8 text files, read in order (tokenized with the model's
    /// tokenizer.json, concatenated, cut into sequences).
    #[arg(long, num_args = 1.., required = true)]
    pub text: Vec<PathBuf>,
    /// Tokens to use at most (whole sequences).
    #[arg(long, default_value_t = 8192)]
    pub tokens: usize,
    /// Tokens per sequence (BOS included when the model wants one).
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A model folder (config.json, tokenizer.json, safetensors weights:
    /// dense or compressed-tensors).
    pub model: PathBuf,
    #[command(flatten)]
    pub text: TextArgs,
    /// Text tokens between window starts (default: a window's text
    /// tokens, no overlap); smaller strides give each prediction more
    /// context, each token is still scored once.
    #[arg(long)]
    pub stride: Option<usize>,
    /// A reference model (usually the dense original) run on the same
    /// windows: top-1 agreement, KL(ref ‖ model), its perplexity.
    #[arg(long = "ref")]
    pub reference: Option<PathBuf>,
    /// Print the figures as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// A model folder (config.json, tokenizer.json, safetensors weights).
    pub model: PathBuf,
    #[command(flatten)]
    pub text: TextArgs,
    /// Output calibration file (.safetensors); must not exist unless --force.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Input rows kept per linear layer (sampled uniformly over all
    /// tokens, seeded): what `--validate` and `distill layers` train and
    /// measure on.
    #[arg(long, default_value_t = crate::lm::DEFAULT_ROWS)]
    pub rows: usize,
    /// Also write each layer's XᵀX over all tokens ([in, in] f32; GPTQ and
    /// SparseGPT read it). Large: in² × 4 bytes per distinct input.
    #[arg(long)]
    pub gram: bool,
    /// Seed of the row sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// In-process calibration, for the commands that read a calibration file.
#[derive(Debug, Clone, Args)]
pub struct CalibrationTextArgs {
    /// Calibrate on this text in-process instead of reading --calibration:
    /// runs the model as `shears calibrate` does (its defaults: 256 rows,
    /// seed 0), with the two settings below; the output is byte for byte
    /// the same as with that file.
    #[arg(long, num_args = 1.., conflicts_with = "calibration")]
    pub calibration_text: Vec<PathBuf>,
    /// Tokens for --calibration-text (whole sequences).
    #[arg(long, default_value_t = 8192)]
    pub calibration_tokens: usize,
    /// Tokens per sequence for --calibration-text.
    #[arg(long, default_value_t = 512)]
    pub calibration_seq_len: usize,
}
