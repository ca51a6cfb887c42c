//! `model.safetensors.index.json` on arbitrary bytes, beside two small
//! valid shards: opening the folder succeeds only when the index accounts
//! for every shard and names every tensor, and never panics.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shears_core::checkpoint::{Checkpoint, INDEX_FILE};

fn shard(name: &str) -> Vec<u8> {
    let header = format!(r#"{{"{name}":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0u8; 8]);
    b
}

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("shears-fuzz-index-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.safetensors"), shard("x")).unwrap();
        std::fs::write(d.join("b.safetensors"), shard("y")).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    std::fs::write(dir.join(INDEX_FILE), data).unwrap();
    if let Ok(ck) = Checkpoint::open(dir) {
        // Accepted: both shards, both tensors.
        assert_eq!(ck.shards.len(), 2);
        assert_eq!(ck.tensors.len(), 2);
    }
});
