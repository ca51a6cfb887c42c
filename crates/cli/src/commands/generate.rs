//! `shears generate OUT`: a seeded Llama-shaped checkpoint, for the assets
//! folder, tests and benchmarks at any size; with `--calibration-for MODEL`
//! a synthetic calibration file for MODEL.

use anyhow::{Context, Result};
use shears_core::generate::{generate, LlamaSpec};
use shears_core::DType;

use crate::args::GenerateArgs;
use crate::output::{human_bytes, parse_size, Out};
use crate::progress::Progress;

pub fn run(args: &GenerateArgs, quiet: bool, out: &mut Out) -> Result<()> {
    if let Some(model) = &args.calibration_for {
        return crate::lm::synthetic_calibration(
            model, &args.out, args.rows, args.seed, args.force, out,
        );
    }
    let dtype = match args.dtype.to_ascii_lowercase().as_str() {
        "f32" | "float32" => DType::F32,
        "f16" | "float16" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        other => anyhow::bail!("--dtype {other}: use f32, f16 or bf16"),
    };
    let shard = parse_size(&args.shard_size)
        .map_err(anyhow::Error::msg)
        .context("--shard-size")?;
    let spec = LlamaSpec {
        hidden: args.hidden,
        intermediate: args.intermediate,
        layers: args.layers,
        vocab: args.vocab,
        head_dim: args.head_dim,
        gqa: args.gqa,
        dtype,
        seed: args.seed,
    };
    spec.validate()?;
    let total = spec.total_bytes();
    let progress = std::sync::Mutex::new(Progress::bytes(total, "generate", quiet));
    let dest = generate(&spec, &args.out, shard, args.force, &|done| {
        if let Ok(mut p) = progress.lock() {
            p.set(done);
        }
    })?;
    if let Ok(p) = progress.into_inner() {
        p.finish();
    }
    out.line(&format!(
        "wrote {} ({} of {} tensors, seed {})",
        dest.display(),
        human_bytes(total),
        dtype,
        args.seed
    ));
    Ok(())
}
