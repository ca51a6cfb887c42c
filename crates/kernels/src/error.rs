//! The error type of shears-kernels.

/// Errors raised while setting up or driving the GPU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched (or none exists).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },
    /// A shader failed to compile or a pipeline failed to build.
    #[error("shader {shader}: {message}")]
    Shader { shader: String, message: String },
    /// A wgpu call failed at run time (validation, out of memory, lost device).
    #[error("GPU {what}: {message}")]
    Runtime { what: String, message: String },
    /// The input cannot be processed on this device.
    #[error("{0}")]
    Unsupported(String),
    /// An error from shears-core (for example a non-float dtype).
    #[error(transparent)]
    Core(#[from] shears_core::Error),
}

impl From<Error> for shears_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(inner) => inner,
            other => shears_core::Error::Backend {
                backend: "gpu",
                message: other.to_string(),
            },
        }
    }
}

/// Result alias for shears-kernels.
pub type Result<T, E = Error> = std::result::Result<T, E>;
