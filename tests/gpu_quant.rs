//! GPU against CPU reference for the quant family: byte-identical codes,
//! scales and zero points for every scheme, rounding mode and dtype, on
//! 1, 7, 31, 33, 127 and 129 columns, groups, values placed next to
//! rounding ties, the golden dense weights, and chunks forced small.
//! Reported as ignored without an adapter; `SHEARS_REQUIRE_GPU=1` fails.

use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};
use shears::core::reference::gguf::GgufType;
use shears::core::reference::quant::{QuantSpec, Rounding};
use shears::core::{Checkpoint, DType, TensorBuf};
use shears::kernels::GpuContext;
use shears::testing::{near_ties, test_gpu};

#[path = "gpu_quant/checks.rs"]
mod checks;

use checks::{check, check_dense, check_dequant, check_gguf, check_huge_range};

fn main() {
    let args = Arguments::from_args();
    let gpu: Result<Option<Arc<(GpuContext, GpuContext)>>, String> = test_gpu().map(|c| {
        c.map(|ctx| {
            let small = GpuContext::new()
                .expect("second context")
                .with_chunk_bytes(1024);
            Arc::new((ctx, small))
        })
    });
    let skip = matches!(gpu, Ok(None));
    let mut trials = Vec::new();
    let schemes = [
        (
            "w8-channel",
            QuantSpec {
                bits: 8,
                group: None,
                symmetric: true,
            },
        ),
        (
            "w4-g32",
            QuantSpec {
                bits: 4,
                group: Some(32),
                symmetric: true,
            },
        ),
        (
            "w4-g32-asym",
            QuantSpec {
                bits: 4,
                group: Some(32),
                symmetric: false,
            },
        ),
        (
            "w8-channel-asym",
            QuantSpec {
                bits: 8,
                group: None,
                symmetric: false,
            },
        ),
    ];
    let mut seed = 500;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (sname, spec) in schemes {
            let widths: Vec<usize> = match spec.group {
                None => vec![1, 7, 31, 33, 127, 129],
                Some(g) => vec![g, 2 * g, 4 * g + g],
            };
            for cols in widths {
                for rounding in [Rounding::Nearest, Rounding::CompressedTensors] {
                    for small in [false, true] {
                        seed += 1;
                        let rows = if small { 9 } else { 5 };
                        if small && cols * 4 > 1000 {
                            continue;
                        }
                        let name = format!(
                            "{}quant::{sname}::{dtype}::{rows}x{cols}::{rounding:?}",
                            if small { "small_chunk::" } else { "" }
                        );
                        let buf = TensorBuf::from_f32(
                            dtype,
                            vec![rows, cols],
                            &near_ties(&spec, dtype, rows, cols, seed),
                        )
                        .unwrap();
                        let gpu = gpu.clone();
                        trials.push(
                            Trial::test(name, move || match &gpu {
                                Err(r) => Err(r.clone().into()),
                                Ok(None) => Ok(()),
                                Ok(Some(p)) => {
                                    check(if small { &p.1 } else { &p.0 }, spec, &buf, rounding)
                                }
                            })
                            .with_ignored_flag(skip),
                        );
                    }
                }
            }
        }
    }
    // Y = X·dequant(Q)ᵀ from packed codes, within MATMUL_RTOL of the
    // reference; rows split over chunks on the small context.
    for (sname, spec) in schemes {
        let widths: Vec<usize> = match spec.group {
            None => vec![1, 7, 33, 129],
            Some(g) => vec![g, 3 * g],
        };
        for cols in widths {
            for small in [false, true] {
                seed += 1;
                let name = format!(
                    "{}dequant_matmul::{sname}::37x{cols}",
                    if small { "small_chunk::" } else { "" }
                );
                let gpu = gpu.clone();
                trials.push(
                    Trial::test(name, move || match &gpu {
                        Err(r) => Err(r.clone().into()),
                        Ok(None) => Ok(()),
                        Ok(Some(p)) => {
                            check_dequant(if small { &p.1 } else { &p.0 }, spec, 37, cols, seed)
                        }
                    })
                    .with_ignored_flag(skip),
                );
            }
        }
    }
    // Packed codes back to dense values: byte-identical to the CPU, every
    // output dtype, rows split over chunks on the small context.
    for (sname, spec) in schemes {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let widths: Vec<usize> = match spec.group {
                None => vec![1, 7, 33, 129],
                Some(g) => vec![g, 3 * g],
            };
            for cols in widths {
                for small in [false, true] {
                    seed += 1;
                    let name = format!(
                        "{}dequantize_packed::{sname}::{dtype}::9x{cols}",
                        if small { "small_chunk::" } else { "" }
                    );
                    let gpu = gpu.clone();
                    trials.push(
                        Trial::test(name, move || match &gpu {
                            Err(r) => Err(r.clone().into()),
                            Ok(None) => Ok(()),
                            Ok(Some(p)) => check_dense(
                                if small { &p.1 } else { &p.0 },
                                spec,
                                dtype,
                                cols,
                                seed,
                            ),
                        })
                        .with_ignored_flag(skip),
                    );
                }
            }
        }
    }
    // GGUF blocks: byte-identical to ggml's reference functions, values
    // next to rounding boundaries, every input dtype, chunked rows.
    for kind in [GgufType::Q8_0, GgufType::Q4_0] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (rows, cols) in [(1, 32), (7, 64), (13, 160)] {
                for small in [false, true] {
                    seed += 1;
                    let name = format!(
                        "{}gguf::{kind:?}::{dtype}::{rows}x{cols}",
                        if small { "small_chunk::" } else { "" }
                    );
                    let gpu = gpu.clone();
                    trials.push(
                        Trial::test(name, move || match &gpu {
                            Err(r) => Err(r.clone().into()),
                            Ok(None) => Ok(()),
                            Ok(Some(p)) => check_gguf(
                                if small { &p.1 } else { &p.0 },
                                kind,
                                dtype,
                                rows,
                                cols,
                                seed,
                            ),
                        })
                        .with_ignored_flag(skip),
                    );
                }
            }
        }
    }
    for dtype in [DType::F32, DType::BF16] {
        for (sname, spec) in schemes.into_iter().filter(|(_, s)| !s.symmetric) {
            let gpu = gpu.clone();
            trials.push(
                Trial::test(
                    format!("quant::huge_range::{sname}::{dtype}"),
                    move || match &gpu {
                        Err(r) => Err(r.clone().into()),
                        Ok(None) => Ok(()),
                        Ok(Some(p)) => check_huge_range(&p.0, spec, dtype),
                    },
                )
                .with_ignored_flag(skip),
            );
        }
    }
    // The golden dense weights, every golden scheme, both roundings.
    for dtype in ["bf16", "f32"] {
        let gpu = gpu.clone();
        trials.push(
            Trial::test(format!("quant::golden::{dtype}"), move || match &gpu {
                Err(r) => Err(r.clone().into()),
                Ok(None) => Ok(()),
                Ok(Some(p)) => {
                    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/golden")
                        .join(dtype)
                        .join("dense");
                    let ck = Checkpoint::open(dir).map_err(|e| e.to_string())?;
                    for t in ck.tensors.iter().filter(|t| t.name.contains("proj")) {
                        let buf = TensorBuf {
                            dtype: t.dtype,
                            shape: t.shape.clone(),
                            data: ck.view(t).bytes().to_vec(),
                        };
                        for spec in [
                            QuantSpec {
                                bits: 8,
                                group: None,
                                symmetric: true,
                            },
                            QuantSpec {
                                bits: 4,
                                group: Some(128),
                                symmetric: true,
                            },
                            QuantSpec {
                                bits: 4,
                                group: Some(128),
                                symmetric: false,
                            },
                        ] {
                            for rounding in [Rounding::Nearest, Rounding::CompressedTensors] {
                                check(&p.0, spec, &buf, rounding).map_err(|e| {
                                    format!("{}: {}", t.name, e.message().unwrap_or_default())
                                })?;
                            }
                        }
                    }
                    Ok(())
                }
            })
            .with_ignored_flag(skip),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
