//! Shared by the benches: the memcpy yardstick measured in the same run,
//! the GPU when there is one, and the test tensors.

#![allow(dead_code)]

use criterion::{BenchmarkId, Criterion, Throughput};
use shears::core::{DType, TensorBuf};
use shears::kernels::GpuContext;

/// memcpy of `bytes` bytes: the bandwidth every figure is compared with.
pub fn memcpy(c: &mut Criterion, bytes: usize) {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut g = c.benchmark_group("memcpy");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(BenchmarkId::from_parameter(bytes), |b| {
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
        })
    });
    g.finish();
}

/// The GPU, or `None` with a note on stderr.
pub fn gpu() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            eprintln!("GPU benches skipped: {e}");
            None
        }
    }
}

/// A seeded rows × cols tensor of `dtype`.
pub fn tensor(dtype: DType, rows: usize, cols: usize) -> TensorBuf {
    let v = shears::testing::test_values(rows * cols, 7, false);
    TensorBuf::from_f32(dtype, vec![rows, cols], &v).unwrap()
}
