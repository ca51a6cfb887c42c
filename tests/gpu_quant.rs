//! GPU against CPU reference for the quant family: byte-identical codes,
//! scales and zero points for every scheme, rounding mode and dtype, on
//! 1, 7, 31, 33, 127 and 129 columns, groups, values placed next to
//! rounding ties, the golden dense weights, and chunks forced small.
//! Reported as ignored without an adapter; `SHEARS_REQUIRE_GPU=1` fails.

use libtest_mimic::{Arguments, Failed};
use shears::core::reference::gguf::GgufType;
use shears::core::reference::quant::{QuantSpec, Rounding};
use shears::core::{Checkpoint, DType, TensorBuf};
use shears::testing::near_ties;

#[path = "gpu_quant/checks.rs"]
mod checks;
#[path = "gpu_quant/float.rs"]
mod float;
mod parity;

use parity::Backends;

use checks::{
    check, check_dense, check_dequant, check_gguf, check_huge_range, check_kquant,
    check_kquant_weighted,
};
use float::{check_float, float_values, Float};

fn main() {
    let args = Arguments::from_args();
    let backends = Backends::open();
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
    // Codes, scales and zero points, every scheme, rounding and dtype, on
    // rows next to rounding ties.
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (sname, spec) in schemes {
            let widths: Vec<usize> = match spec.group {
                None => vec![1, 7, 31, 33, 127, 129],
                Some(g) => vec![g, 2 * g, 4 * g + g],
            };
            for cols in widths {
                for rounding in [Rounding::Nearest, Rounding::CompressedTensors] {
                    seed += 1;
                    let rows = 9;
                    let name = format!("quant::{sname}::{dtype}::{rows}x{cols}::{rounding:?}");
                    let values = near_ties(&spec, dtype, rows, cols, seed);
                    let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values).unwrap();
                    let buf = std::sync::Arc::new(buf);
                    trials.extend(
                        backends.trials(&name, move |fam| check(fam, spec, &buf, rounding)),
                    );
                }
            }
        }
    }
    // Y = X·dequant(Q)ᵀ from packed codes, within MATMUL_RTOL of the
    // reference; rows split over chunks on the small-chunk GPU.
    for (sname, spec) in schemes {
        let widths: Vec<usize> = match spec.group {
            None => vec![1, 7, 33, 129],
            Some(g) => vec![g, 3 * g],
        };
        for cols in widths {
            seed += 1;
            let (name, s) = (format!("dequant_matmul::{sname}::37x{cols}"), seed);
            trials.extend(backends.trials(&name, move |fam| check_dequant(fam, spec, 37, cols, s)));
        }
    }
    // Packed codes back to dense values: byte-identical to the reference,
    // every output dtype.
    for (sname, spec) in schemes {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let widths: Vec<usize> = match spec.group {
                None => vec![1, 7, 33, 129],
                Some(g) => vec![g, 3 * g],
            };
            for cols in widths {
                seed += 1;
                let (name, s) = (
                    format!("dequantize_packed::{sname}::{dtype}::9x{cols}"),
                    seed,
                );
                trials.extend(
                    backends.trials(&name, move |fam| check_dense(fam, spec, dtype, cols, s)),
                );
            }
        }
    }
    // GGUF blocks (a GPU API): byte-identical to ggml's reference
    // functions, values next to rounding boundaries, every input dtype.
    for kind in [GgufType::Q8_0, GgufType::Q4_0] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (rows, cols) in [(1, 32), (7, 64), (13, 160)] {
                seed += 1;
                let (name, s) = (format!("gguf::{kind:?}::{dtype}::{rows}x{cols}"), seed);
                trials.extend(backends.gpu_trials(&name, move |ctx| {
                    check_gguf(ctx, kind, dtype, rows, cols, s)
                }));
            }
        }
    }
    // K-quant super-blocks and Q5 blocks: exact bytes, no CPU fallback.
    for kind in [
        GgufType::Q4_K,
        GgufType::Q5_K,
        GgufType::Q6_K,
        GgufType::Q5_0,
        GgufType::Q5_1,
    ] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (rows, cols) in [(1, 256), (6, 256), (5, 1280)] {
                seed += 1;
                let (name, s) = (format!("gguf::{kind:?}::{dtype}::{rows}x{cols}"), seed);
                trials.extend(backends.gpu_trials(&name, move |ctx| {
                    check_kquant(ctx, kind, dtype, rows, cols, s)
                }));
            }
        }
    }
    // Weighted by an importance matrix: exact bytes on enough rows to meet
    // the searches' near-ties.
    for kind in [
        GgufType::Q4_K,
        GgufType::Q5_K,
        GgufType::Q6_K,
        GgufType::Q4_0,
        GgufType::Q5_0,
        GgufType::Q5_1,
    ] {
        seed += 1;
        let (name, s) = (format!("gguf::{kind:?}::weighted::2048x256"), seed);
        trials.extend(backends.gpu_trials(&name, move |ctx| {
            check_kquant_weighted(ctx, kind, 2048, 256, s)
        }));
    }
    for dtype in [DType::F32, DType::BF16] {
        for (sname, spec) in schemes.into_iter().filter(|(_, s)| !s.symmetric) {
            let name = format!("quant::huge_range::{sname}::{dtype}");
            trials.extend(backends.trials(&name, move |fam| check_huge_range(fam, spec, dtype)));
        }
    }
    // The golden dense weights, every golden scheme, both roundings.
    for dtype in ["bf16", "f32"] {
        trials.extend(backends.trials(
            &format!("quant::golden::{dtype}"),
            move |fam| -> Result<(), Failed> {
                {
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
                                check(fam, spec, &buf, rounding).map_err(|e| {
                                    format!("{}: {}", t.name, e.message().unwrap_or_default())
                                })?;
                            }
                        }
                    }
                    Ok(())
                }
            },
        ));
    }
    // The float schemes: FP8 per channel (both roundings) and per 128×128
    // block (ragged edges), NVFP4 and MXFP4 (ragged last groups too),
    // every dtype, byte for byte.
    let float_schemes = [
        (
            "fp8",
            Float::Fp8(None, Rounding::Nearest),
            vec![(9, 1), (9, 7), (9, 33), (9, 129)],
        ),
        (
            "fp8-ct",
            Float::Fp8(None, Rounding::CompressedTensors),
            vec![(9, 7), (9, 129)],
        ),
        (
            "fp8-block",
            Float::Fp8(Some(128), Rounding::Nearest),
            vec![(1, 5), (130, 300), (257, 128)],
        ),
        (
            "fp8-block-ct",
            Float::Fp8(Some(128), Rounding::CompressedTensors),
            vec![(130, 129)],
        ),
        (
            "nvfp4",
            Float::Nvfp4(17.5),
            vec![(9, 16), (9, 48), (9, 40), (9, 272)],
        ),
        ("nvfp4-gs1", Float::Nvfp4(1.0), vec![(9, 64)]),
        (
            "mxfp4",
            Float::Mxfp4,
            vec![(9, 32), (9, 96), (9, 40), (9, 544)],
        ),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (sname, scheme, shapes) in &float_schemes {
            for &(rows, cols) in shapes {
                seed += 1;
                let name = format!("float::{sname}::{dtype}::{rows}x{cols}");
                let values = float_values(*scheme, rows, cols, seed);
                let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values).unwrap();
                let buf = std::sync::Arc::new(buf);
                let scheme = *scheme;
                trials.extend(backends.trials(&name, move |fam| check_float(fam, scheme, &buf)));
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
