//! Selection of the 50% cut of one tensor of 16.8M magnitudes (f32 and
//! bf16), per tensor: fast CPU path (sample + one counting pass), the GPU,
//! and the sorting reference; memcpy of the same bytes in the same run.
//!
//! `cargo bench --bench select`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::select::FastCpu;
use shears::core::reference::score::Scorer;
use shears::core::reference::select::{prune_count, tensor_cut, Reference};
use shears::core::DType;
use shears::kernels::GpuSelect;

const N: usize = 4096;

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    common::memcpy(c, N * N * 2);
    common::memcpy(c, N * N * 4);
    let mut g = c.benchmark_group("select");
    g.sample_size(10);
    for dtype in [DType::BF16, DType::F32] {
        let buf = common::tensor(dtype, N, N);
        let w = buf.view();
        let s = Scorer::magnitude();
        let k = prune_count(0.5, (N * N) as u64);
        g.throughput(Throughput::Bytes(buf.data.len() as u64));
        let id = |b: &str| BenchmarkId::new(b, format!("{dtype} {N}x{N}"));
        g.bench_function(id("cpu-fast"), |b| {
            b.iter(|| tensor_cut(&FastCpu, &w, &s, k).unwrap())
        });
        g.bench_function(id("cpu-reference"), |b| {
            b.iter(|| tensor_cut(&Reference, &w, &s, k).unwrap())
        });
        if let Some(ctx) = &gpu {
            let sel = GpuSelect::new(ctx);
            g.bench_function(id(&format!("gpu {}", ctx.info.name)), |b| {
                b.iter(|| tensor_cut(&sel, &w, &s, k).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
