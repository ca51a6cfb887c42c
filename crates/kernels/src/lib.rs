//! shears-kernels: the GPU side of shears. A [`GpuContext`] owns the device;
//! each kernel family has one module here and one WGSL file in `shaders/`,
//! and implements the same trait as its CPU reference in shears-core.

mod adapters;
pub mod chunk;
mod context;
mod error;
pub mod float;
pub mod forward;
pub mod hessian;
pub mod importance;
pub mod mask;
pub mod matmul;
pub mod quant;
mod score;
pub mod select;
pub mod source;
mod timing;
pub mod train;

pub use context::{
    backends_from_env, compute_adapters, list_adapters, parse_backends, pick_adapter,
    AdapterSummary, GpuContext, DEFAULT_WINDOW_BYTES,
};
pub use error::{Error, Result};
pub use float::GpuFloat;
pub use forward::GpuForward;
pub use importance::GpuImportance;
pub use mask::GpuMask;
pub use matmul::GpuMatmul;
pub use quant::GpuQuant;
pub use select::GpuSelect;
pub use train::{GpuBuf, GpuTrain};
pub use wgpu::DeviceType;
