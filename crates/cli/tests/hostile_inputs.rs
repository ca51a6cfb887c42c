//! What an attacker or an unlucky user feeds shears, part 1: links out of
//! the model folder, indexes that forget shards, configs that are not
//! objects, single-file inputs, unbounded files. Each case is refused with
//! one line and exit 2 (nothing written, input unchanged) or handled; none
//! leaks, drops a tensor silently, or panics. Part 2 is hostile_outputs.rs.

mod common;

use common::*;

// 1. Side files that are links resolve only inside the folder (or the
// Hugging Face cache's blobs/); nothing else is copied into the output.
#[cfg(unix)]
#[test]
fn links_out_of_the_model_folder_are_not_copied() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    std::fs::write(dir.path().join("secret.txt"), "HF_TOKEN=hf_secret_value").unwrap();
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    symlink("../secret.txt", m.join("tokenizer.json")).unwrap();
    symlink("/proc/self/environ", m.join("special_tokens_map.json")).unwrap();
    std::fs::write(m.join("generation_config.json"), "{}").unwrap();
    symlink("generation_config.json", m.join("alias.json")).unwrap();
    let out = dir.path().join("q");
    let o = run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w8a16"]);
    ok(&o);
    let e = stderr(&o);
    assert!(
        e.contains("tokenizer.json") && e.contains("special_tokens_map.json"),
        "each skipped link is named: {e}"
    );
    assert!(!out.join("tokenizer.json").exists());
    assert!(!out.join("special_tokens_map.json").exists());
    assert!(
        out.join("alias.json").is_file(),
        "a link inside the folder still works"
    );
    for f in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("hf_secret_value"));
    }
}

#[cfg(unix)]
#[test]
fn a_hugging_face_cache_snapshot_of_links_into_blobs_works() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("assets/tiny-llama");
    let repo = dir.path().join("hub/models--org--tiny");
    let snap = repo.join("snapshots/0123abc");
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    for (i, e) in std::fs::read_dir(src).unwrap().enumerate() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(format!("blob{i}"))).unwrap();
        symlink(format!("../../blobs/blob{i}"), snap.join(e.file_name())).unwrap();
    }
    let out = dir.path().join("q");
    ok(&run(&[
        "quantize",
        s(&snap),
        "-o",
        s(&out),
        "--scheme",
        "w8a16",
    ]));
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("quantization_config"));
    assert!(out.join("model.safetensors.index.json").is_file());
}

#[cfg(unix)]
#[test]
fn a_shard_linked_from_outside_is_refused() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let shard = "model-00002-of-00002.safetensors";
    std::fs::rename(m.join(shard), dir.path().join(shard)).unwrap();
    symlink(dir.path().join(shard), m.join(shard)).unwrap();
    let out = dir.path().join("q");
    refused(
        &run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w8a16"]),
        &[shard, "outside the model folder"],
    );
    assert!(!out.exists());
}

// 2. An index must account for every shard of the folder and name tensors.
#[test]
fn an_index_that_forgets_a_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let index_path = m.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    map.retain(|_, f| f != "model-00002-of-00002.safetensors");
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = dir.path().join("q");
    refused(
        &run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w8a16"]),
        &["model-00002-of-00002.safetensors", "index"],
    );
    assert!(!out.exists());
}

#[test]
fn an_index_naming_no_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let index_path = m.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    for bad in [
        r#"{"metadata":{},"weight_map":{}}"#.to_string(),
        // A duplicate key: the last value wins, as in every JSON reader.
        text.trim_end().trim_end_matches('}').to_string() + r#", "weight_map": {}}"#,
    ] {
        std::fs::write(&index_path, &bad).unwrap();
        refused(
            &run(&[
                "quantize",
                s(&m),
                "-o",
                s(&dir.path().join("q")),
                "--scheme",
                "w8a16",
            ]),
            &["model.safetensors.index.json"],
        );
    }
}

// 5. A single file (or a folder without config.json) still gets a config
// that says how its quantized tensors are stored.
#[test]
fn a_single_file_input_gets_a_quantization_config() {
    let dir = tempfile::tempdir().unwrap();
    let m = one_layer(dir.path(), "m", 4, 128, &values(512));
    let out = dir.path().join("q");
    let o = run(&[
        "quantize",
        s(&m.join("model.safetensors")),
        "-o",
        s(&out),
        "--scheme",
        "w4a16",
    ]);
    ok(&o);
    assert!(stderr(&o).contains("no config.json"), "{}", stderr(&o));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["format"], "pack-quantized");
    ok(&run(&[
        "decompress",
        s(&out),
        "-o",
        s(&dir.path().join("d")),
    ]));
}

// 6. config.json is checked before any work.
#[test]
fn a_config_that_is_not_an_object_is_refused_before_any_work() {
    for bad in ["[]", "1", "\"str\"", "true", "{"] {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny_llama(dir.path(), "m");
        std::fs::write(m.join("config.json"), bad).unwrap();
        let out = dir.path().join("q");
        refused(
            &run(&["quantize", s(&m), "-o", s(&out), "--scheme", "w8a16"]),
            &["config.json"],
        );
        only(dir.path(), &["m"]);
    }
}

// 11. Small files are read with a bound.
#[test]
fn recipes_are_read_with_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    let out = dir.path().join("q");
    refused(
        &run(&["compress", s(&m), "-o", s(&out), "--recipe", "/dev/zero"]),
        &["/dev/zero", "not a regular file"],
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(3 << 20)).unwrap();
    refused(
        &run(&["compress", s(&m), "-o", s(&out), "--recipe", s(&big)]),
        &["big.toml", "larger than"],
    );
    let huge_config = tiny_llama(dir.path(), "m2");
    let f = std::fs::File::create(huge_config.join("config.json")).unwrap();
    f.set_len(64 << 20).unwrap();
    refused(
        &run(&[
            "quantize",
            s(&huge_config),
            "-o",
            s(&out),
            "--scheme",
            "w8a16",
        ]),
        &["config.json", "larger than"],
    );
}

#[test]
fn the_readme_recipe_include_line_sits_where_it_is_accepted() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("```toml").expect("a recipe in the README");
    let block = &readme[start + 7..];
    let block = &block[..block.find("```").unwrap()];
    // Uncommenting every commented key must still give a valid recipe
    // (each key under the table that accepts it).
    let uncommented: String = block
        .lines()
        .map(|l| l.trim_start().strip_prefix("# ").unwrap_or(l))
        .filter(|l| l.contains('=') || l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        // The example's calibration file, made real.
        .replace(
            "calib.safetensors",
            repo_root()
                .join("assets/tiny-llama-calibration.safetensors")
                .to_str()
                .unwrap(),
        );
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, &uncommented).unwrap();
    let m = tiny_llama(dir.path(), "m");
    let o = run(&[
        "compress",
        s(&m),
        "-o",
        s(&dir.path().join("q")),
        "--recipe",
        s(&recipe),
        "--dry-run",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "recipe:\n{uncommented}\n{}",
        stderr(&o)
    );
}

// Issue 17: subfolders of the model folder (sentence-transformers keeps
// its pooling and normalisation there) are carried over, under the same
// link policy.
#[cfg(unix)]
#[test]
fn subfolders_are_carried_over_and_links_in_them_checked() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_llama(dir.path(), "m");
    std::fs::write(m.join("modules.json"), r#"[{"idx":0,"path":""}]"#).unwrap();
    std::fs::create_dir(m.join("1_Pooling")).unwrap();
    std::fs::write(
        m.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension":256}"#,
    )
    .unwrap();
    std::fs::create_dir(m.join("2_Normalize")).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "token").unwrap();
    symlink("../../secret.txt", m.join("1_Pooling/leak.txt")).unwrap();
    let out = dir.path().join("q");
    for _ in 0..2 {
        let o = run(&[
            "quantize",
            s(&m),
            "-o",
            s(&out),
            "--scheme",
            "w8a16",
            "--force",
        ]);
        ok(&o);
    }
    assert_eq!(
        std::fs::read(out.join("1_Pooling/config.json")).unwrap(),
        std::fs::read(m.join("1_Pooling/config.json")).unwrap()
    );
    assert!(out.join("2_Normalize").is_dir());
    assert!(out.join("modules.json").is_file());
    assert!(
        !out.join("1_Pooling/leak.txt").exists(),
        "a link out of the folder was copied"
    );
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("quantization_config"));
}
