//! CPU references: the specification of every kernel family, plain and
//! single-threaded. The GPU and the fast CPU path must agree with them.

pub mod gguf;
pub mod importance;
pub mod mask;
pub mod matmul;
pub mod quant;
pub mod scores;
pub mod select;
