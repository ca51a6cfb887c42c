//! The importance family on every backend (the fast CPU path, the GPU,
//! the GPU with its chunk forced small) against the CPU reference, op by
//! op, dtype by dtype, over the sizes that break kernels (1, 2, 3, 5, 7, a
//! workgroup ± 1, a tile + 1) and over chunk boundaries. Each property is
//! written once ([`parity::Backends`]); without an adapter the GPU cases
//! are reported as ignored, and `SHEARS_REQUIRE_GPU=1` makes them fail.

use libtest_mimic::{Arguments, Failed};
use shears::core::fast::FastCpu;
use shears::core::reference::importance::{Importance, Reference, TILE};
use shears::core::{Checkpoint, DType, TensorBuf};
use shears::kernels::{GpuContext, GpuImportance};
use shears::testing::test_values;

mod parity;

use parity::{Backends, Families};

#[derive(Clone, Copy, Debug)]
enum Op {
    Abs,
    Square,
    RowSumsq,
    ColSumsq,
    Stats,
}

const OPS: [Op; 5] = [Op::Abs, Op::Square, Op::RowSumsq, Op::ColSumsq, Op::Stats];

/// Compares one op on one tensor: integer-exact (bit patterns) for every
/// output, since every backend follows the reference's order of operations.
fn check(fam: &Families, op: Op, dtype: DType, shape: &[usize], seed: u64) -> Result<(), Failed> {
    let n: usize = shape.iter().product();
    let values = test_values(n, seed, true);
    let buf = TensorBuf::from_f32(dtype, shape.to_vec(), &values).map_err(|e| e.to_string())?;
    let w = buf.view();
    let gpu = fam.importance.as_ref();
    let cpu = Reference;
    let cmp = |name: &str, want: Vec<f32>, got: Vec<f32>| -> Result<(), Failed> {
        if want.len() != got.len() {
            return Err(format!(
                "{name}: {} values expected, {} returned",
                want.len(),
                got.len()
            )
            .into());
        }
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            if a.to_bits() != b.to_bits() {
                return Err(format!(
                    "{name}: index {i}: expected {a:e} ({:#010x}), got {b:e} ({:#010x}); tolerance: bit-exact",
                    a.to_bits(),
                    b.to_bits()
                )
                .into());
            }
        }
        Ok(())
    };
    let e = |e: shears::core::Error| Failed::from(e.to_string());
    let row_bytes = shape.last().copied().unwrap_or(1) * dtype.bits() / 8;
    let too_wide = fam
        .gpu
        .is_some_and(|ctx| row_bytes + 4 > ctx.chunk_bytes() as usize);
    if matches!(op, Op::RowSumsq | Op::ColSumsq) && too_wide {
        // A row that cannot fit one binding must be refused clearly.
        let got = match op {
            Op::RowSumsq => gpu.row_sumsq(&w),
            _ => gpu.col_sumsq(&w),
        };
        return match got {
            Err(err) if err.to_string().contains("larger than one GPU binding") => Ok(()),
            other => {
                Err(format!("expected a 'larger than one GPU binding' error, got {other:?}").into())
            }
        };
    }
    match op {
        Op::Abs => cmp("abs", cpu.abs(&w).map_err(e)?, gpu.abs(&w).map_err(e)?),
        Op::Square => cmp(
            "square",
            cpu.square(&w).map_err(e)?,
            gpu.square(&w).map_err(e)?,
        ),
        Op::RowSumsq => cmp(
            "row_sumsq",
            cpu.row_sumsq(&w).map_err(e)?,
            gpu.row_sumsq(&w).map_err(e)?,
        ),
        Op::ColSumsq => cmp(
            "col_sumsq",
            cpu.col_sumsq(&w).map_err(e)?,
            gpu.col_sumsq(&w).map_err(e)?,
        ),
        Op::Stats => {
            let (a, b) = (cpu.stats(&w).map_err(e)?, gpu.stats(&w).map_err(e)?);
            if a != b {
                return Err(format!("stats: expected {a:?}, got {b:?}; tolerance: exact").into());
            }
            Ok(())
        }
    }
}

/// The statistics `shears inspect --stats` prints, on the assets
/// checkpoint read through its memory map: the fast CPU path and the GPU
/// give the same figures for every tensor.
fn assets_stats_gpu_equals_cpu(ctx: &GpuContext) -> Result<(), Failed> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-llama");
    let ckpt = Checkpoint::open(&dir).map_err(|e| e.to_string())?;
    let gpu = GpuImportance::new(ctx);
    for info in &ckpt.tensors {
        let view = ckpt.view(info);
        let a = FastCpu.stats(&view).map_err(|e| e.to_string())?;
        let b = gpu.stats(&view).map_err(|e| e.to_string())?;
        if a != b {
            return Err(format!("{}: cpu {a:?} != gpu {b:?}", info.name).into());
        }
    }
    Ok(())
}

/// A shader that does not compile is reported as an error naming it, not a
/// panic or an uncaptured device error.
fn broken_shader_is_named(ctx: &GpuContext) -> Result<(), Failed> {
    let layout = ctx.layout("test: empty", &[]);
    match ctx.pipeline(
        "broken_family",
        "@compute @workgroup_size(1) fn main( {",
        "main",
        &layout,
        &[],
    ) {
        Err(e) if e.to_string().contains("shaders/broken_family.wgsl") => Ok(()),
        Err(e) => Err(format!("error does not name the shader: {e}").into()),
        Ok(_) => Err("a broken shader built a pipeline".into()),
    }
}

fn shapes() -> Vec<(&'static str, Vec<usize>)> {
    let mut out = Vec::new();
    for n in [1usize, 2, 3, 5, 7, 255, 256, 257] {
        out.push(("vec", vec![n]));
        out.push(("tall", vec![n, 3]));
        out.push(("wide", vec![3, n]));
    }
    out.push(("tile+1", vec![TILE + 1]));
    out.push(("2tiles+1", vec![2 * TILE + 1]));
    out.push(("matrix", vec![300, 33]));
    out
}

/// Shapes for the forced-small-chunk context: one chunk + 1 element, rows
/// that make chunks start mid-word for 16-bit types, many lane wraps.
fn chunk_shapes() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("255", vec![255]),
        ("256", vec![256]),
        ("257", vec![257]),
        ("511", vec![511]),
        ("513", vec![513]),
        ("tile+1", vec![TILE + 1]),
        ("1000x3", vec![1000, 3]),
        ("200x13", vec![200, 13]),
        ("37x100", vec![37, 100]),
    ]
}

fn main() {
    let args = Arguments::from_args();
    let backends = Backends::open();
    let mut trials = Vec::new();
    let mut seed = 1u64;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // Chunk-boundary shapes matter on the small-chunk GPU; every
        // backend runs every shape all the same.
        for (label, shape) in shapes().into_iter().chain(chunk_shapes()) {
            for op in OPS {
                seed += 1;
                let name = format!("importance::{op:?}::{dtype}::{label}{shape:?}");
                let (shape, s) = (shape.clone(), seed);
                trials.extend(backends.trials(&name, move |fam| check(fam, op, dtype, &shape, s)));
            }
        }
    }
    trials.push(backends.gpu_trial(
        "checkpoint::assets_stats_gpu_equals_cpu",
        assets_stats_gpu_equals_cpu,
    ));
    trials.push(backends.gpu_trial("runtime::broken_shader_is_named", broken_shader_is_named));
    libtest_mimic::run(&args, trials).exit();
}
