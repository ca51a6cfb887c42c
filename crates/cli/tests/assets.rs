//! The committed assets are exactly what their documented command makes.

mod common;

use common::{repo_root, run};
use shears_core::Checkpoint;

#[test]
fn assets_match_their_generator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-llama");
    let res = run(&["generate", out.to_str().unwrap(), "--shard-size", "3MB"]);
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let shipped = repo_root().join("assets/tiny-llama");
    let mut names: Vec<_> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut made: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    made.sort();
    assert_eq!(names, made);
    for n in names {
        let a = std::fs::read(shipped.join(&n)).unwrap();
        let b = std::fs::read(out.join(&n)).unwrap();
        assert!(
            a == b,
            "{} differs from a fresh generation",
            n.to_string_lossy()
        );
    }
    let ckpt = Checkpoint::open(&shipped).unwrap();
    assert_eq!(ckpt.shards.len(), 2);
    assert_eq!(ckpt.tensors.len(), 21);
}
