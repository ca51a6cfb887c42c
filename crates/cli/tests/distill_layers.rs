//! `shears distill layers` end to end (CPU backend): layer-wise
//! distillation of the assets checkpoint pruned 50% per row by magnitude,
//! as a dense student and as an int4 compressed-tensors student, on the
//! calibration example; a synthetic layer whose teacher is representable
//! under the student's mask; and bad inputs.
//!
//! The figures are recomputed here from the written files (held-out rows
//! of the calibration file, the layers as stored), not taken from the
//! report.

mod common;

use std::path::{Path, PathBuf};

use common::distill::*;
use shears_core::reference::quant::unpack_rows;
use shears_core::Checkpoint;

/// Issue 5: distillation must lower the held-out relative output error of
/// every pruned layer by at least this fraction.
const MIN_REDUCTION: f64 = 0.30;
/// The report's f32 errors against this file's f64 recomputation.
const REPORT_RTOL: f64 = 1e-3;
/// Held-out rows of a 256-row calibration layer at the default fraction.
const HELD_ROWS: usize = 64;

/// Short training on two layers (layer 0's k_proj and v_proj, 128x256
/// each, on different inputs) so that debug builds take seconds; the
/// other twelve are excluded and must come out byte for byte. README has
/// the default run on all fourteen.
const FAST: [&str; 16] = [
    "--epochs",
    "4",
    "--batch-size",
    "32",
    "--lr",
    "1e-2",
    "--exclude",
    "*q_proj*",
    "--exclude",
    "*o_proj*",
    "--exclude",
    "*.mlp.*",
    "--exclude",
    "model.layers.1.*",
    "--seed",
    "0",
];
/// How many layers [`FAST`] distills.
const FAST_LAYERS: usize = 2;

/// The held-out calibration rows of `weight` (the last ones).
fn held_out(cal: &Checkpoint, weight: &str, inn: usize) -> Vec<f32> {
    let x = f32s(cal, &format!("{weight}.inputs"));
    x[x.len() - HELD_ROWS * inn..].to_vec()
}

/// The assets checkpoint pruned as issue 5 says.
fn pruned(dir: &Path) -> PathBuf {
    let p = dir.join("pruned");
    ok(&[
        "prune",
        &asset(),
        "-o",
        s(&p),
        "--sparsity",
        "0.5",
        "--scope",
        "row",
        "--method",
        "magnitude",
        "-q",
    ]);
    p
}

/// Checks one layer's figures: the report's before / after against the
/// recomputation, and the reduction.
fn check_reduction(row: &serde_json::Value, before: f64, after: f64) {
    let name = row["name"].as_str().unwrap();
    for (what, reported, mine) in [
        ("before", row["error_before"].as_f64().unwrap(), before),
        ("after", row["error_after"].as_f64().unwrap(), after),
    ] {
        assert!(
            (reported - mine).abs() <= REPORT_RTOL * mine,
            "{name}: reported error {what} {reported}, recomputed {mine}, rtol {REPORT_RTOL}"
        );
    }
    assert!(
        after <= (1.0 - MIN_REDUCTION) * before,
        "{name}: held-out error {before} -> {after}, less than {}% lower",
        100.0 * MIN_REDUCTION
    );
}

#[test]
fn pruned_dense_student_improves_with_its_zeros_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = pruned(dir.path());
    let out = dir.path().join("distilled");
    let rep = dir.path().join("r.json");
    let (teacher_dir, cal_file) = (asset(), calib());
    let mut args = vec![
        "distill",
        "layers",
        "--teacher",
        &teacher_dir,
        "--student",
        s(&p),
        "--calibration",
        s(&cal_file),
        "-o",
        s(&out),
        "--report",
        s(&rep),
    ];
    args.extend(FAST);
    let text = ok(&args);
    assert!(text.contains("reduction"), "{text}");

    let (teacher, student, written) = (
        Checkpoint::open(asset()).unwrap(),
        Checkpoint::open(&p).unwrap(),
        Checkpoint::open(&out).unwrap(),
    );
    let cal = Checkpoint::open(calib()).unwrap();
    let rows = report(&rep);
    assert_eq!(rows.len(), FAST_LAYERS);
    assert_eq!(written.shards.len(), student.shards.len());
    for t in &student.tensors {
        let w = written.get(&t.name).unwrap();
        assert_eq!((w.dtype, &w.shape), (t.dtype, &t.shape), "{}", t.name);
        let Some(row) = rows.iter().find(|r| r["name"] == t.name.as_str()) else {
            assert_eq!(
                written.view(w).bytes(),
                student.view(t).bytes(),
                "{} is not distilled but changed",
                t.name
            );
            continue;
        };
        let (a, b) = (f32s(&student, &t.name), f32s(&written, &t.name));
        for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x == 0.0, y == 0.0, "{}[{i}]: {x} became {y}", t.name);
        }
        assert_ne!(a, b, "{} unchanged", t.name);
        let (outf, inn) = (t.shape[0], t.shape[1]);
        let x = held_out(&cal, &t.name, inn);
        let tw = f32s(&teacher, &t.name);
        check_reduction(
            row,
            output_error(&x, &tw, &a, outf, inn),
            output_error(&x, &tw, &b, outf, inn),
        );
    }
    assert_eq!(
        std::fs::read(p.join("config.json")).unwrap(),
        std::fs::read(out.join("config.json")).unwrap()
    );
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// int4 codes of a layer, row-major.
fn codes(c: &Checkpoint, prefix: &str, out: usize, inn: usize) -> Vec<i8> {
    let t = c.get(&format!("{prefix}.weight_packed")).unwrap();
    unpack_rows(&i32s(c.view(t).bytes()), out, inn, 4)
}

#[test]
fn quantized_student_stays_on_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let p = pruned(dir.path());
    let q = dir.path().join("w4");
    ok(&["quantize", s(&p), "-o", s(&q), "--scheme", "w4a16", "-q"]);
    let out = dir.path().join("distilled");
    let rep = dir.path().join("r.json");
    let (teacher_dir, cal_file) = (asset(), calib());
    let mut args = vec![
        "distill",
        "layers",
        "--teacher",
        &teacher_dir,
        "--student",
        s(&q),
        "--calibration",
        s(&cal_file),
        "-o",
        s(&out),
        "--report",
        s(&rep),
    ];
    args.extend(FAST);
    ok(&args);

    let (teacher, student, written) = (
        Checkpoint::open(asset()).unwrap(),
        Checkpoint::open(&q).unwrap(),
        Checkpoint::open(&out).unwrap(),
    );
    let cal = Checkpoint::open(calib()).unwrap();
    assert_eq!(
        std::fs::read(q.join("config.json")).unwrap(),
        std::fs::read(out.join("config.json")).unwrap()
    );
    let rows = report(&rep);
    assert_eq!(rows.len(), FAST_LAYERS);
    for t in &student.tensors {
        let w = written.get(&t.name).unwrap();
        assert_eq!((w.dtype, &w.shape), (t.dtype, &t.shape), "{}", t.name);
        let Some(prefix) = t.name.strip_suffix(".weight_packed") else {
            // Scales, shapes and every other tensor: byte for byte.
            assert_eq!(
                written.view(w).bytes(),
                student.view(t).bytes(),
                "{} changed",
                t.name
            );
            continue;
        };
        let name = format!("{prefix}.weight");
        let Some(row) = rows.iter().find(|r| r["name"] == name.as_str()) else {
            assert_eq!(
                written.view(w).bytes(),
                student.view(t).bytes(),
                "{name} is not distilled but changed"
            );
            continue;
        };
        let tw = f32s(&teacher, &name);
        let shape = &teacher.get(&name).unwrap().shape;
        let (outf, inn) = (shape[0], shape[1]);
        let scales = f32s(&student, &format!("{prefix}.weight_scale"));
        let group = inn / (scales.len() / outf);
        let decode = |c: &[i8]| -> Vec<f32> {
            c.iter()
                .enumerate()
                .map(|(i, &q)| q as f32 * scales[(i / inn) * (inn / group) + (i % inn) / group])
                .collect()
        };
        let (c0, c1) = (
            codes(&student, prefix, outf, inn),
            codes(&written, prefix, outf, inn),
        );
        for (i, (&a, &b)) in c0.iter().zip(&c1).enumerate() {
            assert!((-8..=7).contains(&b), "{name}[{i}]: code {b}");
            if a == 0 {
                assert_eq!(b, 0, "{name}[{i}]: a zero became code {b}");
            }
        }
        assert_ne!(c0, c1, "{name}: no code changed");
        let x = held_out(&cal, &name, inn);
        check_reduction(
            row,
            output_error(&x, &tw, &decode(&c0), outf, inn),
            output_error(&x, &tw, &decode(&c1), outf, inn),
        );
    }
}

/// Issue 17: a quantized student that was never pruned has no frozen
/// weights (a code equal to the zero point is not a pruned weight); a
/// pruned one keeps its zeros because its config says it was pruned.
#[test]
fn only_pruned_weights_are_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("w4");
    ok(&["quantize", &asset(), "-o", s(&q), "--scheme", "w4a16", "-q"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(q.join("config.json")).unwrap()).unwrap();
    let sc = &config["quantization_config"]["sparsity_config"];
    assert!(
        sc.as_object().is_none_or(|o| o.is_empty()),
        "a dense input is not sparse: {sc}"
    );
    let rep = dir.path().join("r.json");
    let out = dir.path().join("d");
    let (cal, teacher) = (calib(), asset());
    let mut args = vec![
        "distill",
        "layers",
        "--teacher",
        &teacher,
        "--student",
        s(&q),
        "--calibration",
        s(&cal),
        "-o",
        s(&out),
        "--report",
        s(&rep),
    ];
    args.extend(FAST);
    ok(&args);
    for row in report(&rep) {
        assert_eq!(
            row["density"], 1.0,
            "{}: weights frozen in an unpruned student",
            row["name"]
        );
    }
    // Pruned, then quantized by `quantize`: the config records the zeros.
    let p = pruned(dir.path());
    let pq = dir.path().join("pw4");
    ok(&["quantize", s(&p), "-o", s(&pq), "--scheme", "w4a16", "-q"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pq.join("config.json")).unwrap()).unwrap();
    let sc = &config["quantization_config"]["sparsity_config"];
    let global = sc["global_sparsity"].as_f64().expect("a sparsity_config");
    assert!(global > 0.3, "global sparsity {global}");
}
