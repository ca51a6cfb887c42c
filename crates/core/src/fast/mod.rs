//! Fast CPU paths: multi-threaded versions of the references that agree with
//! them bit for bit (products, which sum in another order, within
//! `MATMUL_RTOL`). This is what `--backend cpu` runs.

pub mod importance;
pub mod keys;
pub mod mask;
pub mod matmul;
pub mod quant;
pub mod select;
pub mod train;
