//! `distill layers` with the model running over text: sequential,
//! independent and block modes on a golden model, the verdict on the evaluation text
//! equal to what `shears eval` says of the written output, a worse student
//! refused, and bad inputs refused with one line.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use shears_core::Checkpoint;

/// Two different texts of a few thousand bytes (one token per byte).
fn texts(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("calib.txt"), dir.join("eval.txt"));
    let mut ta = String::new();
    let mut tb = String::new();
    for i in 0..60 {
        ta.push_str(&format!(
            "Line {i}: the quick brown fox jumps over the lazy dog, {} times.\n",
            i * 7 % 13
        ));
        tb.push_str(&format!(
            "Entry {}: a compressed model is judged by what it predicts next; {i}\n",
            i * 5 % 11
        ));
    }
    std::fs::write(&a, ta).unwrap();
    std::fs::write(&b, tb).unwrap();
    (a, b)
}

/// The JSON report of a run.
fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The golden Llama with a tokenizer, the two texts, and the Llama pruned
/// 50% per row.
fn pruned_llama(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    pruned_golden(dir, "llama")
}

/// [`pruned_llama`] of golden model `family`.
fn pruned_golden(dir: &Path, family: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let teacher = golden_with_tokenizer(dir, family);
    let (calib, eval) = texts(dir);
    let student = dir.join("pruned");
    ok(&run(&[
        "--backend",
        "cpu",
        "-q",
        "prune",
        s(&teacher),
        "-o",
        s(&student),
        "--sparsity",
        "0.5",
        "--scope",
        "row",
    ]));
    (teacher, calib, eval, student)
}

/// `shears quantize teacher -o student` on the CPU with `flags`, which
/// must succeed.
fn quantize(teacher: &Path, student: &Path, flags: &[&str]) {
    let args = [
        &[
            "--backend",
            "cpu",
            "-q",
            "quantize",
            s(teacher),
            "-o",
            s(student),
        ][..],
        flags,
    ];
    ok(&run(&args.concat()));
}

/// `distill layers` of `student` against `teacher` with `more` flags.
fn distill(teacher: &Path, student: &Path, out: &Path, more: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--backend",
        "cpu",
        "-q",
        "distill",
        "layers",
        "--teacher",
        s(teacher),
        "--student",
        s(student),
        "-o",
        s(out),
        "--epochs",
        "3",
        "--lr",
        "0.003",
        "--calibration-seq-len",
        "128",
    ];
    args.extend_from_slice(more);
    run(&args)
}

/// What was judged is what was written: `shears eval` of the output
/// against the teacher on the same windows gives the report's `model`
/// figures.
fn judged_is_written(out: &Path, eval: &Path, teacher: &Path, m: &serde_json::Value, what: &str) {
    let e = run(&[
        "--backend",
        "cpu",
        "-q",
        "eval",
        s(out),
        "--text",
        s(eval),
        "--ref",
        s(teacher),
        "--seq-len",
        "128",
        "--json",
    ]);
    ok(&e);
    let e: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let ppl = e["perplexity"].as_f64().unwrap();
    let want = m["after"]["perplexity"].as_f64().unwrap();
    assert!(
        (ppl - want).abs() <= 1e-4 * want,
        "{what}: eval {ppl}, report {want}"
    );
    assert_eq!(e["tokens"], m["eval_tokens"], "{what}");
}

#[test]
fn sequential_distillation_repairs_the_model_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, calib, eval, student) = pruned_llama(dir.path());
    let mut layers = Vec::new();
    for mode in ["sequential", "independent", "block"] {
        let out = dir.path().join(mode);
        let rep = dir.path().join(format!("{mode}.json"));
        let o = distill(
            &teacher,
            &student,
            &out,
            &[
                "--calibration-text",
                s(&calib),
                "--eval-text",
                s(&eval),
                "--mode",
                mode,
                "--report",
                s(&rep),
                "--judge",
                "kl",
            ],
        );
        ok(&o);
        let r = report(&rep);
        let m = &r["model"];
        assert_eq!(m["mode"], mode);
        assert_eq!(m["written"], true);
        let kl = |w: &str| m[w]["kl_mean"].as_f64().unwrap();
        assert!(kl("after") < 0.8 * kl("before"), "{mode}: {m}");
        judged_is_written(&out, &eval, &teacher, m, mode);
        // Pruned weights stay exactly zero.
        let (sc, oc) = (
            Checkpoint::open(&student).unwrap(),
            Checkpoint::open(&out).unwrap(),
        );
        for t in &sc.tensors {
            let a = sc.view(t).to_f32().unwrap();
            let b = oc.view(oc.get(&t.name).unwrap()).to_f32().unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert!(*x != 0.0 || *y == 0.0, "{}: a pruned weight moved", t.name);
            }
        }
        layers.push(r["layers"].as_array().unwrap().clone());
    }
    // Layer 0's q/k/v read the embeddings in both modes: the same problem,
    // the same result (up to the order the teacher's outputs are summed
    // in: the forward pass's product or the training device's); later
    // layers see other inputs.
    let (seq, ind) = (&layers[0], &layers[1]);
    assert_eq!(seq.len(), 14);
    for k in 0..3 {
        let after = |r: &[serde_json::Value]| r[k]["error_after"].as_f64().unwrap();
        let (a, b) = (after(seq), after(ind));
        assert!((a - b).abs() <= 1e-6 * b, "{}: {a} {b}", seq[k]["name"]);
    }
    assert_ne!(seq[13]["error_before"], ind[13]["error_before"]);
}

#[test]
fn a_quantized_student_is_judged_and_stays_on_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = golden_with_tokenizer(dir.path(), "qwen3");
    let (calib, _) = texts(dir.path());
    let student = dir.path().join("w4");
    quantize(
        &teacher,
        &student,
        &["--scheme", "w4a16", "--group-size", "auto"],
    );
    // An output whose folders do not exist yet: made when it is written.
    let out = dir.path().join("deep/er/out");
    let rep = dir.path().join("r.json");
    ok(&distill(
        &teacher,
        &student,
        &out,
        &[
            "--calibration-text",
            s(&calib),
            "--report",
            s(&rep),
            "--judge",
            "kl",
        ],
    ));
    let m = &report(&rep)["model"];
    assert_eq!(m["mode"], "sequential");
    assert!(m["eval_text"].as_array().unwrap().is_empty());
    // Judged on the held-out quarter of the calibration sequences.
    assert_eq!(m["eval_tokens"].as_u64().unwrap() % 127, 0);
    let kl = |w: &str| m[w]["kl_mean"].as_f64().unwrap();
    assert!(kl("after") < kl("before"), "{m}");
    let (sc, oc) = (
        Checkpoint::open(&student).unwrap(),
        Checkpoint::open(&out).unwrap(),
    );
    let mut changed = 0;
    for t in &sc.tensors {
        let (a, b) = (
            sc.view(t).bytes(),
            oc.view(oc.get(&t.name).unwrap()).bytes(),
        );
        if t.name.ends_with("weight_packed") {
            changed += (a != b) as usize;
        } else {
            assert_eq!(a, b, "{} changed", t.name);
        }
    }
    assert!(changed > 0);
}

/// The float formats (FP8 per channel and in blocks, NVFP4, MXFP4) train
/// on their own scales: the KL to the teacher drops, only the code tensors
/// change (scales, global scales, norms and config byte for byte), and
/// the written codes are what the verdict measured (`shears eval` of the
/// output gives the report's KL).
#[test]
fn float_students_train_on_their_scales() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = golden_with_tokenizer(dir.path(), "llama");
    let (calib, eval) = texts(dir.path());
    for (scheme, codes_suffix) in [
        ("fp8", ".weight"),
        ("fp8-block", ".weight"),
        ("nvfp4a16", ".weight_packed"),
        ("mxfp4a16", ".weight_packed"),
    ] {
        let student = dir.path().join(scheme);
        quantize(&teacher, &student, &["--scheme", scheme]);
        // Without --lr an FP8 student gets a tenth of the default rate
        // (5e-3 on probes), the others the default.
        let probe_rep = dir.path().join(format!("{scheme}-probes.json"));
        ok(&run(&[
            "-q",
            "distill",
            "layers",
            "--teacher",
            s(&teacher),
            "--student",
            s(&student),
            "-o",
            s(&dir.path().join(format!("{scheme}-probes"))),
            "--epochs",
            "1",
            "--report",
            s(&probe_rep),
        ]));
        let lr = report(&probe_rep)["lr"].as_f64().unwrap();
        let want = if scheme.starts_with("fp8") {
            5e-4
        } else {
            5e-3
        };
        assert!((lr - want).abs() < 1e-9, "{scheme}: lr {lr}");
        let out = dir.path().join(format!("{scheme}-out"));
        let rep = dir.path().join(format!("{scheme}.json"));
        ok(&distill(
            &teacher,
            &student,
            &out,
            &[
                "--calibration-text",
                s(&calib),
                "--eval-text",
                s(&eval),
                "--report",
                s(&rep),
                "--judge",
                "kl",
            ],
        ));
        let r = report(&rep);
        let m = &r["model"];
        let kl = |w: &str| m[w]["kl_mean"].as_f64().unwrap();
        assert!(kl("after") < kl("before"), "{scheme}: {m}");
        let format = r["format"].as_str().unwrap();
        assert!(
            format.contains(if scheme.starts_with("fp8") {
                "FP8"
            } else {
                "FP4"
            }),
            "{scheme}: {format}"
        );
        let (sc, oc) = (
            Checkpoint::open(&student).unwrap(),
            Checkpoint::open(&out).unwrap(),
        );
        assert_eq!(sc.tensors.len(), oc.tensors.len(), "{scheme}");
        let mut changed = 0;
        for t in &sc.tensors {
            let o = oc.get(&t.name).unwrap();
            assert_eq!(
                (t.dtype, &t.shape),
                (o.dtype, &o.shape),
                "{scheme} {}",
                t.name
            );
            let (a, b) = (sc.view(t).bytes(), oc.view(o).bytes());
            let is_codes = t.name.ends_with(codes_suffix) && t.name.contains("_proj");
            if is_codes {
                changed += (a != b) as usize;
            } else {
                assert_eq!(a, b, "{scheme}: {} changed", t.name);
            }
        }
        assert!(changed > 0, "{scheme}: no codes changed");
        assert_eq!(
            std::fs::read(student.join("config.json")).unwrap(),
            std::fs::read(out.join("config.json")).unwrap(),
            "{scheme}"
        );
        judged_is_written(&out, &eval, &teacher, m, scheme);
    }
}

#[test]
fn a_worse_student_is_not_written_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, calib, eval, student) = pruned_llama(dir.path());
    let out = dir.path().join("out");
    let flags = [
        "--calibration-text",
        s(&calib),
        "--eval-text",
        s(&eval),
        "--epochs",
        "1",
        "--judge",
        "kl",
    ];
    let worse = |more: &[&str]| {
        let mut cmd = std::process::Command::new(shears_bin());
        cmd.env("SHEARS_INJECT_FAULT", "distill-worse");
        cmd.env("XDG_RUNTIME_DIR", xdg_runtime_dir());
        cmd.args([
            "--backend",
            "cpu",
            "-q",
            "distill",
            "layers",
            "--teacher",
            s(&teacher),
            "--student",
            s(&student),
            "-o",
            s(&out),
            "--calibration-seq-len",
            "128",
        ]);
        cmd.args(flags).args(more);
        cmd.output().unwrap()
    };
    let o = worse(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("worse") && e.contains("--keep-worse"), "{e}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    ok(&worse(&["--keep-worse"]));
    assert!(out.join("model.safetensors").exists());
}

#[test]
fn bad_model_runs_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, calib, eval, student) = pruned_llama(dir.path());
    let out = dir.path().join("out");
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "only a few bytes of text").unwrap();
    let one = dir.path().join("one.txt");
    std::fs::write(&one, "x".repeat(200)).unwrap();
    // A student whose lm_head is compressed: not a decoder linear.
    let head = dir.path().join("head");
    ok(&run(&[
        "--backend",
        "cpu",
        "-q",
        "prune",
        s(&teacher),
        "-o",
        s(&head),
        "--sparsity",
        "0.5",
        "--include",
        "lm_head.weight",
    ]));
    let cases: [(&Path, &[&str], &str); 5] = [
        (&student, &["--mode", "sequential"], "--calibration-text"),
        (&student, &["--calibration-text", s(&short)], "short.txt"),
        (&student, &["--calibration-text", s(&one)], "at least 2"),
        (
            &student,
            &["--calibration-text", s(&calib), "--eval-text", s(&short)],
            "short.txt",
        ),
        (
            &head,
            &[
                "--calibration-text",
                s(&calib),
                "--include",
                "lm_head.weight",
            ],
            "lm_head.weight",
        ),
    ];
    for (student, flags, must) in cases {
        let o = distill(&teacher, student, &out, flags);
        let e = refused(&o, &[must]);
        assert!(!out.exists(), "{flags:?}: {e}");
    }
    let _ = eval;
}

/// Block mode on a pruned Qwen2 trains the q/k/v biases with their
/// linears: the written biases differ from the student's, and `shears
/// eval` of the output gives the verdict's figures.
#[test]
fn block_mode_writes_trained_biases() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, calib, eval, student) = pruned_golden(dir.path(), "qwen2");
    let out = dir.path().join("out");
    let rep = dir.path().join("r.json");
    ok(&distill(
        &teacher,
        &student,
        &out,
        &[
            "--calibration-text",
            s(&calib),
            "--eval-text",
            s(&eval),
            "--mode",
            "block",
            "--report",
            s(&rep),
            "--judge",
            "kl",
            "--keep-worse",
        ],
    ));
    let r = report(&rep);
    let m = &r["model"];
    judged_is_written(&out, &eval, &teacher, m, "qwen2 block");
    let (sc, oc) = (
        Checkpoint::open(&student).unwrap(),
        Checkpoint::open(&out).unwrap(),
    );
    let trained: Vec<&str> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !l["kept_student"].as_bool().unwrap())
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    let mut moved = 0;
    for t in sc.tensors.iter().filter(|t| t.name.ends_with("_proj.bias")) {
        let weight = t.name.replace(".bias", ".weight");
        let changed = sc.view(t).bytes() != oc.view(oc.get(&t.name).unwrap()).bytes();
        // A bias moves exactly when its layer was written trained.
        assert_eq!(changed, trained.contains(&weight.as_str()), "{}", t.name);
        moved += changed as usize;
    }
    assert!(moved > 0, "no bias was trained: {r}");
}
