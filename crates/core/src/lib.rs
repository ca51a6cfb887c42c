//! shears-core: dtypes, tensor buffers, checkpoint I/O and the CPU reference
//! kernels of shears. Nothing here depends on a GPU.

pub mod calibration;
pub mod checkpoint;
mod dtype;
mod error;
pub mod fast;
pub mod formats;
pub mod generate;
pub mod model;
pub mod ops;
pub mod reference;
mod tensor;
pub mod train;

pub use checkpoint::{Checkpoint, TensorInfo};
pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor::{checked_numel, decode_f32, encode_f32, NonFinite, TensorBuf, TensorView};
