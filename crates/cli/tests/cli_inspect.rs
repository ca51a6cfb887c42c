//! `shears inspect` end to end on the assets checkpoint.

mod common;

use common::{repo_root, run};

fn asset() -> String {
    repo_root().join("assets/tiny-llama").display().to_string()
}

#[test]
fn table_lists_every_tensor_with_totals() {
    let out = run(&["inspect", &asset()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("21 tensors in 2 files (sharded, with index)"),
        "{text}"
    );
    assert!(text.contains("model.layers.1.mlp.down_proj.weight"));
    assert!(text.contains("[256, 768]"));
    assert!(text.contains("totals by dtype:"));
    assert!(text
        .lines()
        .any(|l| l.trim_start().starts_with("BF16") && l.contains("21 tensors")));
}

#[test]
fn json_with_stats_on_the_cpu() {
    let out = run(&["inspect", &asset(), "--stats", "--json", "--backend", "cpu"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 21);
    assert_eq!(doc["totals"]["tensors"], 21);
    let params: u64 = tensors.iter().map(|t| t["params"].as_u64().unwrap()).sum();
    assert_eq!(doc["totals"]["params"].as_u64().unwrap(), params);
    for t in tensors {
        let s = &t["stats"];
        let (absmax, std) = (s["absmax"].as_f64().unwrap(), s["std"].as_f64().unwrap());
        assert!(absmax > 0.0 && std > 0.0, "{t}");
        if t["name"].as_str().unwrap().ends_with("layernorm.weight") {
            assert!((s["mean"].as_f64().unwrap() - 1.0).abs() < 0.02, "{t}");
        }
    }
    assert!(doc["backend"].as_str().unwrap().starts_with("cpu"));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::process::{Command, Stdio};
    // The pipe's read end is closed before shears starts, so its first
    // write to stdout fails with EPIPE, whatever the timing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(common::shears_bin())
        .args(["inspect", &asset()])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    // Through shears' own mapping: one line (clap's message with its hints
    // joined, no usage block), exit 2, nothing on stdout.
    for (args, must) in [
        (vec!["inspect"], vec!["MODEL"]),
        (
            vec!["inspect", "assets", "--backend", "tpu"],
            vec!["'tpu'", "auto, gpu, cpu"],
        ),
        (
            vec!["quantize", "m", "-o", "o", "--scheme", "w3"],
            vec!["w8a16, w4a16"],
        ),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        for m in must {
            assert!(err.contains(m), "{args:?}: '{m}' missing from {err}");
        }
        assert!(out.stdout.is_empty());
    }
}
