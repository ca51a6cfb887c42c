//! GGUF, llama.cpp's file: `quantize --type` writes one ([`export`],
//! weighted by an importance matrix with [`imatrix`]), `decompress` turns
//! one back into a safetensors folder and
//! `inspect` lists one ([`import`]).

pub mod export;
pub mod imatrix;
pub mod import;
pub mod prune;

pub use export::{export, run, GgufJob};

/// Whether `path` is a GGUF file (by its magic).
pub fn is_gguf(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
        && &head == b"GGUF"
}
