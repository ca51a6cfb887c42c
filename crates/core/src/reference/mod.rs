//! CPU references: the specification of every kernel family, plain and
//! single-threaded. The GPU and the fast CPU path must agree with them.

/// The CPU reference backend: the plain, single-threaded specification
/// of every kernel family (importance, select, mask, matmul, quant), one
/// type implementing each family's trait.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reference;

pub mod block_train;
pub mod forward;
pub mod fp4;
pub mod fp8;
pub mod gguf;
pub mod gram;
pub mod hessian;
pub mod imatrix;
pub mod importance;
pub mod kquants;
pub mod mask;
pub mod matmul;
pub mod quant;
pub mod score;
pub mod select;
pub mod train;
