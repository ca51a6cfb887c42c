//! Training throughput: MLP classifier steps (64-256-128-10, the digits
//! teacher's shape, batches of 32) in samples/s, and one layer-wise
//! distillation step on a 4096×4096 layer (fake quantization to int4
//! groups of 128, forward X·Ŵᵀ on a batch of 64 rows, MSE, weight
//! gradient dYᵀ·X, masked Adam) in weight bytes/s; on the CPU reference,
//! the fast CPU path and the GPU. memcpy is measured in the same run.
//!
//! `cargo bench --bench train`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::FastCpu;
use shears::core::reference::Reference;
use shears::core::train::{train, AdamStep, Device, GridShape, Mlp, TrainConfig};
use shears::kernels::GpuTrain;
use shears::testing::test_values;

const SAMPLES: usize = 1024;
const N: usize = 4096;
const BATCH: usize = 64;

/// One epoch of SAMPLES examples in batches of 32.
fn mlp_epoch<D: Device>(dev: &D, x: &[f32], labels: &[u32]) {
    let mut mlp = Mlp::new(&[64, 256, 128, 10], 1).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 32,
        lr: 1e-3,
        seed: 2,
        temperature: 1.0,
        alpha: 1.0,
    };
    train(dev, &mut mlp, x, labels, None, &cfg, &mut |_, _| {}).unwrap();
}

/// The buffers of one layer-wise step.
struct Layer<B> {
    w: B,
    wq: B,
    scales: B,
    mask: B,
    m: B,
    v: B,
    dw: B,
    x: B,
    target: B,
    y: B,
    dy: B,
}

impl<B> Layer<B> {
    fn new<D: Device<Buf = B>>(dev: &D) -> Self {
        let w = test_values(N * N, 3, false);
        let mask: Vec<f32> = (0..N * N).map(|i| ((i / 2) % 2) as f32).collect();
        let scales: Vec<f32> = (0..N * N / 128)
            .map(|i| 0.2 + (i % 7) as f32 * 0.01)
            .collect();
        Layer {
            w: dev.upload(&w).unwrap(),
            wq: dev.zeros(N * N).unwrap(),
            scales: dev.upload(&scales).unwrap(),
            mask: dev.upload(&mask).unwrap(),
            m: dev.zeros(N * N).unwrap(),
            v: dev.zeros(N * N).unwrap(),
            dw: dev.zeros(N * N).unwrap(),
            x: dev.upload(&test_values(BATCH * N, 4, false)).unwrap(),
            target: dev.upload(&test_values(BATCH * N, 5, false)).unwrap(),
            y: dev.zeros(BATCH * N).unwrap(),
            dy: dev.zeros(BATCH * N).unwrap(),
        }
    }

    /// One step; the loss comes back to the host (a GPU waits for it).
    fn step<D: Device<Buf = B>>(&mut self, dev: &D, t: u32) -> f64 {
        let grid = GridShape::int(4, 128);
        dev.fake_quant(&self.w, &self.scales, None, &mut self.wq, N, N, grid)
            .unwrap();
        dev.matmul(&self.x, &self.wq, &mut self.y, BATCH, N, N, false, true)
            .unwrap();
        let loss = dev
            .mse(&self.y, &self.target, &mut self.dy, BATCH, N)
            .unwrap();
        dev.matmul(&self.dy, &self.x, &mut self.dw, N, BATCH, N, true, false)
            .unwrap();
        let s = AdamStep::at(1e-4, 0.9, 0.999, 1e-8, t);
        dev.adam(
            &mut self.w,
            &self.dw,
            &mut self.m,
            &mut self.v,
            Some(&self.mask),
            N * N,
            s,
        )
        .unwrap();
        loss
    }
}

fn bench_layer<D: Device>(c: &mut Criterion, name: &str, dev: &D) {
    let mut layer = Layer::new(dev);
    let mut g = c.benchmark_group("train-layer-step");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((N * N * 4) as u64));
    let mut t = 0;
    g.bench_function(
        BenchmarkId::new(name, format!("{N}x{N} int4-g128 batch {BATCH}")),
        |b| {
            b.iter(|| {
                t += 1;
                layer.step(dev, t)
            })
        },
    );
    g.finish();
}

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    common::memcpy(c, N * N * 4);
    let x: Vec<f32> = test_values(SAMPLES * 64, 9, false)
        .iter()
        .map(|v| v.abs() * 8.0)
        .collect();
    let labels: Vec<u32> = (0..SAMPLES as u32).map(|i| i % 10).collect();
    {
        let mut g = c.benchmark_group("train-mlp");
        g.sample_size(10);
        g.throughput(Throughput::Elements(SAMPLES as u64));
        let id = |b: &str| BenchmarkId::new(b, "64-256-128-10 batch 32");
        g.bench_function(id("cpu-reference"), |b| {
            b.iter(|| mlp_epoch(&Reference, &x, &labels))
        });
        g.bench_function(id("cpu-fast"), |b| {
            b.iter(|| mlp_epoch(&FastCpu, &x, &labels))
        });
        if let Some(ctx) = &gpu {
            let dev = GpuTrain::new(ctx);
            g.bench_function(id(&format!("gpu {}", ctx.info.name)), |b| {
                b.iter(|| mlp_epoch(&dev, &x, &labels))
            });
        }
        g.finish();
    }
    bench_layer(c, "cpu-fast", &FastCpu);
    if let Some(ctx) = &gpu {
        bench_layer(c, &format!("gpu {}", ctx.info.name), &GpuTrain::new(ctx));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
