//! Masking a 4096×4096 tensor: a tensor cut at 50% (ties in index order)
//! and the 2:4 pattern, fast CPU path and GPU; memcpy in the same run.
//!
//! `cargo bench --bench mask`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::mask::FastCpu;
use shears::core::fast::select::FastCpu as FastSelect;
use shears::core::reference::mask::Mask;
use shears::core::reference::score::Scorer;
use shears::core::reference::select::{prune_count, tensor_cut};
use shears::core::DType;
use shears::kernels::GpuMask;

const N: usize = 4096;

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    common::memcpy(c, N * N * 2);
    let mut g = c.benchmark_group("mask");
    g.sample_size(10);
    for dtype in [DType::BF16, DType::F32] {
        let buf = common::tensor(dtype, N, N);
        let w = buf.view();
        let s = Scorer::magnitude();
        let cut = tensor_cut(&FastSelect, &w, &s, prune_count(0.5, (N * N) as u64)).unwrap();
        g.throughput(Throughput::Bytes(buf.data.len() as u64));
        let id = |b: &str, what: &str| BenchmarkId::new(b, format!("{what} {dtype} {N}x{N}"));
        let mut backends: Vec<(String, Box<dyn Mask>)> =
            vec![("cpu-fast".into(), Box::new(FastCpu))];
        if let Some(ctx) = &gpu {
            backends.push((
                format!("gpu {}", ctx.info.name),
                Box::new(GpuMask::new(ctx)),
            ));
        }
        for (name, m) in &backends {
            g.bench_function(id(name, "cut"), |b| {
                b.iter(|| m.apply_cut(&w, &s, cut).unwrap())
            });
            g.bench_function(id(name, "2:4"), |b| b.iter(|| m.nm(&w, &s, 2, 4).unwrap()));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
