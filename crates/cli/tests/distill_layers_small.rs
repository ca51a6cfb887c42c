//! `shears distill layers` on one-layer checkpoints: a teacher the masked
//! student can represent is recovered; bad inputs are refused with one
//! line and nothing written; the calibration asset matches its command.

use std::path::{Path, PathBuf};

mod common;

use common::distill::*;
use common::run;
use shears_core::{Checkpoint, DType, TensorBuf};

/// Issue 5: the error reached when the teacher is representable.
const REPRESENTABLE_ERROR: f64 = 1e-4;

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
    ok(&[
        "generate",
        s(&f),
        "--calibration-for",
        &asset(),
        "--rows",
        "256",
    ]);
    assert!(
        std::fs::read(&f).unwrap() == std::fs::read(calib()).unwrap(),
        "assets/tiny-llama-calibration.safetensors differs from a fresh one"
    );
    // The old command still makes the same file, saying where it moved.
    let old = dir.path().join("old.safetensors");
    let o = common::run(&["calibration", &asset(), "-o", s(&old), "--rows", "256"]);
    assert!(common::stderr(&o).contains("--calibration-for"));
    assert_eq!(std::fs::read(&old).unwrap(), std::fs::read(&f).unwrap());
}

/// A synthetic file says so in its metadata, and using it to prune warns
/// (it would ruin a real model) while a real one does not.
#[test]
fn synthetic_calibration_is_marked_and_warned_about() {
    let ckpt = shears_core::Checkpoint::open(calib()).unwrap();
    assert_eq!(ckpt.shards[0].metadata["shears.calibration"], "synthetic");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    let o = common::run(&[
        "prune",
        &asset(),
        "-o",
        s(&out),
        "--method",
        "wanda",
        "--calibration",
        s(&calib()),
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let e = common::stderr(&o);
    assert!(
        e.contains("synthetic activations") && e.contains("shears calibrate"),
        "{e}"
    );
}
