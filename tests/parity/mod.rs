//! Parity tests written once: a property is stated against the CPU
//! reference for a backend's families, and [`Backends::trials`] runs it on
//! every backend present — the fast CPU path, the GPU, and the GPU with its
//! chunk forced small — as one trial each. Without an adapter the GPU
//! trials are reported as ignored, never as passed; `SHEARS_REQUIRE_GPU=1`
//! makes them fail instead.

#![allow(dead_code)]

use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use shears::core::fast::FastCpu;
use shears::core::ops::float::FloatQuant;
use shears::core::ops::quant::Quant;
use shears::core::reference::importance::Importance;
use shears::core::reference::mask::Mask;
use shears::core::reference::matmul::Matmul;
use shears::core::reference::select::Select;
use shears::kernels::{
    GpuContext, GpuFloat, GpuImportance, GpuMask, GpuMatmul, GpuQuant, GpuSelect,
};
use shears::testing::test_gpu;

/// Bytes of one GPU chunk in the small-chunk backend: a few hundred
/// elements, so every tensor spans several chunks.
pub const SMALL_CHUNK_BYTES: u64 = 1024;

/// The kernel families of one backend, as their traits.
pub struct Families<'a> {
    /// "fast", "gpu" or "gpu_small_chunk".
    pub name: &'static str,
    pub importance: Box<dyn Importance + 'a>,
    pub select: Box<dyn Select + 'a>,
    pub mask: Box<dyn Mask + 'a>,
    pub matmul: Box<dyn Matmul + 'a>,
    pub quant: Box<dyn Quant + 'a>,
    pub float: Box<dyn FloatQuant + 'a>,
    /// The GPU context, for properties about chunking or its limits.
    pub gpu: Option<&'a GpuContext>,
}

impl<'a> Families<'a> {
    fn fast() -> Families<'static> {
        Families {
            name: "fast",
            importance: Box::new(FastCpu),
            select: Box::new(FastCpu),
            mask: Box::new(FastCpu),
            matmul: Box::new(FastCpu),
            quant: Box::new(FastCpu),
            float: Box::new(FastCpu),
            gpu: None,
        }
    }

    fn gpu(name: &'static str, ctx: &'a GpuContext) -> Families<'a> {
        Families {
            name,
            importance: Box::new(GpuImportance::new(ctx)),
            select: Box::new(GpuSelect::new(ctx)),
            mask: Box::new(GpuMask::new(ctx)),
            matmul: Box::new(GpuMatmul::new(ctx)),
            quant: Box::new(GpuQuant::new(ctx)),
            float: Box::new(GpuFloat::new(ctx)),
            gpu: Some(ctx),
        }
    }
}

/// Whether a GPU backend must refuse rows of `row_bytes`: every GPU kernel
/// keeps a whole row (plus a 4-byte header) inside one binding, and says so
/// ("larger than one GPU binding") when it cannot.
pub fn refuses_row(fam: &Families, row_bytes: usize) -> bool {
    fam.gpu
        .is_some_and(|ctx| row_bytes + 4 > ctx.chunk_bytes() as usize)
}

/// Checks that `r` is the clear refusal of a row wider than one binding.
pub fn expect_row_refusal<T: std::fmt::Debug, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<(), Failed> {
    match r {
        Err(e) if e.to_string().contains("larger than one GPU binding") => Ok(()),
        Err(e) => Err(format!("expected a 'larger than one GPU binding' error, got {e}").into()),
        Ok(v) => Err(format!("expected a 'larger than one GPU binding' error, got {v:?}").into()),
    }
}

type Gpus = Result<Option<Arc<(GpuContext, GpuContext)>>, String>;

/// Every backend a parity property runs on.
#[derive(Clone)]
pub struct Backends {
    gpu: Gpus,
}

impl Backends {
    /// The fast CPU path and, when an adapter opens, the GPU twice (its own
    /// chunk size, and [`SMALL_CHUNK_BYTES`]).
    pub fn open() -> Self {
        let gpu = test_gpu().map(|c| {
            c.map(|ctx| {
                let small = GpuContext::new()
                    .expect("a second context on the same adapter")
                    .with_chunk_bytes(SMALL_CHUNK_BYTES);
                Arc::new((ctx, small))
            })
        });
        Backends { gpu }
    }

    /// One trial per backend, named `<name>::<backend>`, each running
    /// `check` on that backend's families.
    pub fn trials<F>(&self, name: &str, check: F) -> Vec<Trial>
    where
        F: Fn(&Families) -> Result<(), Failed> + Clone + Send + 'static,
    {
        let mut out = Vec::new();
        let fast = check.clone();
        out.push(Trial::test(format!("{name}::fast"), move || {
            fast(&Families::fast())
        }));
        let skip = matches!(self.gpu, Ok(None));
        for small in [false, true] {
            let gpu = self.gpu.clone();
            let check = check.clone();
            let label = if small { "gpu_small_chunk" } else { "gpu" };
            out.push(
                Trial::test(format!("{name}::{label}"), move || match &gpu {
                    Err(reason) => Err(reason.clone().into()),
                    Ok(None) => Ok(()),
                    Ok(Some(pair)) => {
                        let ctx = if small { &pair.1 } else { &pair.0 };
                        check(&Families::gpu(label, ctx))
                    }
                })
                .with_ignored_flag(skip),
            );
        }
        out
    }

    /// GPU-only trials (an API the CPU backends do not share) on both GPU
    /// contexts, named `<name>::gpu` and `<name>::gpu_small_chunk`.
    pub fn gpu_trials<F>(&self, name: &str, check: F) -> Vec<Trial>
    where
        F: Fn(&GpuContext) -> Result<(), Failed> + Clone + Send + 'static,
    {
        let skip = matches!(self.gpu, Ok(None));
        [false, true]
            .into_iter()
            .map(|small| {
                let (gpu, check) = (self.gpu.clone(), check.clone());
                let label = if small { "gpu_small_chunk" } else { "gpu" };
                Trial::test(format!("{name}::{label}"), move || match &gpu {
                    Err(reason) => Err(reason.clone().into()),
                    Ok(None) => Ok(()),
                    Ok(Some(pair)) => check(if small { &pair.1 } else { &pair.0 }),
                })
                .with_ignored_flag(skip)
            })
            .collect()
    }

    /// A GPU-only trial (runtime behaviour that has no CPU counterpart).
    pub fn gpu_trial<F>(&self, name: &str, check: F) -> Trial
    where
        F: Fn(&GpuContext) -> Result<(), Failed> + Send + 'static,
    {
        let gpu = self.gpu.clone();
        let skip = matches!(gpu, Ok(None));
        Trial::test(name.to_string(), move || match &gpu {
            Err(reason) => Err(reason.clone().into()),
            Ok(None) => Ok(()),
            Ok(Some(pair)) => check(&pair.0),
        })
        .with_ignored_flag(skip)
    }
}
