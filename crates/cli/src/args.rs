//! Command-line arguments as clap parses them. Commands never read these
//! directly: `main` turns them into validated settings first.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// SHEARS_BACKEND=vulkan|metal|dx12|gl narrow the GPU choice.
    #[arg(long, global = true, value_enum, default_value_t = BackendChoice::Auto, env = "SHEARS_COMPUTE")]
    pub backend: BackendChoice,
    /// More log output (-v debug, -vv trace); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr, no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
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
    /// Show the tensors of a checkpoint (file or folder), optionally with
    /// statistics computed on the chosen backend.
    Inspect(InspectArgs),
    /// Write a seeded Llama-shaped checkpoint (test data and benchmarks).
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
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
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (must not exist unless --force).
    pub out: PathBuf,
    /// Hidden size.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// MLP intermediate size.
    #[arg(long, default_value_t = 688)]
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
