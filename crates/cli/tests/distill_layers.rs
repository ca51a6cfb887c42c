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

use common::{repo_root, run};
use shears_core::reference::quant::unpack_rows;
use shears_core::{Checkpoint, DType, TensorBuf};

/// Issue 5: distillation must lower the held-out relative output error of
/// every pruned layer by at least this fraction.
const MIN_REDUCTION: f64 = 0.30;
/// Issue 5: the error reached when the teacher is representable.
const REPRESENTABLE_ERROR: f64 = 1e-4;
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

fn asset() -> String {
    repo_root().join("assets/tiny-llama").display().to_string()
}

fn calib() -> PathBuf {
    repo_root().join("assets/tiny-llama-calibration.safetensors")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn report(path: &Path) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["layers"].as_array().unwrap().clone()
}

/// ‖X·Aᵀ − X·Bᵀ‖ / ‖X·Aᵀ‖ in f64 over the rows of `x` [n, inn].
fn output_error(x: &[f32], a: &[f32], b: &[f32], out: usize, inn: usize) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for row in x.chunks_exact(inn) {
        for o in 0..out {
            let (mut ya, mut yb) = (0.0f64, 0.0f64);
            for (j, &xj) in row.iter().enumerate() {
                ya += xj as f64 * a[o * inn + j] as f64;
                yb += xj as f64 * b[o * inn + j] as f64;
            }
            num += (ya - yb).powi(2);
            den += ya.powi(2);
        }
    }
    (num / den).sqrt()
}

fn f32s(c: &Checkpoint, name: &str) -> Vec<f32> {
    c.view(c.get(name).unwrap_or_else(|| panic!("{name} missing")))
        .to_f32()
        .unwrap()
}

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

/// A one-layer checkpoint file.
fn one_layer(path: &Path, name: &str, shape: [usize; 2], values: &[f32]) {
    let t = TensorBuf::from_f32(DType::F32, shape.to_vec(), values).unwrap();
    shears_core::checkpoint::write_file(path, &[(name.to_string(), t)], true, &[]).unwrap();
}

/// A seeded 8x16 teacher with half its weights zero, and a student with
/// the same zeros and other values.
fn representable(dir: &Path) -> (PathBuf, PathBuf) {
    let (out, inn) = (8, 16);
    let mut x = 0x2545_f491_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 2001) as f32 / 1000.0 - 1.0
    };
    let mut teacher = vec![0.0f32; out * inn];
    let mut student = vec![0.0f32; out * inn];
    for i in 0..out * inn {
        if (i * 7 + i / 5) % 2 == 1 {
            teacher[i] = next() + 0.01f32.copysign(next());
            student[i] = next();
        }
    }
    let (t, s) = (dir.join("t.safetensors"), dir.join("s.safetensors"));
    one_layer(&t, "fc.weight", [out, inn], &teacher);
    one_layer(&s, "fc.weight", [out, inn], &student);
    (t, s)
}

#[test]
fn representable_teacher_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (t, st) = representable(dir.path());
    let out = dir.path().join("out");
    let rep = dir.path().join("r.json");
    ok(&[
        "distill",
        "layers",
        "--teacher",
        s(&t),
        "--student",
        s(&st),
        "-o",
        s(&out),
        "--probe-rows",
        "320",
        "--held-out-fraction",
        "0.2",
        "--epochs",
        "150",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--report",
        s(&rep),
    ]);
    let rows = report(&rep);
    let after = rows[0]["error_after"].as_f64().unwrap();
    assert!(rows[0]["error_before"].as_f64().unwrap() > 0.5);
    assert!(after < REPRESENTABLE_ERROR, "error after {after}");
    let w = f32s(&Checkpoint::open(&out).unwrap(), "fc.weight");
    let tw = f32s(&Checkpoint::open(&t).unwrap(), "fc.weight");
    for (i, (&a, &b)) in w.iter().zip(&tw).enumerate() {
        assert_eq!(a == 0.0, b == 0.0, "fc.weight[{i}]: {a} vs teacher {b}");
    }
}

/// Runs a command that must fail with exit code 2, print one error line
/// containing every `must`, and write nothing.
fn refused(args: &[&str], out: &Path, must: &[&str]) {
    let res = run(args);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for m in must {
        assert!(lines[0].contains(m), "{args:?}: missing '{m}' in {err}");
    }
    assert!(!out.exists(), "{} was written", out.display());
}

#[test]
fn bad_inputs_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (t, st) = representable(dir.path());
    let out = dir.path().join("out");
    let o = s(&out);
    let base = |student: &Path| -> Vec<String> {
        [
            "distill",
            "layers",
            "--teacher",
            s(&t),
            "--student",
            s(student),
            "-o",
            o,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let call = |v: &[String], extra: &[&str], must: &[&str]| {
        let mut a: Vec<&str> = v.iter().map(String::as_str).collect();
        a.extend(extra);
        refused(&a, &out, must);
    };
    // A student with another tensor name, and one with another shape.
    let renamed = dir.path().join("renamed.safetensors");
    one_layer(&renamed, "fc2.weight", [8, 16], &vec![1.0; 128]);
    call(
        &base(&renamed),
        &[],
        &["renamed.safetensors", "fc2.weight", "not in the teacher"],
    );
    let reshaped = dir.path().join("reshaped.safetensors");
    one_layer(&reshaped, "fc.weight", [8, 15], &vec![1.0; 120]);
    call(
        &base(&reshaped),
        &[],
        &["reshaped.safetensors", "fc.weight", "[8, 15]", "[8, 16]"],
    );
    // Calibration inputs of the wrong width, and none for the layer.
    let cal = dir.path().join("cal.safetensors");
    one_layer(&cal, "fc.weight.inputs", [10, 15], &vec![1.0; 150]);
    call(
        &base(&st),
        &["--calibration", s(&cal)],
        &["cal.safetensors", "fc.weight.inputs", "[10, 15]"],
    );
    let other = dir.path().join("other.safetensors");
    one_layer(&other, "fc9.weight.inputs", [10, 16], &vec![1.0; 160]);
    call(
        &base(&st),
        &["--calibration", s(&other)],
        &["other.safetensors", "fc.weight.inputs", "missing"],
    );
    // A student equal to the teacher has nothing to distill.
    call(&base(&t), &[], &["no compressed linear layer"]);
    call(
        &base(&st),
        &["--held-out-fraction", "1"],
        &["--held-out-fraction"],
    );
}

/// The calibration example is what its documented command makes.
#[test]
fn calibration_asset_matches_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.safetensors");
    ok(&["calibration", &asset(), "-o", s(&f), "--rows", "256"]);
    assert!(
        std::fs::read(&f).unwrap() == std::fs::read(calib()).unwrap(),
        "assets/tiny-llama-calibration.safetensors differs from a fresh one"
    );
}
