//! Output formats that inference runtimes load.

pub mod compressed_tensors;
