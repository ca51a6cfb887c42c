//! Float formats through the CLI: `quantize --scheme fp8|fp8-block|nvfp4a16|mxfp4a16` reproduces what
//! llm-compressor wrote for the golden dense checkpoints (every tensor and
//! the quantization_config), `decompress` reads theirs back within half an
//! E4M3 step (plus the library's bf16 rounding of the quotient), FP4 within
//! half an E2M1 step, and ours
//! (`--rounding nearest`) within half a step, `compress` keeps pruned zeros
//! exactly zero, and bad requests are refused with one line.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use shears_core::reference::fp8::e4m3_value;
use shears_core::{Checkpoint, DType};

fn golden(dir: &str) -> PathBuf {
    repo_root().join("tests/golden").join(dir)
}

fn config(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["quantization_config"].clone()
}

#[test]
fn quantize_reproduces_the_golden_float_folders() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["bf16", "f32"] {
        for scheme in ["fp8", "fp8-block", "nvfp4a16", "mxfp4a16"] {
            let out = dir.path().join(format!("{dtype}-{scheme}"));
            ok(&run(&[
                "-q",
                "quantize",
                s(&golden(&format!("{dtype}/dense"))),
                "-o",
                s(&out),
                "--scheme",
                scheme,
                "--rounding",
                "compressed-tensors",
                "--verify",
                "--backend",
                "cpu",
            ]));
            let want_dir = golden(&format!("{dtype}/{scheme}"));
            let (ours, theirs) = (
                Checkpoint::open(&out).unwrap(),
                Checkpoint::open(&want_dir).unwrap(),
            );
            assert_eq!(ours.tensors.len(), theirs.tensors.len(), "{dtype}/{scheme}");
            for t in &theirs.tensors {
                let o = ours
                    .get(&t.name)
                    .unwrap_or_else(|| panic!("{} missing", t.name));
                assert_eq!(
                    (o.dtype, &o.shape),
                    (t.dtype, &t.shape),
                    "{dtype}/{scheme} {}",
                    t.name
                );
                assert!(
                    ours.view(o).bytes() == theirs.view(t).bytes(),
                    "{dtype}/{scheme} {}: bytes differ",
                    t.name
                );
            }
            assert_eq!(
                config(&out),
                config(&want_dir),
                "{dtype}/{scheme} quantization_config"
            );
        }
    }
}

/// Half an E4M3 step at |v| (in units of the scale), the subnormal
/// spacing below 2⁻⁶.
fn half_step(v: f32) -> f32 {
    let e = if v == 0.0 {
        -6
    } else {
        v.abs().log2().floor() as i32
    }
    .max(-6);
    f32::powi(2.0, e - 4)
}

#[test]
fn decompress_reads_fp8_back_within_half_a_step() {
    let dir = tempfile::tempdir().unwrap();
    for scheme in ["fp8", "fp8-block"] {
        let src = golden(&format!("bf16/{scheme}"));
        let out = dir.path().join(scheme);
        ok(&run(&[
            "-q",
            "decompress",
            s(&src),
            "-o",
            s(&out),
            "--backend",
            "cpu",
        ]));
        let dense = Checkpoint::open(golden("bf16/dense")).unwrap();
        let deq = Checkpoint::open(&out).unwrap();
        let q = Checkpoint::open(&src).unwrap();
        let mut checked = 0;
        for t in &q.tensors {
            let Some(prefix) = t.name.strip_suffix(".weight_scale") else {
                continue;
            };
            let name = format!("{prefix}.weight");
            let x = dense.view(dense.get(&name).unwrap()).to_f32().unwrap();
            let y = deq.view(deq.get(&name).unwrap()).to_f32().unwrap();
            let codes = q.view(q.get(&name).unwrap()).bytes().to_vec();
            let scales = q.view(t).to_f32().unwrap();
            let cols = dense.get(&name).unwrap().shape[1];
            for (i, ((&a, &b), &c)) in x.iter().zip(&y).zip(&codes).enumerate() {
                let (r, k) = (i / cols, i % cols);
                let s = match scheme {
                    "fp8" => scales[r],
                    _ => scales[(r / 128) * cols.div_ceil(128) + k / 128],
                };
                // The library divides in bf16 first: the quotient may move
                // by half a bf16 step (2⁻⁸ relative) before rounding to E4M3;
                // the dense output is bf16 again (another 2⁻⁸ of it).
                let slack = (a / s).abs() * f32::powi(2.0, -8);
                let tol = (half_step(e4m3_value(c)) + slack) * s + b.abs() * f32::powi(2.0, -8);
                assert!(
                    (a - b).abs() <= tol,
                    "{scheme} {name}[{i}]: {a} vs {b} (scale {s})"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 7);
        assert_eq!(
            deq.get("model.layers.0.mlp.down_proj.weight")
                .unwrap()
                .dtype,
            DType::BF16
        );
    }
}

/// shears' default rounding (the f32 quotient) stays within half a step of
/// every weight, dequantized in f32.
#[test]
fn nearest_fp8_is_within_half_a_step() {
    use shears_core::fast::float::quantize_fp8;
    use shears_core::reference::quant::Rounding;
    let dense = Checkpoint::open(golden("bf16/dense")).unwrap();
    for t in dense.tensors.iter().filter(|t| t.name.contains("proj")) {
        let x = dense.view(t).to_f32().unwrap();
        let (rows, cols) = (t.shape[0], t.shape[1]);
        for block in [None, Some(128)] {
            let q = quantize_fp8(&x, rows, cols, block, t.dtype, Rounding::Nearest);
            for (i, (&a, b)) in x.iter().zip(q.dequantized()).enumerate() {
                let s = q.scale_of(i / cols, i % cols);
                let tol = half_step(e4m3_value(q.codes[i])) * s * (1.0 + 1e-6);
                assert!((a - b).abs() <= tol, "{}[{i}]: {a} vs {b}", t.name);
            }
        }
    }
}

/// FP4 checkpoints (llm-compressor's) decompress to bf16 within half an
/// E2M1 step of the dense weights (the step is 0.5, 1 or 2 times the
/// group's scale), plus the bf16 rounding of the output.
#[test]
fn decompress_reads_fp4_back_within_half_a_step() {
    use shears_core::reference::fp4::{e2m1_value, mx_scale_value};
    let dir = tempfile::tempdir().unwrap();
    for (scheme, group) in [("nvfp4a16", 16), ("mxfp4a16", 32)] {
        let src = golden(&format!("bf16/{scheme}"));
        let out = dir.path().join(scheme);
        ok(&run(&[
            "-q",
            "decompress",
            s(&src),
            "-o",
            s(&out),
            "--backend",
            "cpu",
        ]));
        let dense = Checkpoint::open(golden("bf16/dense")).unwrap();
        let deq = Checkpoint::open(&out).unwrap();
        let q = Checkpoint::open(&src).unwrap();
        for t in q
            .tensors
            .iter()
            .filter(|t| t.name.ends_with(".weight_scale"))
        {
            let prefix = t.name.strip_suffix(".weight_scale").unwrap();
            let name = format!("{prefix}.weight");
            let info = dense.get(&name).unwrap();
            let cols = info.shape[1];
            let x = dense.view(info).to_f32().unwrap();
            let y = deq.view(deq.get(&name).unwrap()).to_f32().unwrap();
            assert_eq!(deq.get(&name).unwrap().dtype, DType::BF16);
            let packed = q
                .view(q.get(&format!("{prefix}.weight_packed")).unwrap())
                .bytes()
                .to_vec();
            let scales = q.view(t).bytes().to_vec();
            let gs = q
                .get(&format!("{prefix}.weight_global_scale"))
                .map(|g| f32::from_le_bytes(q.view(g).bytes().try_into().unwrap()));
            for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
                let code = (packed[i / 2] >> (4 * (i % 2))) & 0xf;
                let sb = scales[(i / cols) * (cols / group) + (i % cols) / group];
                let scale = match gs {
                    Some(g) => e4m3_value(sb) / g,
                    None => mx_scale_value(sb),
                };
                let v = e2m1_value(code).abs();
                let half = if v < 2.0 {
                    0.25
                } else if v < 4.0 {
                    0.5
                } else {
                    1.0
                };
                let tol = half * scale * 1.0001 + b.abs() * f32::powi(2.0, -8);
                assert!((a - b).abs() <= tol, "{scheme} {name}[{i}]: {a} vs {b}");
            }
        }
    }
}

#[test]
fn compress_keeps_pruned_zeros_under_fp8_and_nvfp4() {
    let dir = tempfile::tempdir().unwrap();
    for scheme in ["fp8", "nvfp4a16"] {
        let out = dir.path().join(scheme);
        ok(&run(&[
            "-q",
            "compress",
            s(&golden("bf16/dense")),
            "-o",
            s(&out),
            "--pattern",
            "2:4",
            "--scheme",
            scheme,
            "--backend",
            "cpu",
            "--verify",
        ]));
        let c = Checkpoint::open(&out).unwrap();
        // FP8: a byte per code, ±0 is 0x00 / 0x80; NVFP4: a nibble per
        // code, ±0 is 0x0 / 0x8.
        let codes: Vec<u8> = if scheme == "fp8" {
            let w = c.get("model.layers.0.mlp.up_proj.weight").unwrap();
            c.view(w).bytes().iter().map(|b| b & 0x7f).collect()
        } else {
            let w = c.get("model.layers.0.mlp.up_proj.weight_packed").unwrap();
            let b = c.view(w).bytes();
            b.iter().flat_map(|b| [b & 7, (b >> 4) & 7]).collect()
        };
        assert!(codes.len() > 1000, "{scheme}");
        for g in codes.chunks(4) {
            let zeros = g.iter().filter(|&&b| b == 0).count();
            assert!(
                zeros >= 2,
                "{scheme}: a 2:4 group with {zeros} zero codes: {g:?}"
            );
        }
        assert!(config(&out)["sparsity_config"].is_object(), "{scheme}");
    }
}

#[test]
fn fp8_refusals_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let dense = golden("bf16/dense");
    refused(
        &run(&[
            "quantize",
            s(&dense),
            "-o",
            s(&out),
            "--scheme",
            "fp8",
            "--group-size",
            "64",
        ]),
        &["--group-size", "fp8"],
    );
    refused(
        &run(&["quantize", s(&dense), "-o", s(&out), "--scheme", "fp9"]),
        &["fp9"],
    );
    // A width the group does not divide: named before any work.
    let m = one_layer(dir.path(), "m", 4, 40, &[0.5; 160]);
    refused(
        &run(&["quantize", s(&m), "-o", s(&out), "--scheme", "mxfp4a16"]),
        &["l.weight", "mxfp4a16", "40", "32"],
    );
    assert!(!out.exists());
}

/// --validate measures every float layer's output error (small, nonzero),
/// and --verify finds the fast path equal to the reference, for all four.
#[test]
fn validate_and_verify_cover_every_float_scheme() {
    let dir = tempfile::tempdir().unwrap();
    for scheme in ["fp8", "fp8-block", "nvfp4a16", "mxfp4a16"] {
        let out = dir.path().join(scheme);
        let o = run(&[
            "quantize",
            s(&golden("bf16/dense")),
            "-o",
            s(&out),
            "--scheme",
            scheme,
            "--validate",
            "--verify",
            "--json",
            "--backend",
            "cpu",
        ]);
        ok(&o);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = report["tensors"].as_array().unwrap();
        assert_eq!(rows.len(), 7, "{scheme}");
        for r in rows {
            let e = r["output_error"].as_f64().unwrap();
            assert!(
                e > 0.0 && e < 0.5,
                "{scheme} {}: output error {e}",
                r["name"]
            );
            assert_eq!(r["verify_mismatches"], 0, "{scheme} {}", r["name"]);
        }
    }
}

/// The report's relative error of each float layer (computed row by row
/// from the codes, with no dense copy) equals ‖x − x̂‖/‖x‖ measured on the
/// `decompress`ed output.
#[test]
fn reported_error_matches_the_decompressed_weights() {
    let dir = tempfile::tempdir().unwrap();
    let dense = golden("bf16/dense");
    for scheme in ["fp8", "fp8-block", "nvfp4a16", "mxfp4a16"] {
        let (out, back) = (dir.path().join(scheme), dir.path().join("back"));
        let o = run(&[
            "quantize",
            s(&dense),
            "-o",
            s(&out),
            "--scheme",
            scheme,
            "--json",
            "--backend",
            "cpu",
        ]);
        ok(&o);
        let _ = std::fs::remove_dir_all(&back);
        ok(&run(&["-q", "decompress", s(&out), "-o", s(&back)]));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let (a, b) = (
            Checkpoint::open(&dense).unwrap(),
            Checkpoint::open(&back).unwrap(),
        );
        for r in report["tensors"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let x = a.view(a.get(name).unwrap()).to_f32().unwrap();
            let y = b.view(b.get(name).unwrap()).to_f32().unwrap();
            let (mut e2, mut x2) = (0.0f64, 0.0f64);
            for (&u, &v) in x.iter().zip(&y) {
                e2 += ((u - v) as f64).powi(2);
                x2 += (u as f64).powi(2);
            }
            let want = (e2 / x2).sqrt();
            let got = r["relative_error"].as_f64().unwrap();
            // The decompressed values are rounded to bf16 again: a small
            // difference from the f32 dequantization the report measures.
            assert!(
                got > 0.0 && (got - want).abs() <= 0.02 * want,
                "{scheme} {name}: reported {got}, measured {want}"
            );
        }
    }
}
