//! Turning `--backend` into a compute backend, and saying which one runs.

use anyhow::Result;
use shears_core::fast::FastCpu;
use shears_core::ops::float::FloatQuant;
use shears_core::ops::quant::Quant;
use shears_core::reference::forward::Forward;
use shears_core::reference::{
    importance::Importance, mask::Mask, matmul::Matmul, select::Select, Reference,
};
use shears_core::train::block_device::BlockOps;
use shears_kernels::{
    DeviceType, GpuContext, GpuFloat, GpuForward, GpuImportance, GpuMask, GpuMatmul, GpuQuant,
    GpuSelect, GpuTrain,
};

use crate::args::BackendChoice;

/// Work that runs on any training backend (`shears train`, `distill`,
/// `evaluate`): the backend picks the [`Device`] and calls `run`.
pub trait OnDevice {
    type Output;
    /// Runs the job on `dev` (every training device has the block
    /// operations too).
    fn run<D: BlockOps>(self, dev: &D) -> Result<Self::Output>;
}

/// The families `--verify` recomputes with ([`Backend::verifier`]).
pub struct Verifier {
    pub select: Box<dyn Select>,
    pub mask: Box<dyn Mask>,
    pub quant: Box<dyn Quant>,
    pub float: Box<dyn FloatQuant>,
    /// GPTQ / SparseGPT: agreement within the family's tolerances, not bytes.
    pub hessian: Box<dyn shears_core::reference::hessian::Hessian>,
}

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

    /// The select family on this backend.
    pub fn select(&self) -> Box<dyn Select + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuSelect::new(ctx)),
        }
    }

    /// The mask family on this backend.
    pub fn mask(&self) -> Box<dyn Mask + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuMask::new(ctx)),
        }
    }

    /// The matmul family on this backend.
    pub fn matmul(&self) -> Box<dyn Matmul + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuMatmul::new(ctx)),
        }
    }

    /// The forward family on this backend.
    pub fn forward(&self) -> Box<dyn Forward + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuForward::new(ctx)),
        }
    }

    /// The hessian family (GPTQ, SparseGPT): XᵀX, the factor and the sweep.
    /// On a GPU all three run in WGSL but unstructured SparseGPT's sweep,
    /// which runs on the fast CPU path.
    pub fn hessian(&self) -> Box<dyn shears_core::reference::hessian::Hessian + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(shears_kernels::hessian::GpuHessian::new(ctx)),
        }
    }

    /// GGUF blocks of `w` on this backend (ggml's reference numerics,
    /// byte-identical on every backend), weighted by one importance per
    /// column when given (llama.cpp's importance matrix; Q8_0 takes none).
    pub fn quantize_gguf(
        &self,
        w: &shears_core::TensorView,
        kind: shears_core::reference::gguf::GgufType,
        importance: Option<&[f32]>,
    ) -> anyhow::Result<Vec<u8>> {
        use shears_core::fast::quant::{quantize_gguf, quantize_gguf_weighted};
        use shears_core::reference::gguf::GgufType;
        // Q8_0 takes no importances (the CPU's weighted path ignores them).
        let weighs = kind != GgufType::Q8_0;
        Ok(match (self, importance) {
            (Backend::Gpu(ctx), Some(q)) if weighs => {
                GpuQuant::new(ctx).quantize_gguf_weighted(w, kind, q)?.bytes
            }
            (_, Some(q)) => quantize_gguf_weighted(w, kind, q)?,
            (Backend::Cpu, None) => quantize_gguf(w, kind)?,
            (Backend::Gpu(ctx), None) => GpuQuant::new(ctx).quantize_gguf(w, kind)?,
        })
    }

    /// The quant family on this backend.
    pub fn quant(&self) -> Box<dyn Quant + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuQuant::new(ctx)),
        }
    }

    /// The float-quant family (FP8, NVFP4, MXFP4) on this backend.
    pub fn float(&self) -> Box<dyn FloatQuant + '_> {
        match self {
            Backend::Cpu => Box::new(FastCpu),
            Backend::Gpu(ctx) => Box::new(GpuFloat::new(ctx)),
        }
    }

    /// What `--verify` compares against: the plain CPU reference when the
    /// fast CPU path runs, the fast CPU path (held to the reference by the
    /// tests) when the GPU runs.
    pub fn verifier(&self) -> Verifier {
        match self {
            Backend::Cpu => Verifier {
                select: Box::new(Reference),
                mask: Box::new(Reference),
                quant: Box::new(Reference),
                float: Box::new(Reference),
                hessian: Box::new(Reference),
            },
            Backend::Gpu(_) => Verifier {
                select: Box::new(FastCpu),
                mask: Box::new(FastCpu),
                quant: Box::new(FastCpu),
                float: Box::new(FastCpu),
                hessian: Box::new(FastCpu),
            },
        }
    }

    /// Runs a training job on this backend's training device: the fast
    /// CPU path, or the GPU (`shaders/train.wgsl`).
    pub fn train<J: OnDevice>(&self, job: J) -> Result<J::Output> {
        match self {
            Backend::Cpu => job.run(&FastCpu),
            Backend::Gpu(ctx) => job.run(&GpuTrain::new(ctx)),
        }
    }

    /// The GPU context, when this backend is a GPU.
    pub fn gpu(&self) -> Option<&GpuContext> {
        match self {
            Backend::Cpu => None,
            Backend::Gpu(ctx) => Some(ctx),
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
