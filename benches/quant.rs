//! Quantization of a 4096×4096 bf16 weight: int8 per channel and int4 in
//! groups of 128, on the CPU reference, the fast CPU path and the GPU; their
//! packed codes back to dense bf16 on the fast CPU path and the GPU; GGUF
//! blocks; the float schemes (FP8 per channel and per block, NVFP4, MXFP4)
//! on the fast CPU path and the GPU; and the reference's dequantization of
//! the int8 codes. Throughput counts the
//! dense bf16 bytes; memcpy in the same run.
//!
//! `cargo bench --bench quant`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shears::core::fast::float::{quantize_fp4_into, quantize_fp8_into, Source};
use shears::core::fast::quant::{
    dequantize_packed, quantize_gguf, quantize_view, quantize_view_into,
};
use shears::core::reference::fp4::{nv_global_scale, Fp4};
use shears::core::reference::fp8::Fp8;
use shears::core::reference::gguf::GgufType;
use shears::core::reference::matmul::PackedParts;
use shears::core::reference::quant::{dequantize, quantize_matrix, QuantSpec, Quantized, Rounding};
use shears::core::DType;
use shears::kernels::{GpuFloat, GpuQuant};

/// A float scheme: FP8 with its block, FP4 with NVFP4's global scale.
#[derive(Clone, Copy)]
enum Float {
    Fp8(Option<usize>),
    Fp4(Option<f32>),
}

const N: usize = 4096;

fn bench(c: &mut Criterion) {
    let gpu = common::gpu();
    common::memcpy(c, N * N * 2);
    let buf = common::tensor(DType::BF16, N, N);
    let w = buf.view();
    let x = w.to_f32().unwrap();
    let mut g = c.benchmark_group("quant");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(buf.data.len() as u64));
    for (name, spec) in [
        (
            "int8-channel",
            QuantSpec {
                bits: 8,
                group: None,
                symmetric: true,
            },
        ),
        (
            "int4-group128",
            QuantSpec {
                bits: 4,
                group: Some(128),
                symmetric: true,
            },
        ),
    ] {
        let id = |b: &str| BenchmarkId::new(b, format!("{name} bf16 {N}x{N}"));
        g.bench_function(id("cpu-reference"), |b| {
            b.iter(|| quantize_matrix(&spec, &x, N, N, DType::BF16, Rounding::Nearest))
        });
        // Into a reused output, as memcpy copies into a reused buffer (a
        // fresh 16 MiB code buffer costs its page faults on every call).
        let mut out = Quantized::default();
        g.bench_function(id("cpu-fast"), |b| {
            b.iter(|| quantize_view_into(&spec, &w, Rounding::Nearest, false, &mut out).unwrap())
        });
        g.bench_function(id("cpu-fast with error stats"), |b| {
            b.iter(|| quantize_view_into(&spec, &w, Rounding::Nearest, true, &mut out).unwrap())
        });
        if let Some(ctx) = &gpu {
            let q = GpuQuant::new(ctx);
            g.bench_function(id(&format!("gpu {}", ctx.info.name)), |b| {
                b.iter(|| q.quantize_view(&spec, &w, Rounding::Nearest).unwrap())
            });
        }
        // Packed codes back to dense bf16 (what `shears decompress` does).
        let q = quantize_view(&spec, &w, Rounding::Nearest).unwrap();
        let parts = PackedParts::from_quantized(&q, spec.bits, spec.symmetric);
        let did = |b: &str| BenchmarkId::new(b, format!("dequantize {name} bf16 {N}x{N}"));
        g.bench_function(did("cpu-fast"), |b| {
            b.iter(|| dequantize_packed(&parts.view(), DType::BF16).unwrap())
        });
        if let Some(ctx) = &gpu {
            let q = GpuQuant::new(ctx);
            g.bench_function(did(&format!("gpu {}", ctx.info.name)), |b| {
                b.iter(|| q.dequantize_packed(&parts.view(), DType::BF16).unwrap())
            });
        }
    }
    // GGUF blocks (ggml's reference numerics) of the same weight, the
    // K-quants' searches included.
    for kind in [
        GgufType::Q8_0,
        GgufType::Q4_0,
        GgufType::Q4_K,
        GgufType::Q6_K,
    ] {
        let id = |b: &str| BenchmarkId::new(b, format!("gguf {kind:?} bf16 {N}x{N}"));
        g.bench_function(id("cpu-fast"), |b| {
            b.iter(|| quantize_gguf(&w, kind).unwrap())
        });
        if let Some(ctx) = &gpu {
            let q = GpuQuant::new(ctx);
            g.bench_function(id(&format!("gpu {}", ctx.info.name)), |b| {
                b.iter(|| q.quantize_gguf(&w, kind).unwrap())
            });
        }
    }
    // The float schemes (FP8 per channel and per 128×128 block, NVFP4
    // under a global scale, MXFP4): the fast CPU path into reused buffers,
    // and the GPU.
    let gs = nv_global_scale(x.iter().fold(0.0f32, |m, v| m.max(v.abs())), DType::BF16);
    let floats = [
        ("fp8", Float::Fp8(None)),
        ("fp8-block", Float::Fp8(Some(128))),
        ("nvfp4", Float::Fp4(Some(gs))),
        ("mxfp4", Float::Fp4(None)),
    ];
    for (name, f) in floats {
        let id = |b: &str| BenchmarkId::new(b, format!("{name} bf16 {N}x{N}"));
        let (mut q8, mut q4) = (Fp8::default(), Fp4::default());
        let src = Source::View(&w);
        g.bench_function(id("cpu-fast"), |b| {
            b.iter(|| match f {
                Float::Fp8(block) => {
                    quantize_fp8_into(src, N, N, block, DType::BF16, Rounding::Nearest, &mut q8)
                }
                Float::Fp4(gs) => quantize_fp4_into(src, N, N, gs, DType::BF16, &mut q4),
            })
        });
        if let Some(ctx) = &gpu {
            let q = GpuFloat::new(ctx);
            g.bench_function(id(&format!("gpu {}", ctx.info.name)), |b| {
                b.iter(|| match f {
                    Float::Fp8(block) => {
                        q.quantize_fp8(&w, block, Rounding::Nearest).unwrap();
                    }
                    Float::Fp4(gs) => {
                        q.quantize_fp4(&w, gs).unwrap();
                    }
                })
            });
        }
    }
    let q = quantize_view(
        &QuantSpec {
            bits: 8,
            group: None,
            symmetric: true,
        },
        &w,
        Rounding::Nearest,
    )
    .unwrap();
    g.bench_function(
        BenchmarkId::new("cpu-reference", "dequantize int8-channel"),
        |b| {
            b.iter(|| {
                q.codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| dequantize(c as i32, q.params[i / N]))
                    .fold(0.0f32, |a, v| a + v)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
