//! Fast CPU paths: multi-threaded versions of the references that agree with
//! them bit for bit (products, which sum in another order, within
//! `MATMUL_RTOL`). This is what `--backend cpu` runs.

/// The fast CPU backend (`--backend cpu`): multi-threaded, one type
/// implementing every kernel family's trait, equal to [`crate::reference`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FastCpu;

pub mod float;
pub mod forward;
pub mod hessian;
pub mod importance;
pub mod mask;
pub mod matmul;
pub mod quant;
pub mod score;
pub mod select;
pub mod train;
