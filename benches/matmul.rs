//! Masked matmul Y = X·(W⊙M)ᵀ of 64 probe rows against a 4096×4096 bf16
//! weight (what --validate runs per layer): fast CPU path and GPU. The
//! throughput counts weight bytes streamed; memcpy in the same run.
//!
//! `cargo bench --bench matmul`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::matmul::FastCpu;
use shears::core::reference::matmul::{probe_inputs, Matmul};
use shears::core::DType;
use shears::kernels::GpuMatmul;

const N: usize = 4096;
const P: usize = 64;

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    common::memcpy(c, N * N * 2);
    let buf = common::tensor(DType::BF16, N, N);
    let w = buf.view();
    let x = probe_inputs(P, N, 1);
    let mask: Vec<u8> = (0..N * N).map(|i| (i % 2) as u8).collect();
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(buf.data.len() as u64));
    let id = |b: &str| BenchmarkId::new(b, format!("{P}x{N} · ({N}x{N} bf16 ⊙ mask)ᵀ"));
    g.bench_function(id("cpu-fast"), |b| {
        b.iter(|| FastCpu.masked_matmul(&x, P, &w, Some(&mask)).unwrap())
    });
    if let Some(ctx) = &gpu {
        let mm = GpuMatmul::new(ctx);
        g.bench_function(id(&format!("gpu {}", ctx.info.name)), |b| {
            b.iter(|| mm.masked_matmul(&x, P, &w, Some(&mask)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
