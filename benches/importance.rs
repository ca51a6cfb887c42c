//! Row-norm throughput of the importance family: CPU reference, fast CPU
//! path and GPU (when an adapter exists), beside this machine's memcpy
//! bandwidth measured in the same run. Throughput counts bytes of input read
//! per second (criterion prints binary units, GiB/s); memcpy counts bytes
//! copied.
//!
//! `cargo bench --bench importance`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::importance::FastCpu;
use shears::core::reference::importance::{Importance, Reference};
use shears::core::{DType, TensorBuf};
use shears::kernels::GpuImportance;
use shears::testing::test_values;

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn bench(c: &mut Criterion) {
    let values = test_values(ROWS * COLS, 7, false);
    let gpu = common::gpu();

    // memcpy of the same number of bytes as each tensor, as the yardstick.
    common::memcpy(c, ROWS * COLS * 2);
    common::memcpy(c, ROWS * COLS * 4);

    let mut g = c.benchmark_group("row_norms");
    g.sample_size(10);
    for dtype in [DType::BF16, DType::F32] {
        let buf = TensorBuf::from_f32(dtype, vec![ROWS, COLS], &values).unwrap();
        let w = buf.view();
        g.throughput(Throughput::Bytes(buf.data.len() as u64));
        let name = |backend: &str| BenchmarkId::new(backend, format!("{dtype} {ROWS}x{COLS}"));
        g.bench_function(name("cpu-reference"), |b| {
            b.iter(|| Reference.row_norms(&w).unwrap())
        });
        g.bench_function(name("cpu-fast"), |b| {
            b.iter(|| FastCpu.row_norms(&w).unwrap())
        });
        if let Some(ctx) = &gpu {
            let k = GpuImportance::new(ctx);
            let label = format!("gpu {}", ctx.info.name);
            g.bench_function(name(&label), |b| b.iter(|| k.row_norms(&w).unwrap()));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
