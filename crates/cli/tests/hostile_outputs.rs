//! What an attacker or an unlucky user feeds shears, part 2: empty and
//! non-finite weights, `--force` aimed at the wrong folder, outputs aimed
//! at inputs, bad numbers. Each case is refused with one line and exit 2
//! (nothing written, input unchanged) or handled; none panics.

use std::path::{Path, PathBuf};

mod common;

use common::*;

// 7. Zero-sized weights pass through; no allocation comes from their
// other dimension.
#[test]
fn zero_sized_weights_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let data: Vec<u8> = values(256).iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = format!(
        concat!(
            r#"{{"a.weight":{{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}},"#,
            r#""b.weight":{{"dtype":"F32","shape":[0,8589934592],"data_offsets":[0,0]}},"#,
            r#""c.weight":{{"dtype":"F32","shape":[0,256],"data_offsets":[0,0]}},"#,
            r#""d.weight":{{"dtype":"F32","shape":[18446744073709551615,0],"data_offsets":[0,0]}},"#,
            r#""e.weight":{{"dtype":"F32","shape":[2,128],"data_offsets":[0,{}]}}}}"#
        ),
        data.len()
    );
    raw_file(&m.join("model.safetensors"), &header, &data);
    std::fs::write(m.join("config.json"), "{}").unwrap();
    for scheme in ["w8a16", "w4a16", "w4a16-asym", "w8a8"] {
        let out = dir.path().join(format!("q-{scheme}"));
        ok(&run(&[
            "quantize",
            s(&m),
            "-o",
            s(&out),
            "--scheme",
            scheme,
        ]));
        let q = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&q).unwrap();
        assert_eq!(st.tensor("c.weight").unwrap().shape(), [0, 256]);
        assert_eq!(
            st.tensor("d.weight").unwrap().shape(),
            [18446744073709551615usize, 0]
        );
        assert!(st.tensor("e.weight_scale").is_ok());
        ok(&run(&[
            "decompress",
            s(&out),
            "-o",
            s(&dir.path().join(format!("d-{scheme}"))),
        ]));
    }
    ok(&run(&["prune", s(&m), "-o", s(&dir.path().join("p"))]));
}

/// A third-party compressed-tensors folder holding one int8 layer of
/// `weight_shape` [out, in] (codes and scales shaped to match).
fn compressed_with_shape(dir: &Path, out_dim: i64, in_dim: i64) -> PathBuf {
    let m = dir.join(format!("ct-{out_dim}-{in_dim}"));
    std::fs::create_dir_all(&m).unwrap();
    let (o, i) = (out_dim.max(0), in_dim.max(0));
    let words = (i + 3) / 4;
    let shape: Vec<u8> = [out_dim, in_dim]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let header = format!(
        concat!(
            r#"{{"l.weight_packed":{{"dtype":"I32","shape":[{o},{w}],"data_offsets":[0,0]}},"#,
            r#""l.weight_scale":{{"dtype":"F32","shape":[{o},1],"data_offsets":[0,0]}},"#,
            r#""l.weight_shape":{{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}}}"#
        ),
        o = o,
        w = words
    );
    raw_file(&m.join("model.safetensors"), &header, &shape);
    let config = serde_json::json!({"quantization_config": {
        "format": "pack-quantized", "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
            "num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel"}}}}});
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    m
}

#[test]
fn decompress_of_empty_and_negative_weight_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let empty = compressed_with_shape(dir.path(), 0, 256);
    let out = dir.path().join("d");
    ok(&run(&["decompress", s(&empty), "-o", s(&out)]));
    let d = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&d).unwrap();
    assert_eq!(st.tensor("l.weight").unwrap().shape(), [0, 256]);
    let negative = compressed_with_shape(dir.path(), -1, 0);
    refused(
        &run(&["decompress", s(&negative), "-o", s(&dir.path().join("d2"))]),
        &["l.weight_shape", "negative"],
    );
}

// 8. Non-finite weights: refused by default, kept unquantized on request.
#[test]
fn non_finite_weights_are_refused_naming_tensor_row_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = values(4 * 128);
    v[2 * 128 + 5] = f32::INFINITY;
    v[3 * 128] = f32::NAN;
    let m = one_layer(dir.path(), "m", 4, 128, &v);
    for args in [
        vec!["quantize", "--scheme", "w8a16"],
        vec!["quantize", "--scheme", "w4a16"],
        vec!["compress", "--scheme", "w4a16", "--pattern", "2:4"],
        vec!["prune", "--sparsity", "0.5"],
    ] {
        let out = dir.path().join("o");
        let mut full = args.clone();
        full.extend([s(&m), "-o", s(&out)]);
        let line = refused(&run(&full), &["l.weight", "2 NaN/inf values", "row 2"]);
        assert!(line.contains("--non-finite keep"), "{line}");
        only(dir.path(), &["m"]);
    }
    let out = dir.path().join("kept");
    let o = run(&[
        "quantize",
        s(&m),
        "-o",
        s(&out),
        "--scheme",
        "w8a16",
        "--non-finite",
        "keep",
    ]);
    ok(&o);
    let q = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&q).unwrap();
    let kept = st.tensor("l.weight").unwrap();
    let orig = std::fs::read(m.join("model.safetensors")).unwrap();
    let orig = safetensors::SafeTensors::deserialize(&orig).unwrap();
    assert_eq!(kept.data(), orig.tensor("l.weight").unwrap().data());
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        config.contains("\"l\""),
        "the kept layer is in ignore: {config}"
    );
}

#[test]
fn an_asymmetric_range_wider_than_f32_max_stays_finite() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = values(2 * 128);
    v[0] = -3.0e38;
    v[127] = 3.0e38;
    let m = one_layer(dir.path(), "m", 2, 128, &v);
    let out = dir.path().join("q");
    let o = run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w4a16-asym"]);
    ok(&o);
    let d = dir.path().join("d");
    ok(&run(&["decompress", s(&out), "-o", s(&d)]));
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let back: Vec<f32> = st
        .tensor("l.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(
        back.iter().all(|x| x.is_finite()),
        "NaN/inf after decompress"
    );
    // The extremes come back within half a step of the 16-level grid.
    let step = (6.0e38f64 / 15.0) as f32;
    assert!(
        (back[0] + 3.0e38).abs() <= step / 2.0 * 1.001,
        "{}",
        back[0]
    );
    assert!(
        (back[127] - 3.0e38).abs() <= step / 2.0 * 1.001,
        "{}",
        back[127]
    );
}

// 9. --force replaces only an earlier output.
#[test]
fn force_refuses_a_folder_that_is_not_an_earlier_output() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("thesis.docx"), "chapter one").unwrap();
    std::fs::write(docs.join("notes.txt"), "remember").unwrap();
    let before = snapshot(&docs);
    let run_to = |out: &Path| {
        run(&[
            "quantize",
            s(&m),
            "-o",
            s(out),
            "--scheme",
            "w8a16",
            "--force",
        ])
    };
    refused(&run_to(&docs), &["docs", "notes.txt", "thesis.docx"]);
    assert_eq!(snapshot(&docs), before, "the folder was touched");
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, "pdf").unwrap();
    refused(&run_to(&file), &["report.pdf", "is a file"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"pdf");
    // An earlier output is replaced.
    let out = dir.path().join("q");
    ok(&run_to(&out));
    ok(&run_to(&out));
    only(dir.path(), &["m", "docs", "report.pdf", "q"]);
}

// 10. A single-file output never replaces an input.
#[test]
fn a_single_file_output_never_overwrites_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let before = snapshot(&m);
    let shard = m.join("model-00002-of-00002.safetensors");
    refused(
        &run(&["calibration", s(&m), "-o", s(&shard), "--force"]),
        &["model-00002-of-00002.safetensors", "input"],
    );
    let data = repo_root().join("assets/digits.csv.gz");
    let copy = dir.path().join("digits.csv.gz");
    std::fs::copy(&data, &copy).unwrap();
    let o = run(&[
        "train",
        "--data",
        s(&copy),
        "--hidden",
        "8",
        "--epochs",
        "1",
        "-o",
        s(&copy),
        "--force",
    ]);
    refused(&o, &["digits.csv.gz", "input"]);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&data).unwrap());
    assert_eq!(snapshot(&m), before);
}

// 12. The smaller traps.
#[test]
fn probe_rows_zero_and_negative_group_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let out = dir.path().join("q");
    for args in [
        vec!["--scheme", "w8a16", "--validate", "--probe-rows", "0"],
        vec!["--scheme", "w4a16", "--group-size", "-1"],
        vec!["--scheme", "w4a16", "--group-size", "0"],
    ] {
        let mut full = vec!["quantize", s(&m), "-o", s(&out)];
        full.extend(args);
        let o = run(&full);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains("at least 1"), "{e}");
    }
    only(dir.path(), &["m"]);
}

#[test]
fn quantizing_nothing_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let o = run(&[
        "quantize",
        s(&m),
        "-o",
        s(&dir.path().join("q")),
        "--scheme",
        "w8a16",
        "--exclude",
        "*",
    ]);
    ok(&o);
    assert!(
        stderr(&o).contains("no tensor is selected"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn stats_of_large_finite_values_are_finite() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vec<f32> = (0..4096)
        .map(|i| if i % 2 == 0 { 1e30 } else { -3e30 })
        .collect();
    let m = one_layer(dir.path(), "m", 4, 1024, &v);
    let o = run(&["inspect", s(&m), "--stats", "--json"]);
    ok(&o);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = doc.to_string();
    let stats = &doc["tensors"][0]["stats"];
    let mean = stats["mean"].as_f64().unwrap_or(f64::NAN);
    let std = stats["std"].as_f64().unwrap_or(f64::NAN);
    assert!((mean + 1e30).abs() < 1e24, "mean {mean}: {text}");
    assert!((std - 2e30).abs() < 1e24, "std {std}: {text}");
}

// Issue 17: a group size that does not divide a layer offers a way forward.
#[test]
fn a_group_size_that_does_not_divide_names_those_that_do_and_auto_picks_one() {
    let dir = tempfile::tempdir().unwrap();
    let m = one_layer(dir.path(), "m", 4, 576, &values(4 * 576));
    let out = dir.path().join("q");
    let line = refused(
        &run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w4a16"]),
        &["l.weight", "128", "576"],
    );
    assert!(
        line.contains("64 or 32") && line.contains("--group-size auto"),
        "{line}"
    );
    let o = run(&[
        "quantize",
        s(&m),
        "-o",
        s(&out),
        "--scheme",
        "w4a16",
        "--group-size",
        "auto",
        "--json",
    ]);
    ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["group_size"], 64, "the report states the group");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let groups = &config["quantization_config"]["config_groups"];
    let g = groups.as_object().unwrap().values().next().unwrap();
    assert_eq!(g["weights"]["group_size"], 64, "{config}");
}

// The same through a recipe: `group_size = "auto"` (what the shipped
// recipe says, so it works on 576-wide models too); another word is
// refused naming the recipe.
#[test]
fn a_recipe_group_size_may_be_auto() {
    let dir = tempfile::tempdir().unwrap();
    let m = one_layer(dir.path(), "m", 4, 576, &values(4 * 576));
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        "[quantize]\nscheme = \"w4a16\"\ngroup_size = \"auto\"\n",
    )
    .unwrap();
    let out = dir.path().join("q");
    let o = run(&[
        "compress",
        s(&m),
        "-o",
        s(&out),
        "--recipe",
        s(&recipe),
        "--json",
    ]);
    ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["group_size"], 64);
    std::fs::write(
        &recipe,
        "[quantize]\nscheme = \"w4a16\"\ngroup_size = \"big\"\n",
    )
    .unwrap();
    refused(
        &run(&[
            "compress",
            s(&m),
            "-o",
            s(&dir.path().join("q2")),
            "--recipe",
            s(&recipe),
        ]),
        &["r.toml"],
    );
}
