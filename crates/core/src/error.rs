//! The one error type of shears-core. Every variant names the file and, where
//! there is one, the tensor, so the CLI can print a single useful line.

use std::path::PathBuf;

/// Errors raised by checkpoint I/O, tensor views and the CPU kernels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while touching a file.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A safetensors header, index or config that does not hold together.
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// A tensor whose description or bytes are unusable.
    #[error("{}: tensor '{tensor}': {reason}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// A request that cannot be carried out on these inputs (wrong dtype,
    /// wrong shape), raised by kernels that have no file at hand.
    #[error("{0}")]
    Invalid(String),
    /// A failure inside a compute backend (for example the GPU).
    #[error("{backend} backend: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }

    /// A format error on `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A tensor error on `path` / `tensor`.
    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for shears-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
