//! Every command through the CLI on `--backend cpu` and `--backend gpu`
//! (lavapipe in CI): checkpoints written byte for byte alike, figures that
//! are floats (statistics, training) within stated tolerances. Reported as
//! ignored without an adapter; `SHEARS_REQUIRE_GPU=1` makes that a failure.

use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;

use common::{repo_root, run};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Runs `shears --backend B args…` with `{out}` replaced by `out`.
fn shears(backend: &str, args: &[String], out: &Path) -> Result<String, Failed> {
    let mut full = vec!["--backend".to_string(), backend.to_string()];
    full.extend(args.iter().map(|a| a.replace("{out}", &s(out))));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let o = run(&refs);
    if !o.status.success() {
        return Err(format!(
            "{backend}: shears {}: exit {:?}: {}",
            full.join(" "),
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Every file of two output folders, byte for byte.
fn same_folders(a: &Path, b: &Path) -> Result<(), Failed> {
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    if names(a) != names(b) {
        return Err(format!("files differ: {:?} vs {:?}", names(a), names(b)).into());
    }
    for n in names(a) {
        if std::fs::read(a.join(&n)).unwrap() != std::fs::read(b.join(&n)).unwrap() {
            return Err(format!("{n} differs between the CPU and the GPU output").into());
        }
    }
    Ok(())
}

fn asset(name: &str) -> String {
    s(&repo_root().join("assets").join(name))
}

/// A command whose checkpoint output must be identical on both backends;
/// `{out}` stands for the output path. `input` makes a compressed input
/// first (for decompress).
fn identical(args: Vec<String>, input: Option<Vec<String>>) -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("input");
    let args: Vec<String> = match input {
        Some(make) => {
            shears("cpu", &make, &made)?;
            args.into_iter()
                .map(|a| a.replace("{in}", &s(&made)))
                .collect()
        }
        None => args,
    };
    let (cpu, gpu) = (dir.path().join("cpu"), dir.path().join("gpu"));
    shears("cpu", &args, &cpu)?;
    shears("gpu", &args, &gpu)?;
    same_folders(&cpu, &gpu)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

/// Relative agreement of two reported floats.
fn close(what: &str, a: f64, b: f64, rtol: f64) -> Result<(), Failed> {
    if (a - b).abs() <= rtol * a.abs().max(b.abs()) + 1e-12 {
        Ok(())
    } else {
        Err(format!("{what}: cpu {a}, gpu {b}; tolerance {rtol:e} relative").into())
    }
}

/// Layer-wise distillation trains in f32 on both backends; the products
/// sum in other orders, so the errors agree within this (measured 1e-6).
const DISTILL_RTOL: f64 = 1e-3;
/// The same on an FP4 student's grid (8 magnitudes): a latent weight
/// within an ulp of a rounding threshold lands one E2M1 step apart on the
/// two backends, and the runs drift further apart than on int grids
/// (block mode on NVFP4: 1.8e-3 measured on the KL).
const DISTILL_FP4_RTOL: f64 = 5e-3;
/// Tensor statistics: f32 tile sums in the same fixed order, f64 across.
const STATS_RTOL: f64 = 1e-5;

fn distill_layers() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let student = dir.path().join("student");
    shears(
        "cpu",
        &strings(&["prune", &asset("tiny-llama"), "-o", "{out}"]),
        &student,
    )?;
    let mut errors = Vec::new();
    for b in ["cpu", "gpu"] {
        let report = dir.path().join(format!("{b}.json"));
        let args = strings(&[
            "distill",
            "layers",
            "--teacher",
            &asset("tiny-llama"),
            "--student",
            &s(&student),
            "--calibration",
            &asset("tiny-llama-calibration.safetensors"),
            "--epochs",
            "2",
            "--include",
            "*.layers.0.self_attn.*",
            "--report",
            &s(&report),
            "-o",
            "{out}",
        ]);
        shears(b, &args, &dir.path().join(b))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        errors.push(doc["mean_error_after"].as_f64().unwrap());
    }
    close(
        "mean held-out error after",
        errors[0],
        errors[1],
        DISTILL_RTOL,
    )
}

/// Distillation with the model running over text (`--mode` sequential or
/// block) of a pruned student, or of one quantized to `scheme` (the float
/// formats train on their fixed E4M3 / E2M1 grids): the forward pass and
/// the training both on each backend; the layers' errors and the verdict's
/// KL agree within the training tolerance.
fn distill_text(mode: &str, scheme: Option<&str>) -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::golden_with_tokenizer(dir.path(), "llama");
    let text = dir.path().join("text.txt");
    let lines: String = (0..40)
        .map(|i| {
            format!(
                "Line {i}: the quick brown fox jumps over the lazy dog {}.\n",
                i % 7
            )
        })
        .collect();
    std::fs::write(&text, lines).unwrap();
    let student = dir.path().join("student");
    let compress = match scheme {
        Some(sc) => strings(&["quantize", &s(&teacher), "-o", "{out}", "--scheme", sc]),
        None => strings(&["prune", &s(&teacher), "-o", "{out}"]),
    };
    shears("cpu", &compress, &student)?;
    let mut figures = Vec::new();
    for b in ["cpu", "gpu"] {
        let report = dir.path().join(format!("{b}.json"));
        let args = strings(&[
            "distill",
            "layers",
            "--teacher",
            &s(&teacher),
            "--student",
            &s(&student),
            "--calibration-text",
            &s(&text),
            "--calibration-seq-len",
            "64",
            "--mode",
            mode,
            "--epochs",
            "2",
            "--judge",
            "kl",
            "--keep-worse",
            "--report",
            &s(&report),
            "-o",
            "{out}",
        ]);
        shears(b, &args, &dir.path().join(b))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        figures.push((
            doc["mean_error_after"].as_f64().unwrap(),
            doc["model"]["after"]["kl_mean"].as_f64().unwrap(),
        ));
    }
    let rtol = match scheme {
        Some(sc) if sc.contains("fp4") => DISTILL_FP4_RTOL,
        _ => DISTILL_RTOL,
    };
    close(
        "mean held-out error after",
        figures[0].0,
        figures[1].0,
        rtol,
    )?;
    close("KL to the teacher after", figures[0].1, figures[1].1, rtol)
}

fn inspect_stats() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let args = strings(&["inspect", &asset("tiny-llama"), "--stats", "--json"]);
    let cpu: serde_json::Value = serde_json::from_str(&shears("cpu", &args, dir.path())?).unwrap();
    let gpu: serde_json::Value = serde_json::from_str(&shears("gpu", &args, dir.path())?).unwrap();
    for (a, b) in cpu["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .zip(gpu["tensors"].as_array().unwrap())
    {
        let (sa, sb) = (&a["stats"], &b["stats"]);
        for exact in ["min", "max", "absmax", "zeros", "nonfinite"] {
            if sa[exact] != sb[exact] {
                return Err(
                    format!("{}: {exact} {} vs {}", a["name"], sa[exact], sb[exact]).into(),
                );
            }
        }
        for f in ["mean", "std"] {
            close(
                f,
                sa[f].as_f64().unwrap(),
                sb[f].as_f64().unwrap(),
                STATS_RTOL,
            )?;
        }
    }
    Ok(())
}

fn evaluate() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let args = strings(&[
        "evaluate",
        "--model",
        &asset("digits-teacher.safetensors"),
        "--data",
        &asset("digits.csv.gz"),
    ]);
    let cpu = shears("cpu", &args, dir.path())?;
    let gpu = shears("gpu", &args, dir.path())?;
    let acc = |t: &str| {
        t.lines()
            .find(|l| l.contains("accuracy"))
            .map(str::to_string)
    };
    if acc(&cpu) != acc(&gpu) {
        return Err(format!("accuracy differs:\n{cpu}\n{gpu}").into());
    }
    Ok(())
}

/// A text file for the language-model commands.
fn lm_text(dir: &Path) -> String {
    let p = dir.join("text.txt");
    let line = "shears runs the model on the GPU and on the CPU alike. ";
    std::fs::write(&p, line.repeat(40)).unwrap();
    s(&p)
}

/// `eval`: perplexity and accuracy within the forward family's tolerance.
fn eval_lm() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let text = lm_text(dir.path());
    let args = strings(&[
        "eval",
        &asset("tiny-llama"),
        "--text",
        &text,
        "--seq-len",
        "128",
        "--json",
    ]);
    let cpu: serde_json::Value = serde_json::from_str(&shears("cpu", &args, dir.path())?)?;
    let gpu: serde_json::Value = serde_json::from_str(&shears("gpu", &args, dir.path())?)?;
    close(
        "perplexity",
        cpu["perplexity"].as_f64().unwrap(),
        gpu["perplexity"].as_f64().unwrap(),
        1e-4,
    )?;
    if cpu["tokens"] != gpu["tokens"] {
        return Err(format!("scored tokens differ: {cpu} vs {gpu}").into());
    }
    Ok(())
}

/// `calibrate`: every input norm within the forward family's tolerance
/// of its largest value, the sampled rows' shapes equal.
fn calibrate() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let text = lm_text(dir.path());
    let files = ["cpu.safetensors", "gpu.safetensors"].map(|f| s(&dir.path().join(f)));
    for (backend, f) in ["cpu", "gpu"].iter().zip(&files) {
        let args = strings(&[
            "calibrate",
            &asset("tiny-llama"),
            "--text",
            &text,
            "--seq-len",
            "64",
            "-o",
            f,
        ]);
        shears(backend, &args, dir.path())?;
    }
    let a = shears_core::Checkpoint::open(&files[0])?;
    let b = shears_core::Checkpoint::open(&files[1])?;
    for t in &a.tensors {
        let u = b
            .get(&t.name)
            .ok_or(format!("{} missing on the GPU", t.name))?;
        if u.shape != t.shape {
            return Err(format!("{}: shapes differ", t.name).into());
        }
        if t.name.ends_with(".input_norm") {
            let (x, y) = (a.view(t).to_f32()?, b.view(u).to_f32()?);
            let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = x
                .iter()
                .zip(&y)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            if diff > 1e-4 * peak {
                return Err(format!("{}: off by {diff} of {peak}", t.name).into());
            }
        }
    }
    Ok(())
}

/// `quantize --method gptq`: the GPU's sweep `--verify`-ed against the
/// fast CPU path (at most 1% of codes differing, else exit 1), and every
/// layer's Hessian-weighted error within 3% of the CPU run's.
fn gptq() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let text = lm_text(dir.path());
    let calib = s(&dir.path().join("c.safetensors"));
    let cal = strings(&[
        "calibrate",
        &asset("tiny-llama"),
        "--text",
        &text,
        "--seq-len",
        "64",
        "--gram",
        "-o",
        &calib,
    ]);
    shears("cpu", &cal, dir.path())?;
    let mut errors = Vec::new();
    for backend in ["cpu", "gpu"] {
        let report = s(&dir.path().join(format!("{backend}.json")));
        let args = strings(&[
            "quantize",
            &asset("tiny-llama"),
            "-o",
            &s(&dir.path().join(backend)),
            "--scheme",
            "w4a16-asym",
            "--method",
            "gptq",
            "--actorder",
            "group",
            "--calibration",
            &calib,
            "--report",
            &report,
            "--verify",
            "-q",
        ]);
        shears(backend, &args, dir.path())?;
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        let rows: Vec<f64> = doc["tensors"]
            .as_array()
            .ok_or("no tensors in the report")?
            .iter()
            .map(|r| r["hessian_error"]["result"].as_f64().unwrap_or(f64::NAN))
            .collect();
        errors.push(rows);
    }
    if errors[0].len() != 14 || errors[1].len() != 14 {
        return Err(format!("14 layers expected: {errors:?}").into());
    }
    for (i, (a, b)) in errors[0].iter().zip(&errors[1]).enumerate() {
        close(&format!("layer {i} weighted error"), *a, *b, 0.03)?;
    }
    Ok(())
}

/// A named check.
type Check = (String, Box<dyn FnOnce() -> Result<(), Failed> + Send>);

fn trials() -> Vec<Check> {
    let m = asset("tiny-llama");
    let calib = asset("tiny-llama-calibration.safetensors");
    let recipe = asset("compress-2of4-w4a16.toml");
    let mut t: Vec<Check> = Vec::new();
    let mut same = |name: &str, args: Vec<String>, input: Option<Vec<String>>| {
        t.push((name.to_string(), Box::new(move || identical(args, input))));
    };
    let base = |cmd: &str, extra: &[&str]| {
        let mut v = strings(&[cmd, &m, "-o", "{out}"]);
        v.extend(strings(extra));
        v
    };
    same(
        "prune::magnitude_tensor",
        base("prune", &["--verify"]),
        None,
    );
    same(
        "prune::wanda_row_validate",
        base(
            "prune",
            &[
                "--method",
                "wanda",
                "--calibration",
                &calib,
                "--validate",
                "--verify",
            ],
        ),
        None,
    );
    same(
        "prune::two_of_four",
        base("prune", &["--pattern", "2:4"]),
        None,
    );
    same(
        "prune::global",
        base("prune", &["--scope", "global", "--sparsity", "0.3"]),
        None,
    );
    same(
        "prune::structured_rows",
        base("prune", &["--structured", "rows"]),
        None,
    );
    for scheme in ["w8a16", "w4a16", "w4a16-asym", "w8a8"] {
        same(
            &format!("quantize::{scheme}"),
            base("quantize", &["--scheme", scheme, "--verify", "--validate"]),
            None,
        );
    }
    same(
        "quantize::dense_ct_rounding",
        base(
            "quantize",
            &[
                "--scheme",
                "w4a16",
                "--format",
                "dense",
                "--rounding",
                "compressed-tensors",
            ],
        ),
        None,
    );
    same(
        "compress::recipe",
        base("compress", &["--recipe", &recipe, "--verify"]),
        None,
    );
    same(
        "compress::global_w8a16",
        base(
            "compress",
            &[
                "--sparsity",
                "0.5",
                "--scope",
                "global",
                "--scheme",
                "w8a16",
            ],
        ),
        None,
    );
    // The float schemes: llm-compressor's golden folders (the CPU output
    // equals them byte for byte, crates/cli/tests/float.rs), and pruning
    // with FP8 and NVFP4 in one pass.
    for dtype in ["bf16", "f32"] {
        let dense = s(&repo_root().join("tests/golden").join(dtype).join("dense"));
        for scheme in ["fp8", "fp8-block", "nvfp4a16", "mxfp4a16"] {
            same(
                &format!("quantize::golden::{dtype}::{scheme}"),
                strings(&[
                    "quantize",
                    &dense,
                    "-o",
                    "{out}",
                    "--scheme",
                    scheme,
                    "--rounding",
                    "compressed-tensors",
                    "--verify",
                ]),
                None,
            );
        }
    }
    for scheme in ["fp8", "nvfp4a16"] {
        same(
            &format!("compress::two_of_four_{scheme}"),
            base(
                "compress",
                &[
                    "--pattern",
                    "2:4",
                    "--scheme",
                    scheme,
                    "--verify",
                    "--validate",
                ],
            ),
            None,
        );
    }
    let packed = base("compress", &["--recipe", &recipe]);
    same(
        "decompress::w4a16",
        strings(&["decompress", "{in}", "-o", "{out}"]),
        Some(packed),
    );
    let int8 = base("quantize", &["--scheme", "w8a8"]);
    same(
        "decompress::w8a8",
        strings(&["decompress", "{in}", "-o", "{out}"]),
        Some(int8),
    );
    t.push(("distill_layers".into(), Box::new(distill_layers)));
    for mode in ["sequential", "block"] {
        t.push((
            format!("distill_layers::{mode}"),
            Box::new(move || distill_text(mode, None)),
        ));
    }
    for (mode, scheme) in [("sequential", "fp8"), ("block", "nvfp4a16")] {
        t.push((
            format!("distill_layers::{mode}_{scheme}"),
            Box::new(move || distill_text(mode, Some(scheme))),
        ));
    }
    t.push(("inspect_stats".into(), Box::new(inspect_stats)));
    t.push(("evaluate".into(), Box::new(evaluate)));
    t.push(("eval".into(), Box::new(eval_lm)));
    t.push(("calibrate".into(), Box::new(calibrate)));
    t.push(("gptq".into(), Box::new(gptq)));
    for ty in ["Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"] {
        t.push((
            format!("quantize::gguf::{ty}"),
            Box::new(move || gguf(ty, false, false)),
        ));
    }
    for ty in ["Q4_K_M", "Q5_K_M", "Q4_0", "Q5_1"] {
        t.push((
            format!("quantize::gguf::{ty}::imatrix"),
            Box::new(move || gguf(ty, true, false)),
        ));
    }
    t.push((
        "compress::gguf::wanda::Q4_K_M".into(),
        Box::new(|| gguf("Q4_K_M", true, true)),
    ));
    t
}

/// A GGUF file of tiny-llama, byte for byte alike on both backends (with
/// an importance matrix from the assets' calibration file when asked;
/// `compress` pruning 50% by Wanda first when `pruned`).
fn gguf(ty: &str, imatrix: bool, pruned: bool) -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for b in ["cpu", "gpu"] {
        let out = dir.path().join(format!("{b}.gguf"));
        let mut args = strings(&[
            if pruned { "compress" } else { "quantize" },
            &asset("tiny-llama"),
            "-o",
            "{out}",
            "--type",
            ty,
        ]);
        if imatrix {
            args.extend(strings(&[
                "--calibration",
                &asset("tiny-llama-calibration.safetensors"),
            ]));
        }
        if pruned {
            args.extend(strings(&["--sparsity", "0.5", "--method", "wanda"]));
        }
        shears(b, &args, &out)?;
        files.push(std::fs::read(&out).unwrap());
    }
    if files[0] != files[1] {
        return Err(format!("the {ty} GGUF files differ between the CPU and the GPU").into());
    }
    Ok(())
}

/// Whether `shears devices` lists an adapter.
fn has_adapter() -> bool {
    let o = run(&["devices", "--json"]);
    o.status.success()
        && serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().map(|a| !a.is_empty()))
            .unwrap_or(false)
}

fn main() {
    let args = Arguments::from_args();
    let required = std::env::var("SHEARS_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let present = has_adapter();
    if !present {
        eprintln!("CLI backend tests: no GPU adapter (set SHEARS_REQUIRE_GPU=1 to fail instead)");
    }
    let tests = trials()
        .into_iter()
        .map(|(name, f)| {
            Trial::test(name, move || {
                if !present {
                    return Err("SHEARS_REQUIRE_GPU=1 but no GPU adapter".into());
                }
                f()
            })
            .with_ignored_flag(!present && !required)
        })
        .collect();
    libtest_mimic::run(&args, tests).exit();
}
