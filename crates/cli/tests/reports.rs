//! One convention for every command that reports: a table on stdout;
//! `--json` prints the same report as JSON instead; `--report FILE` writes
//! that JSON beside the table.

mod common;

use common::{repo_root, run};

fn asset(name: &str) -> String {
    repo_root().join("assets").join(name).display().to_string()
}

/// Runs `args` + `--json`, then `args` + `--report FILE`; returns the JSON
/// from stdout, the table, and the JSON from the file.
fn both(args: &[&str], out_flag: Option<&str>) -> (serde_json::Value, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut first: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut second = first.clone();
    if let Some(flag) = out_flag {
        first.extend([flag.to_string(), dir.path().join("a").display().to_string()]);
        second.extend([flag.to_string(), dir.path().join("b").display().to_string()]);
    }
    first.push("--json".into());
    let report = dir.path().join("report.json");
    second.extend(["--report".into(), report.display().to_string()]);
    let go = |v: &[String]| {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        let o = run(&refs);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{v:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&go(&first)).expect("--json prints JSON");
    let table = go(&second);
    assert!(
        serde_json::from_str::<serde_json::Value>(&table).is_err(),
        "a table, not JSON"
    );
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (json, table, file)
}

#[test]
fn quantize_prune_and_compress_report_alike() {
    let m = asset("tiny-llama");
    for (args, key) in [
        (vec!["quantize", m.as_str(), "--scheme", "w8a16"], "scheme"),
        (vec!["prune", m.as_str(), "--sparsity", "0.5"], "method"),
        (
            vec![
                "compress",
                m.as_str(),
                "--scheme",
                "w4a16",
                "--pattern",
                "2:4",
            ],
            "scheme",
        ),
    ] {
        let (json, table, file) = both(&args, Some("-o"));
        assert_eq!(json["tensors"].as_array().unwrap().len(), 14, "{args:?}");
        assert_eq!(json[key], file[key], "{args:?}");
        assert!(table.contains("total:"), "{args:?}: {table}");
    }
}

#[test]
fn inspect_and_evaluate_report_alike() {
    let (json, table, file) = both(&["inspect", &asset("tiny-llama")], None);
    assert_eq!(json["totals"], file["totals"]);
    assert!(table.contains("model.embed_tokens.weight"), "{table}");
    let (json, table, file) = both(
        &[
            "evaluate",
            "--model",
            &asset("digits-teacher.safetensors"),
            "--data",
            &asset("digits.csv.gz"),
            "--backend",
            "cpu",
        ],
        None,
    );
    assert_eq!(json["accuracy"], file["accuracy"]);
    assert!(table.contains("accuracy"), "{table}");
}

#[test]
fn quiet_prints_no_report_but_what_was_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let m = asset("tiny-llama");
    let out = dir.path().join("q").display().to_string();
    let o = run(&["-q", "quantize", &m, "-o", &out, "--scheme", "w8a16"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        o.stdout.is_empty(),
        "-q printed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let out2 = dir.path().join("q2").display().to_string();
    let o = run(&[
        "-q", "quantize", &m, "-o", &out2, "--scheme", "w8a16", "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json still prints");
    assert_eq!(doc["scheme"], "w8a16");
    let o = run(&["-q", "inspect", &m]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("lm_head.weight"));
}
