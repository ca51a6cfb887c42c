//! The streaming writer and the reader against each other, and against the
//! reference safetensors implementation.

use std::collections::BTreeMap;
use std::path::Path;

use shears::core::checkpoint::{
    plan_shards, CheckpointWriter, Layout, OutputTensor, WriterOptions,
};
use shears::core::generate::{generate, LlamaSpec};
use shears::core::{Checkpoint, DType, TensorBuf};

fn t(name: &str, dtype: DType, shape: &[usize]) -> OutputTensor {
    OutputTensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
    }
}

fn bytes_of(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("shears-partial"))
        .collect()
}

#[test]
fn sharded_output_reads_back_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let tensors = vec![
        t("a.weight", DType::BF16, &[7, 3]),
        t("b.weight", DType::F32, &[5]),
        t("c.empty", DType::F16, &[0, 4]),
        t("d.codes", DType::I8, &[3, 3]),
        t("e.big", DType::F32, &[40]),
    ];
    let shards = plan_shards(tensors.clone(), 64).unwrap();
    assert!(shards.len() >= 3, "{shards:?}");
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut w = CheckpointWriter::create(
        &dest,
        shards,
        WriterOptions {
            metadata,
            ..Default::default()
        },
    )
    .unwrap();
    let payload: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| bytes_of(t.nbytes().unwrap(), i as u8))
        .collect();
    // Stream everything in pieces of 5 bytes that straddle tensors.
    let all: Vec<u8> = payload.concat();
    for piece in all.chunks(5) {
        w.write(piece).unwrap();
    }
    w.add_file("config.json", b"{}").unwrap();
    assert!(!dest.exists(), "nothing appears before finish");
    w.finish().unwrap();
    assert!(leftovers(dir.path()).is_empty());
    assert!(dest.join("config.json").exists());

    let ckpt = Checkpoint::open(&dest).unwrap();
    assert_eq!(ckpt.layout, Layout::Indexed);
    for (i, want) in tensors.iter().enumerate() {
        let info = ckpt.get(&want.name).unwrap();
        assert_eq!((info.dtype, &info.shape), (want.dtype, &want.shape));
        assert_eq!(ckpt.view(info).bytes(), &payload[i][..]);
    }
    // The reference implementation agrees, file by file; headers are aligned.
    for shard in &ckpt.shards {
        let bytes = std::fs::read(&shard.path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(
            (8 + n) % 8,
            0,
            "data section of {} is 8-byte aligned",
            shard.path.display()
        );
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let i = tensors.iter().position(|t| t.name == name).unwrap();
            assert_eq!(view.data(), &payload[i][..]);
        }
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        tensors.len()
    );
    assert_eq!(
        index["metadata"]["total_size"].as_u64().unwrap() as usize,
        all.len()
    );
}

#[test]
fn whole_tensor_writes_and_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("one");
    let values = [1.0f32, -2.5, 3.25];
    let buf = TensorBuf::from_f32(DType::F16, vec![3], &values).unwrap();
    let shards = plan_shards(vec![t("x", DType::F16, &[3]), t("z", DType::F32, &[0])], 0).unwrap();
    let mut w = CheckpointWriter::create(&dest, shards, WriterOptions::default()).unwrap();
    w.write_tensor("x", &buf.data).unwrap();
    w.write_tensor("z", &[]).unwrap();
    w.finish().unwrap();
    let ckpt = Checkpoint::open(dest.join("model.safetensors")).unwrap();
    assert_eq!(ckpt.layout, Layout::File);
    assert_eq!(ckpt.view(ckpt.get("x").unwrap()).to_f32().unwrap(), values);
    assert_eq!(ckpt.get("z").unwrap().numel(), 0);
}

#[test]
fn unfinished_output_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let shards = plan_shards(vec![t("a", DType::F32, &[4])], 0).unwrap();
    let mut w = CheckpointWriter::create(&dest, shards.clone(), WriterOptions::default()).unwrap();
    w.write(&[0u8; 8]).unwrap();
    drop(w); // as on an error half way
    assert!(!dest.exists());
    assert!(leftovers(dir.path()).is_empty());

    let w = CheckpointWriter::create(&dest, shards, WriterOptions::default()).unwrap();
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("'a' was never written"), "{err}");
    assert!(!dest.exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    // An earlier output: weights, a config and a side file of the input.
    std::fs::write(dest.join("model.safetensors"), b"old").unwrap();
    std::fs::write(dest.join("config.json"), b"{}").unwrap();
    std::fs::write(dest.join("tokenizer.model"), b"old").unwrap();
    let shards = plan_shards(vec![t("a", DType::U8, &[2])], 0).unwrap();
    let err = CheckpointWriter::create(&dest, shards.clone(), WriterOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(dest.join("model.safetensors")).unwrap(),
        b"old"
    );

    let opts = WriterOptions {
        force: true,
        side_files: vec!["tokenizer.model".into()],
        ..Default::default()
    };
    let mut w = CheckpointWriter::create(&dest, shards.clone(), opts.clone()).unwrap();
    w.write(&[1, 2]).unwrap();
    w.finish().unwrap();
    assert!(!dest.join("tokenizer.model").exists());
    assert_ne!(
        std::fs::read(dest.join("model.safetensors")).unwrap(),
        b"old"
    );
    assert!(leftovers(dir.path()).is_empty());

    // Not an earlier output: --force refuses, naming what the folder holds.
    std::fs::write(dest.join("keep"), b"mine").unwrap();
    let err = CheckpointWriter::create(&dest, shards, opts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("keep") && err.contains("earlier output"),
        "{err}"
    );
    assert_eq!(std::fs::read(dest.join("keep")).unwrap(), b"mine");
}

#[test]
fn the_input_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model");
    std::fs::create_dir(&input).unwrap();
    let shards = plan_shards(vec![t("a", DType::U8, &[2])], 0).unwrap();
    for dest in [
        input.clone(),
        input.join("inside"),
        dir.path().to_path_buf(),
    ] {
        let opts = WriterOptions {
            force: true,
            protected: vec![input.clone()],
            ..Default::default()
        };
        let err = CheckpointWriter::create(&dest, shards.clone(), opts)
            .err()
            .unwrap_or_else(|| panic!("{} accepted", dest.display()))
            .to_string();
        assert!(err.contains("input"), "{err}");
    }
    assert!(input.exists());
}

#[test]
fn generator_is_deterministic_and_independent_of_sharding() {
    let dir = tempfile::tempdir().unwrap();
    let spec = LlamaSpec {
        hidden: 64,
        intermediate: 96,
        layers: 1,
        vocab: 50,
        head_dim: 32,
        ..Default::default()
    };
    let a = generate(&spec, &dir.path().join("a"), 20_000, false, &|_| {}).unwrap();
    let b = generate(&spec, &dir.path().join("b"), 0, false, &|_| {}).unwrap();
    let (a, b) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    assert!(a.shards.len() > 1 && b.shards.len() == 1);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ta in &a.tensors {
        let tb = b.get(&ta.name).unwrap();
        assert_eq!(a.view(ta).bytes(), b.view(tb).bytes(), "{}", ta.name);
    }
    assert!(a.extra_files.iter().any(|p| p.name == "config.json"));
    let other = generate(
        &LlamaSpec { seed: 1, ..spec },
        &dir.path().join("c"),
        0,
        false,
        &|_| {},
    )
    .unwrap();
    let c = Checkpoint::open(other).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    assert_ne!(
        a.view(a.get(name).unwrap()).bytes(),
        c.view(c.get(name).unwrap()).bytes()
    );
}

#[test]
fn folder_without_index() {
    let dir = tempfile::tempdir().unwrap();
    for (file, name) in [("x.safetensors", "p"), ("y.safetensors", "q")] {
        let dest = dir.path().join(format!("tmp-{name}"));
        let shards = plan_shards(vec![t(name, DType::U8, &[1])], 0).unwrap();
        let mut w = CheckpointWriter::create(&dest, shards, WriterOptions::default()).unwrap();
        w.write(&[7]).unwrap();
        w.finish().unwrap();
        std::fs::rename(dest.join("model.safetensors"), dir.path().join(file)).unwrap();
        std::fs::remove_dir(&dest).unwrap();
    }
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.layout, Layout::Folder);
    assert_eq!(ckpt.tensors.len(), 2);
}
