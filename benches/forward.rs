//! The forward family: one SmolLM2-135M-shaped decoder layer (hidden 576,
//! intermediate 1536, 9 heads of 64, 3 KV heads) over 4 sequences of 512
//! tokens, on the fast CPU path and the GPU, against this machine's GEMM
//! peak measured in the same run (the fast path's own product on a
//! 2048×2048×2048 problem). Throughput is counted in FLOPs (2 per
//! multiply-add, the layer's attention at the causal half it needs), so
//! "elem/s" reads as FLOP/s and the two groups divide into the ratio the
//! README reports.
//!
//! `cargo bench --bench forward`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::FastCpu;
use shears::core::generate::{generate, LlamaSpec};
use shears::core::model::{ModelConfig, NoCapture, Runner, Weights};
use shears::core::reference::forward::Forward;
use shears::core::{Checkpoint, DType};
use shears::kernels::GpuForward;

const SEQS: usize = 4;
const SEQ_LEN: usize = 512;

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    let n = 2048;
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect();
    let mut g = c.benchmark_group("gemm_peak");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    g.bench_function(
        BenchmarkId::new("cpu-fast", format!("{n}x{n}x{n} f32")),
        |b| b.iter(|| FastCpu.linear(&a, n, &a, n, None).unwrap()),
    );
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let spec = LlamaSpec {
        hidden: 576,
        intermediate: 1536,
        layers: 1,
        vocab: 1024,
        head_dim: 64,
        gqa: 3,
        dtype: DType::BF16,
        seed: 0,
    };
    let model = dir.path().join("m");
    generate(&spec, &model, 0, false, &|_| {}).unwrap();
    let ckpt = Checkpoint::open(&model).unwrap();
    let cfg = ModelConfig::from_file(&model.join("config.json")).unwrap();
    let flops = cfg.layer_flops(SEQS * SEQ_LEN, SEQ_LEN) as u64;
    let weights = Weights::open(&ckpt, cfg).unwrap();
    let lw = weights.layer(0).unwrap();
    let ids: Vec<u32> = (0..SEQS * SEQ_LEN).map(|i| (i * 7 % 1024) as u32).collect();
    let mut g = c.benchmark_group("decoder_layer");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops));
    let id = |b: &str| BenchmarkId::new(b, format!("SmolLM2-135M layer, {SEQS}x{SEQ_LEN} tokens"));
    let mut run = |name: &str, fw: &dyn Forward| {
        let runner = Runner::new(&weights, fw, SEQ_LEN).unwrap();
        let x0 = runner.embed(&ids).unwrap();
        g.bench_function(id(name), |b| {
            b.iter(|| {
                let mut x = x0.clone();
                runner.layer(&lw, &mut x, &mut NoCapture).unwrap();
                x
            })
        });
    };
    run("cpu-fast", &FastCpu);
    if let Some(ctx) = &gpu {
        run(&format!("gpu {}", ctx.info.name), &GpuForward::new(ctx));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
