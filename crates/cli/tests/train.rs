//! `shears train`, `evaluate` and `distill model` end to end on generated
//! CSV data and the shipped digits teacher, and their bad-input errors.

mod common;

use std::path::{Path, PathBuf};

use common::{repo_root, run};

/// Generated data: 3 classes, 4 features, centres 3 apart with noise of
/// ±0.75 — separable, so a small MLP reaches this quickly.
const BLOB_ACCURACY: f64 = 0.95;
/// The bar issue 5 sets for the digits teacher.
const TEACHER_ACCURACY: f64 = 0.97;

fn blobs_csv(rows: usize) -> String {
    let mut state = 12345u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 1.5
    };
    let mut out = String::new();
    for i in 0..rows {
        let c = i % 3;
        let fields: Vec<String> = (0..4)
            .map(|j| {
                let centre = if j == c { 3.0 } else { 0.0 };
                format!("{:.4}", centre + noise())
            })
            .collect();
        out += &format!("{},{c}\n", fields.join(","));
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
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

/// Runs a command that must fail with exit code 2 and one stderr line
/// containing `want`, and returns that line.
fn bad(args: &[&str], want: &str) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.contains(want), "{args:?}: '{err}' lacks '{want}'");
    err
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn digits() -> String {
    repo_root()
        .join("assets/digits.csv.gz")
        .display()
        .to_string()
}

fn teacher() -> String {
    repo_root()
        .join("assets/digits-teacher.safetensors")
        .display()
        .to_string()
}

/// Trains a 4-8-3 model on 150 blob rows into `dir`.
fn train_blobs(dir: &Path) -> (String, PathBuf) {
    let data = write(dir, "blobs.csv", &blobs_csv(150));
    let model = dir.join("blobs.safetensors");
    let (log, report) = (dir.join("loss.csv"), dir.join("train.json"));
    let stdout = ok(&[
        "train",
        "--backend",
        "cpu",
        "--data",
        &data,
        "--hidden",
        "8",
        "--epochs",
        "30",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "-o",
        model.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(stdout.contains("4-8-3"), "{stdout}");
    let r = json(&report);
    let acc = r["test_accuracy"].as_f64().unwrap();
    assert!(acc >= BLOB_ACCURACY, "test accuracy {acc}");
    assert_eq!(
        r["train_rows"].as_u64().unwrap() + r["test_rows"].as_u64().unwrap(),
        150
    );
    let losses = r["epoch_losses"].as_array().unwrap();
    assert_eq!(losses.len(), 30);
    assert!(losses[29].as_f64().unwrap() < losses[0].as_f64().unwrap());
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.lines().count(), 31, "{log}");
    assert!(log.starts_with("epoch,loss\n1,"));
    (data, model)
}

#[test]
fn train_then_evaluate_then_distill() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = train_blobs(dir.path());
    let model = model.to_str().unwrap();

    let report = dir.path().join("eval.json");
    let stdout = ok(&[
        "evaluate",
        "--backend",
        "cpu",
        "--model",
        model,
        "--data",
        &data,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(stdout.starts_with("accuracy "), "{stdout}");
    assert!(stdout.contains("on the test split"), "{stdout}");
    assert!(stdout.contains("actual\\pred"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with('%')).count(),
        3,
        "{stdout}"
    );
    let r = json(&report);
    let total: u64 = r["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(total, r["rows"].as_u64().unwrap());
    assert_eq!(r["rows"].as_u64().unwrap(), 39); // round(50 · 0.25) = 13 per class
    assert!(r["accuracy"].as_f64().unwrap() >= BLOB_ACCURACY);

    let student = dir.path().join("student.safetensors");
    let report = dir.path().join("distill.json");
    ok(&[
        "distill",
        "model",
        "--backend",
        "cpu",
        "--teacher",
        model,
        "--data",
        &data,
        "--hidden",
        "4",
        "--epochs",
        "30",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "-o",
        student.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let r = json(&report);
    assert_eq!(r["command"], "distill model");
    assert_eq!(r["sizes"], serde_json::json!([4, 4, 3]));
    assert!(r["test_accuracy"].as_f64().unwrap() >= BLOB_ACCURACY, "{r}");
    assert!(r["teacher_test_accuracy"].as_f64().unwrap() >= BLOB_ACCURACY);
}

#[test]
fn shipped_digits_teacher_reaches_its_accuracy() {
    let stdout = ok(&[
        "evaluate",
        "--backend",
        "cpu",
        "--model",
        &teacher(),
        "--data",
        &digits(),
    ]);
    let pct: f64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {stdout}"));
    assert!(pct / 100.0 >= TEACHER_ACCURACY, "{stdout}");
    assert!(stdout.contains("(seed 0, test fraction 0.25)"), "{stdout}");
}

#[test]
fn bad_csv_names_the_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let o = out.to_str().unwrap();
    let ragged = write(dir.path(), "ragged.csv", "1,2,3,4,0\n1,2,3,4,1\n1,2,0\n");
    bad(
        &["train", "--data", &ragged, "--hidden", "4", "-o", o],
        "ragged.csv: line 3 has 3 fields, line 1 has 5",
    );
    let cell = write(dir.path(), "cell.csv", "1,2,0\n1,abc,1\n");
    bad(
        &["train", "--data", &cell, "--hidden", "4", "-o", o],
        "cell.csv: line 2, column 2: 'abc' is not a finite number",
    );
    let label = write(dir.path(), "label.csv", "1,2,0\n1,2,-1\n");
    bad(
        &["train", "--data", &label, "--hidden", "4", "-o", o],
        "line 2, column 3: label '-1' is not a non-negative integer",
    );
    let empty = write(dir.path(), "empty.csv", "");
    bad(
        &["train", "--data", &empty, "--hidden", "4", "-o", o],
        "empty.csv: no data rows",
    );
    bad(
        &["evaluate", "--model", &teacher(), "--data", &ragged],
        "line 3 has 3 fields",
    );
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}

#[test]
fn shapes_that_do_not_match_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "blobs.csv", &blobs_csv(30));
    let out = dir.path().join("s.safetensors");
    let o = out.to_str().unwrap();
    // A teacher for 64 inputs on 4-feature data.
    bad(
        &[
            "distill",
            "model",
            "--teacher",
            &teacher(),
            "--data",
            &data,
            "--hidden",
            "4",
            "-o",
            o,
        ],
        "the teacher takes 64 inputs but",
    );
    bad(
        &["evaluate", "--model", &teacher(), "--data", &data],
        "the model takes 64 inputs but",
    );
    // 64 features as the teacher wants, but labels 0..2 only: 3 classes
    // against the teacher's 10.
    let rows: String = (0..9)
        .map(|i| format!("{}{}\n", "1,".repeat(64), i % 3))
        .collect();
    let three = write(dir.path(), "three.csv", &rows);
    bad(
        &[
            "distill",
            "model",
            "--teacher",
            &teacher(),
            "--data",
            &three,
            "--hidden",
            "4",
            "-o",
            o,
        ],
        "the teacher has 10 classes but",
    );
    // A student (--init) whose layers do not fit the teacher's data.
    let small = dir.path().join("small.safetensors");
    ok(&[
        "train",
        "--data",
        &data,
        "--hidden",
        "3",
        "--epochs",
        "1",
        "-o",
        small.to_str().unwrap(),
    ]);
    bad(
        &[
            "distill",
            "model",
            "--teacher",
            &teacher(),
            "--data",
            &digits(),
            "--init",
            small.to_str().unwrap(),
            "-o",
            o,
        ],
        "small.safetensors: takes 4 inputs and has 3 classes, but 64 and 10 are needed",
    );
    // A broken model file: its second layer does not take the first's outputs.
    bad(
        &["evaluate", "--model", &broken(dir.path()), "--data", &data],
        "takes 5 inputs but layers.0.weight has 8 outputs",
    );
    assert!(!out.exists());
}

#[test]
fn flags_are_checked_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "blobs.csv", &blobs_csv(30));
    let exists = write(dir.path(), "exists.safetensors", "x");
    bad(
        &["train", "--data", &data, "--hidden", "4", "-o", &exists],
        "exists (use --force",
    );
    let o = dir.path().join("m.safetensors");
    let o = o.to_str().unwrap();
    bad(
        &["train", "--data", &data, "--hidden", "4,x", "-o", o],
        "--hidden '4,x'",
    );
    bad(
        &[
            "train",
            "--data",
            &data,
            "--hidden",
            "4",
            "--test-fraction",
            "1",
            "-o",
            o,
        ],
        "--test-fraction must be in [0, 1)",
    );
    bad(
        &[
            "distill",
            "model",
            "--teacher",
            &teacher(),
            "--data",
            &digits(),
            "--hidden",
            "4",
            "--temperature",
            "0",
            "-o",
            o,
        ],
        "--temperature must be a positive number",
    );
}

/// A model file whose layers do not chain: [8, 4] then [3, 5].
fn broken(dir: &Path) -> String {
    let mut tensors = Vec::new();
    for (name, shape) in [
        ("layers.0.weight", vec![8usize, 4]),
        ("layers.0.bias", vec![8]),
        ("layers.1.weight", vec![3, 5]),
        ("layers.1.bias", vec![3]),
    ] {
        let n: usize = shape.iter().product();
        tensors.push((name.to_string(), shape, vec![0u8; 4 * n]));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    let path = dir.join("broken.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path.display().to_string()
}
