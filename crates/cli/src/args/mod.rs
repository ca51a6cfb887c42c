//! Command-line arguments as clap parses them. Commands never read these
//! directly: `main` turns them into validated settings first.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod model;
mod training;
mod values;

pub use model::*;
pub use training::*;
pub use values::*;

/// shears: prune, quantize and distill neural-network checkpoints on any GPU.
#[derive(Debug, Parser)]
#[command(name = "shears", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where kernels run: a GPU when one exists (auto), a GPU or fail (gpu),
    /// or the multi-threaded CPU path (cpu). SHEARS_ADAPTER=<name> and
    /// SHEARS_GRAPHICS_API=vulkan|metal|dx12|gl narrow the GPU choice.
    #[arg(long, global = true, value_enum, default_value_t = BackendChoice::Auto, env = "SHEARS_BACKEND")]
    pub backend: BackendChoice,
    /// More log output (-v debug, -vv trace); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Quiet: errors only on stderr, no progress bar, and no report on
    /// stdout (what `inspect`, `devices`, `evaluate` and `--json` print is
    /// still printed).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Flush written checkpoints to disk (fsync) before they appear, so a
    /// power cut cannot leave a complete-looking folder behind. Slower; the
    /// output always appears only when complete.
    #[arg(long, global = true, env = "SHEARS_SYNC")]
    pub sync: bool,
}

/// Where the kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Auto,
    Gpu,
    Cpu,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List GPU adapters with the limits and features shears uses.
    Devices(DevicesArgs),
    /// Measure every kernel family on the fast CPU path and on every GPU
    /// adapter (Vulkan, Metal, DX12, GL): median and spread, GB/s (GFLOP/s
    /// for products) and the ratio to a yardstick measured in the same run,
    /// each result checked against the CPU reference; --compare tabulates
    /// saved runs side by side.
    Bench(BenchArgs),
    /// Show the tensors of a checkpoint (file or folder), optionally with
    /// statistics computed on the chosen backend.
    Inspect(InspectArgs),
    /// Write a seeded Llama-shaped checkpoint, or with --calibration-for a
    /// synthetic calibration file (test data and benchmarks).
    Generate(GenerateArgs),
    /// Zero the least important weights: magnitude, Wanda, Taylor or random
    /// scores; per row, tensor or globally; N:M patterns; whole rows or
    /// columns. Writes dense safetensors with the same names and sharding.
    Prune(PruneArgs),
    /// Quantize the linear layers to int8 or int4 and write a
    /// compressed-tensors checkpoint (vLLM, SGLang, transformers) or dense
    /// dequantized safetensors.
    Quantize(QuantizeArgs),
    /// Prune and quantize in one pass (one read, one write per tensor),
    /// configured by flags or a recipe TOML; writes compressed-tensors.
    Compress(CompressArgs),
    /// Turn a compressed-tensors checkpoint (shears' or anyone's) back into
    /// dense safetensors in the original dtype.
    Decompress(DecompressArgs),
    /// Run the model on text and write what activation-aware methods read
    /// (each linear layer's input norms, sampled inputs and, with --gram,
    /// XᵀX): the file `prune --calibration` and `distill layers` take.
    Calibrate(CalibrateArgs),
    /// Perplexity and next-token accuracy of a language model on text and,
    /// with --ref, its agreement with a reference model (KL, top-1).
    Eval(EvalArgs),
    /// Moved: `shears generate FILE --calibration-for MODEL` (synthetic test
    /// data); real calibration is `shears calibrate`.
    #[command(hide = true)]
    Calibration(CalibrationArgs),
    /// Train an MLP classifier on a CSV data set from its labels (for
    /// example the teacher of `distill model`).
    Train(TrainArgs),
    /// Accuracy and confusion matrix of an MLP classifier on a CSV data set
    /// (language models: `shears eval`).
    Evaluate(EvaluateArgs),
    /// Distillation: a student learns to reproduce a teacher.
    Distill(DistillArgs),
}

/// What prune, quantize and compress share: input, output, checks,
/// selection and the report.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A .safetensors file or a checkpoint folder.
    pub model: PathBuf,
    /// Output folder (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub checks: CheckArgs,
    /// Also write the report as JSON to this file (beside the table).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print the plan (each tensor, what happens to it, bytes before and
    /// after) and stop, after every check the run would make.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Seed of the random method and of the --validate probes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the output folder if it is an earlier output.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Fraction of weights to prune in each scope, in [0, 1) (default 0.5).
    #[arg(long, allow_hyphen_values = true, value_parser = sparsity)]
    pub sparsity: Option<f64>,
    /// How weights are scored: magnitude, wanda (|w|·‖x_j‖, needs
    /// --calibration), taylor (|w·g|, needs --calibration), random, or
    /// sparsegpt (masks chosen with the inverse Hessian and the kept weights
    /// updated; needs XᵀX: `shears calibrate --gram` or --calibration-text)
    /// (default magnitude).
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Where the fraction applies: row (each output row alike), tensor, or
    /// global (one threshold over every selected tensor). Default: row for
    /// wanda, tensor otherwise.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// N:M semi-structured pattern along the input dimension, e.g. 2:4
    /// (keeps N of every M consecutive weights; replaces --sparsity).
    #[arg(long, value_parser = pattern)]
    pub pattern: Option<Pattern>,
    /// Prune whole output rows or input columns by L2 norm instead.
    #[arg(long, value_enum)]
    pub structured: Option<Axis>,
    /// Calibration safetensors: `<weight>.input_norm` [in] (wanda),
    /// `<weight>.grad` [out, in] (taylor), `<weight>.inputs` [n, in]
    /// (validation inputs, optional).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    #[command(flatten)]
    pub calibration_text: CalibrationTextArgs,
    #[command(flatten)]
    pub hessian: HessianArgs,
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// w8a16 (int8 per channel), w4a16 (int4, groups of 128), w4a16-asym
    /// (with zero points), w8a8 (int8 weights, dynamic int8 activations),
    /// fp8 (FP8 E4M3, a scale per channel), fp8-block (FP8 E4M3, a scale
    /// per 128×128 block), nvfp4a16 (FP4, an FP8 scale per 16 and a global
    /// scale shared by q/k/v and gate/up) or mxfp4a16 (FP4, a power-of-two
    /// scale per 32).
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
    /// GGUF type for llama.cpp (implies --format gguf, -o a .gguf file):
    /// one type for every 2-D weight (Q8_0, Q6_K, Q5_K, Q5_1, Q5_0, Q4_K,
    /// Q4_0, F16, BF16, F32) or a K-quant mix chosen per tensor as
    /// llama-quantize does (Q4_K_M, Q4_K_S, Q5_K_M, Q5_K_S); norms and
    /// other 1-D tensors stay F32.
    #[arg(long = "type", value_parser = gguf_type, conflicts_with = "scheme")]
    pub gguf_type: Option<shears_core::formats::gguf::mix::Target>,
    /// The tokenizer.json a GGUF file carries (default: the model folder's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Inputs per group for the int4 schemes (must divide in_features), or
    /// `auto`: the largest power of two up to 128 that divides every
    /// selected layer.
    #[arg(long, allow_negative_numbers = true, value_parser = group_size)]
    pub group_size: Option<GroupSize>,
    /// nearest (round-to-nearest of the exact quotient) or
    /// compressed-tensors (bit for bit what that library writes).
    #[arg(long, value_enum, default_value_t = RoundingArg::Nearest)]
    pub rounding: RoundingArg,
    /// compressed-tensors (packed codes + config), dense (dequantized
    /// values in the input's dtype and names) or gguf (one file for
    /// llama.cpp; needs --type).
    #[arg(long, value_enum, default_value_t = FormatArg::CompressedTensors)]
    pub format: FormatArg,
    /// rtn (round to nearest) or gptq (needs XᵀX: a --calibration file from
    /// `shears calibrate --gram`, or --calibration-text). Default rtn.
    #[arg(long, value_enum, default_value_t = QuantMethodArg::Rtn)]
    pub method: QuantMethodArg,
    /// Calibration safetensors: `<weight>.input_gram` [in, in] (gptq) and
    /// `<weight>.inputs` [n, in], the inputs --validate feeds each layer
    /// (seeded probes otherwise). With --type (GGUF), `<weight>.input_norm`
    /// is the importance matrix: each weight's blocks are searched as
    /// llama-quantize --imatrix searches them.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    #[command(flatten)]
    pub calibration_text: CalibrationTextArgs,
    #[command(flatten)]
    pub hessian: HessianArgs,
}

/// GPTQ's and SparseGPT's settings (`prune`, `quantize`, `compress`).
#[derive(Debug, Clone, Default, Args)]
pub struct HessianArgs {
    /// Damping added to the Hessian's diagonal, as a fraction of its mean
    /// (GPTQ, SparseGPT; default 0.01).
    #[arg(long, value_parser = fraction)]
    pub dampening: Option<f64>,
    /// Columns per lazy-update block (GPTQ, SparseGPT; default 128).
    #[arg(long, value_parser = positive)]
    pub block_size: Option<usize>,
    /// GPTQ's column order: none, static (decreasing H_jj, groups as
    /// stored) or group (groups formed in that order; writes weight_g_idx).
    #[arg(long, value_enum)]
    pub actorder: Option<ActOrderArg>,
    /// GPTQ's group scales: upfront (from the weight before the sweep, as
    /// llm-compressor 0.14; the default) or as-reached (from each group's
    /// values when the sweep reaches it, as AutoGPTQ).
    #[arg(long, value_enum)]
    pub group_scales: Option<GroupScalesArg>,
    /// With --calibration-text: calibrate layer i on the outputs of layers
    /// 0…i−1 as already compressed (true, the default), or every layer on
    /// the dense model's activations (false).
    #[arg(long, action = clap::ArgAction::Set)]
    pub sequential: Option<bool>,
}

/// The checks `prune`, `quantize` and `compress` can run on every layer.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckArgs {
    /// Report each compressed layer's relative output error ‖Y−Ŷ‖/‖Y‖
    /// against the original layer (a quantized one computed straight from
    /// its packed codes), on seeded Gaussian probes or the calibration
    /// file's `<weight>.inputs`.
    #[arg(long)]
    pub validate: bool,
    /// Seeded Gaussian probe rows for --validate (at least 1).
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub probe_rows: usize,
    /// Also compute every mask, code, scale and zero point with the CPU
    /// reference path and exit 1 on any difference, writing nothing.
    #[arg(long)]
    pub verify: bool,
}

/// Which tensors a command works on, besides its defaults (2-D weights of
/// linear layers; embeddings, lm_head, norms, biases and routers left
/// alone unless named).
#[derive(Debug, Clone, Default, Args)]
pub struct SelectArgs {
    /// Also work on tensors matching this glob (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave tensors matching this glob alone (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// A selected tensor holding NaN or ±inf: `error` refuses the run
    /// naming the tensor, the count and the first row (nothing is written);
    /// `keep` leaves such tensors unchanged and uncompressed (which costs
    /// one extra read of the selected tensors, to find them before the
    /// output is laid out).
    #[arg(long, value_enum, default_value_t = NonFinitePolicy::Error)]
    pub non_finite: NonFinitePolicy,
}

#[derive(Debug, Args)]
pub struct CompressArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A recipe TOML ([prune], [quantize] or [gguf], include / exclude);
    /// flags given on the command line override its fields.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Quantization scheme: w8a16, w4a16, w4a16-asym, w8a8, fp8, fp8-block,
    /// nvfp4a16, mxfp4a16 (see `quantize`).
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
    /// GGUF type for llama.cpp instead of a scheme (-o a .gguf file; see
    /// `quantize --type`): the selected linear weights are pruned first
    /// when a pruning is asked for, then every tensor goes into the file.
    /// --calibration / --calibration-text serve the pruning and the
    /// importance matrix alike.
    #[arg(long = "type", value_parser = gguf_type, conflicts_with = "scheme")]
    pub gguf_type: Option<shears_core::formats::gguf::mix::Target>,
    /// The tokenizer.json a GGUF file carries (default: the model folder's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Inputs per group for the int4 schemes, or `auto` (see `quantize`).
    #[arg(long, allow_negative_numbers = true, value_parser = group_size)]
    pub group_size: Option<GroupSize>,
    /// nearest or compressed-tensors.
    #[arg(long, value_enum)]
    pub rounding: Option<RoundingArg>,
    /// Fraction pruned in each scope, in [0, 1).
    #[arg(long, allow_hyphen_values = true, value_parser = sparsity)]
    pub sparsity: Option<f64>,
    /// magnitude, wanda, taylor, random or sparsegpt.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// rtn or gptq (see `quantize --method`).
    #[arg(long, value_enum)]
    pub quant_method: Option<QuantMethodArg>,
    /// row, tensor or global.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// N:M pattern, e.g. 2:4.
    #[arg(long, value_parser = pattern)]
    pub pattern: Option<Pattern>,
    /// Calibration safetensors (see `shears prune --help`).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    #[command(flatten)]
    pub calibration_text: CalibrationTextArgs,
    #[command(flatten)]
    pub hessian: HessianArgs,
}

#[derive(Debug, Args)]
pub struct DecompressArgs {
    /// A compressed-tensors checkpoint folder (with config.json).
    pub model: PathBuf,
    /// Output folder (must not exist unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CalibrationArgs {
    /// The checkpoint the calibration file is for.
    pub model: PathBuf,
    /// The .safetensors file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Input rows per layer (layer-wise distillation trains on them and
    /// holds some out, so it wants a few hundred).
    #[arg(long, default_value_t = 256)]
    pub rows: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which adapters to measure: `all` (default), `none` (the CPU only),
    /// or a part of an adapter's name.
    #[arg(long, default_value = "all")]
    pub adapter: String,
    /// Which graphics APIs to ask for adapters: all, vulkan, metal, dx12,
    /// gl (several with commas). (`--backend cpu` measures the CPU path
    /// only.)
    #[arg(long, default_value = "all")]
    pub api: String,
    /// Kernel families to measure, with commas: importance, select, mask,
    /// quant, float, matmul.
    #[arg(
        long,
        default_value = "importance,select,mask,quant,float,matmul",
        value_delimiter = ','
    )]
    pub family: Vec<String>,
    /// Tensor size: small (1024×1024), medium (2048), large (4096), or N
    /// for N×N.
    #[arg(long, default_value = "small")]
    pub size: String,
    /// Timed runs per kernel (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead of measuring: a side-by-side table of saved runs (JSON files
    /// from --json), with each run's rate relative to the first's.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub compare: Vec<PathBuf>,
    /// With --compare: draw the table as a bar chart in this SVG file.
    #[arg(long, requires = "compare")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .safetensors file, or a folder (sharded with an index, or not).
    pub model: PathBuf,
    /// Add absmax, mean, std and zero fraction per tensor.
    #[arg(long)]
    pub stats: bool,
    /// Machine-readable JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file (beside the table).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (must not exist unless --force), or the calibration
    /// file with --calibration-for.
    pub out: PathBuf,
    /// Write a synthetic calibration file for this checkpoint instead:
    /// made-up, seeded activations (input norms, gradients, input rows) in
    /// the format `prune --calibration` reads, marked synthetic in its
    /// metadata. Test data: real calibration is `shears calibrate`.
    #[arg(long, value_name = "MODEL")]
    pub calibration_for: Option<PathBuf>,
    /// Input rows per layer of a --calibration-for file.
    #[arg(long, default_value_t = 256)]
    pub rows: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// MLP intermediate size.
    #[arg(long, default_value_t = 768)]
    pub intermediate: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 1024)]
    pub vocab: usize,
    /// Width of one attention head.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Query heads per key/value head.
    #[arg(long, default_value_t = 2)]
    pub gqa: usize,
    /// Element type: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Seed of the values.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Largest shard, e.g. 3MB, 2GiB; 0 writes one file.
    #[arg(long, default_value = "5GB")]
    pub shard_size: String,
    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,
}
