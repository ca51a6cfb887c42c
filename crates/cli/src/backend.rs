//! Turning `--backend` into a compute backend, and saying which one runs.

use anyhow::Result;
use shears_core::fast::importance::FastCpu;
use shears_core::reference::importance::Importance;
use shears_kernels::{DeviceType, GpuContext, GpuImportance};

use crate::args::BackendChoice;

/// The backend a command computes on.
pub enum Backend {
    Cpu,
    Gpu(Box<GpuContext>),
}

impl Backend {
    /// Opens the backend `choice` asks for. `auto` takes a hardware GPU
    /// when one exists; a software adapter (lavapipe, llvmpipe) is slower
    /// than the CPU path, so it runs only when asked for with `gpu`.
    pub fn open(choice: BackendChoice) -> Result<Self> {
        match choice {
            BackendChoice::Cpu => Ok(Backend::Cpu),
            BackendChoice::Gpu => {
                let ctx = GpuContext::new()?;
                tracing::info!("backend: GPU {}", ctx.describe());
                Ok(Backend::Gpu(Box::new(ctx)))
            }
            BackendChoice::Auto => match shears_kernels::pick_adapter() {
                Ok(adapter) if adapter.get_info().device_type != DeviceType::Cpu => {
                    let ctx = GpuContext::from_adapter(adapter)?;
                    tracing::info!("backend: GPU {}", ctx.describe());
                    Ok(Backend::Gpu(Box::new(ctx)))
                }
                Ok(adapter) => {
                    tracing::info!(
                        "backend: CPU ({} threads); the only adapter is the software one '{}' (--backend gpu uses it)",
                        rayon_threads(),
                        adapter.get_info().name
                    );
                    Ok(Backend::Cpu)
                }
                Err(e) => {
                    tracing::info!("backend: CPU ({} threads); {e}", rayon_threads());
                    Ok(Backend::Cpu)
                }
            },
        }
    }

    /// The importance family on this backend.
    pub fn importance(&self) -> Box<dyn Importance + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuImportance::new(ctx)),
        }
    }

    /// "cpu" or "gpu: <adapter>", for reports.
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => format!("cpu ({} threads)", rayon_threads()),
            Backend::Gpu(ctx) => format!("gpu: {}", ctx.describe()),
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
