//! Output formats that inference runtimes load.

pub mod compressed_tensors;
pub mod ct_reader;
pub mod gguf;
