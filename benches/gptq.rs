//! GPTQ on one 4096×4096 layer with the Gram matrix of 4096 calibration
//! rows: the Gram sums XᵀX, the factor of the damped inverse Hessian (once
//! per input, shared by q/k/v and gate/up), the w4a16 sweep, SparseGPT 50%
//! and the Hessian-weighted error, on the fast CPU path, and the Gram sums,
//! factor and GPTQ sweep on the GPU when there is one (lavapipe in CI,
//! which gets a 1024-wide layer). Seconds per layer; the Gram product on
//! one thread of `sgemm` in the same run as the yardstick.
//!
//! `cargo bench --bench gptq`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use shears::core::fast::FastCpu;
use shears::core::reference::hessian::{ActOrder, GroupScales, Hessian, Job, QuantJob, Sparsify};
use shears::core::reference::quant::{QuantSpec, Rounding};
use shears::core::DType;
use shears::kernels::hessian::GpuHessian;

const N: usize = 4096;
const TOKENS: usize = 4096;
/// The layer a software adapter sweeps.
const N_SOFTWARE: usize = 1024;

/// The leading n×n block of a Gram matrix (the Gram of the first n inputs).
fn gram_of_size(g: &[f32], n: usize) -> Vec<f32> {
    (0..n).flat_map(|i| g[i * N..i * N + n].to_vec()).collect()
}

/// `TOKENS` rows whose N features share N/8 latent factors.
fn inputs() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let r = N / 8;
    let z: Vec<f32> = (0..TOKENS * r)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let a: Vec<f32> = (0..r * N).map(|_| rng.sample(StandardNormal)).collect();
    let mut x = vec![0.0f32; TOKENS * N];
    // SAFETY: z [TOKENS, r], a [r, N], x [TOKENS, N].
    unsafe {
        matrixmultiply::sgemm(
            TOKENS,
            r,
            N,
            1.0,
            z.as_ptr(),
            r as isize,
            1,
            a.as_ptr(),
            N as isize,
            1,
            0.0,
            x.as_mut_ptr(),
            N as isize,
            1,
        )
    };
    x.iter_mut()
        .for_each(|v| *v += 0.1 * rng.sample::<f32, _>(StandardNormal));
    x
}

/// XᵀX of `x` on one thread of `sgemm`.
fn gram(x: &[f32]) -> Vec<f32> {
    let mut g = vec![0.0f32; N * N];
    // SAFETY: xᵀ [N, TOKENS] (x with swapped strides), g [N, N].
    unsafe {
        matrixmultiply::sgemm(
            N,
            TOKENS,
            N,
            1.0,
            x.as_ptr(),
            1,
            N as isize,
            x.as_ptr(),
            N as isize,
            1,
            0.0,
            g.as_mut_ptr(),
            N as isize,
            1,
        )
    };
    g
}

/// The first `tokens` rows of `x`, first `n` features.
fn inputs_of_size(x: &[f32], tokens: usize, n: usize) -> Vec<f32> {
    (0..tokens)
        .flat_map(|t| x[t * N..t * N + n].to_vec())
        .collect()
}

/// XᵀX of `x` [tokens, n] through `h`'s Gram sums.
fn gram_sums(h: &dyn Hessian, x: &[f32], tokens: usize, n: usize) -> Vec<f32> {
    let mut s = h.gram(n).unwrap();
    s.add(x, tokens).unwrap();
    s.finish().unwrap()
}

fn bench(c: &mut Criterion) {
    let x = inputs();
    let g = gram(&x);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let w: Vec<f32> = (0..N * N)
        .map(|_| 0.02 * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let f = FastCpu.factor(&g, N, 0.01, ActOrder::None).unwrap();
    let w4 = QuantJob {
        spec: QuantSpec {
            bits: 4,
            group: Some(128),
            symmetric: true,
        },
        rounding: Rounding::Nearest,
        dtype: DType::BF16,
        scales: GroupScales::Upfront,
    };
    let mut grp = c.benchmark_group("gptq");
    grp.sample_size(10);
    let id = |what: &str| BenchmarkId::new("cpu-fast", format!("{what} {N}x{N}, {TOKENS} rows"));
    grp.bench_function(id("gram XᵀX (sgemm, 1 thread: yardstick)"), |b| {
        b.iter(|| gram(&x))
    });
    grp.bench_function(id("gram XᵀX"), |b| {
        b.iter(|| gram_sums(&FastCpu, &x, TOKENS, N))
    });
    grp.bench_function(id("factor"), |b| {
        b.iter(|| FastCpu.factor(&g, N, 0.01, ActOrder::None).unwrap())
    });
    let gptq = Job {
        quant: Some(w4),
        prune: None,
        block: 128,
    };
    grp.bench_function(id("gptq w4a16 sweep"), |b| {
        b.iter(|| FastCpu.solve(&w, N, &f, &gptq).unwrap())
    });
    if let Some(ctx) = &common::gpu() {
        // A software adapter (lavapipe) takes minutes per 4096 layer
        // (measured 165 s): it gets a 1024-column layer, the first rows.
        let n = match ctx.info.device_type {
            shears::kernels::DeviceType::Cpu => N_SOFTWARE,
            _ => N,
        };
        let (gs, ws) = (gram_of_size(&g, n), &w[..n * n]);
        let fs = FastCpu.factor(&gs, n, 0.01, ActOrder::None).unwrap();
        let gpu = GpuHessian::new(ctx);
        let name = format!("gpu {}", ctx.info.name);
        let xs = inputs_of_size(&x, TOKENS, n);
        for (who, h) in [
            (name.as_str(), &gpu as &dyn Hessian),
            ("cpu-fast", &FastCpu),
        ] {
            grp.bench_function(
                BenchmarkId::new(who, format!("gram XᵀX {n}x{n}, {TOKENS} rows")),
                |b| b.iter(|| gram_sums(h, &xs, TOKENS, n)),
            );
            grp.bench_function(BenchmarkId::new(who, format!("factor {n}x{n}")), |b| {
                b.iter(|| h.factor(&gs, n, 0.01, ActOrder::None).unwrap())
            });
        }
        grp.bench_function(
            BenchmarkId::new(name, format!("gptq w4a16 sweep {n}x{n}, {TOKENS} rows")),
            |b| b.iter(|| gpu.solve(ws, n, &fs, &gptq).unwrap()),
        );
        grp.bench_function(
            BenchmarkId::new(
                "cpu-fast",
                format!("gptq w4a16 sweep {n}x{n}, {TOKENS} rows"),
            ),
            |b| b.iter(|| FastCpu.solve(ws, n, &fs, &gptq).unwrap()),
        );
    }
    let sparse = Job {
        quant: None,
        prune: Some(Sparsify::Unstructured(0.5)),
        block: 128,
    };
    grp.bench_function(id("sparsegpt 50% sweep"), |b| {
        b.iter(|| FastCpu.solve(&w, N, &f, &sparse).unwrap())
    });
    grp.bench_function(id("weighted error"), |b| {
        b.iter(|| FastCpu.weighted_error(&w, &w, N, &g).unwrap())
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
