//! The hessian family's own linear algebra on the GPU (shaders/factor.wgsl)
//! against the CPU: the Gram sums XᵀX against the reference's f64 sums
//! (within GRAM_RTOL of the largest diagonal entry), and the factor U of
//! the damped inverse Hessian against the reference's f64 factor and the
//! fast path's f32 one (within FACTOR_RTOL of U's largest entry), on the
//! golden forward models' XᵀX and on random ill-conditioned ones with dead
//! inputs, one to many panels, both panel widths, with and without
//! activation order; a GPTQ sweep run on the GPU's own factor agrees with
//! the fast path as gpu_hessian.rs states. A matrix that is not positive
//! definite is refused as on the CPU. Reported as ignored without an
//! adapter; `SHEARS_REQUIRE_GPU=1` fails.

use std::path::PathBuf;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears::core::fast::FastCpu;
use shears::core::reference::gram::{gram_difference, GRAM_RTOL};
use shears::core::reference::hessian::{ActOrder, GroupScales, Hessian, Job, QuantJob};
use shears::core::reference::quant::{QuantSpec, Rounding};
use shears::core::reference::Reference;
use shears::core::{Checkpoint, DType};
use shears::kernels::hessian::GpuHessian;
use shears::kernels::GpuContext;
use shears::testing::{correlated_inputs, test_gpu};

/// Largest difference of U's entries allowed between backends, relative to
/// U's largest entry. The f32 factors round differently from the f64
/// reference and from each other; measured here at most 3.3e-5 (GPU vs
/// reference) and 4.4e-5 (GPU vs fast path), on the golden down_proj.
const FACTOR_RTOL: f64 = 5e-4;

/// Correlated inputs with the `dead` inputs zero.
fn inputs(tokens: usize, n: usize, dead: &[usize], seed: u64) -> Vec<f32> {
    let mut x = correlated_inputs(tokens, n, seed);
    for row in x.chunks_mut(n) {
        for &d in dead {
            row[d] = 0.0;
        }
    }
    x
}

/// XᵀX by the fast path.
fn gram_of(x: &[f32], tokens: usize, n: usize) -> Vec<f32> {
    let mut g = FastCpu.gram(n).unwrap();
    g.add(x, tokens).unwrap();
    g.finish().unwrap()
}

fn golden_grams() -> Vec<(String, Vec<f32>)> {
    let mut v = Vec::new();
    for family in ["llama", "llama3-tied", "mistral", "qwen2", "qwen3"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/forward")
            .join(family);
        let exp = Checkpoint::open(dir.join("expected.safetensors")).unwrap();
        for t in exp.tensors.iter().filter(|t| {
            t.name.contains("layers.0.")
                && (t.name.contains("q_proj") || t.name.contains("down_proj"))
                && t.name.ends_with("input_gram")
        }) {
            v.push((
                format!("{family} {}", t.name),
                exp.view(t).to_f32().unwrap(),
            ));
        }
    }
    v
}

/// Largest |a − b| over the largest |a|.
fn difference(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    let d = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max);
    d / scale.max(f64::MIN_POSITIVE)
}

/// U on the GPU against the reference and the fast path, and a GPTQ sweep
/// on it against the fast path's.
fn check_factor(
    ctx: &GpuContext,
    gram: &[f32],
    order: ActOrder,
    panel: usize,
) -> Result<(), Failed> {
    let n = gram.len().isqrt();
    let gpu = GpuHessian::new(ctx).with_panel_width(panel);
    let g = gpu.factor(gram, n, 0.01, order)?;
    let f = FastCpu.factor(gram, n, 0.01, order)?;
    let r = Reference.factor(gram, n, 0.01, order)?;
    if (g.dead.clone(), g.order.clone()) != (r.dead.clone(), r.order.clone()) {
        return Err("dead inputs or processing order differ".into());
    }
    let (dr, df) = (difference(&r.u, &g.u), difference(&f.u, &g.u));
    if dr > FACTOR_RTOL || df > FACTOR_RTOL {
        return Err(format!("U differs by {dr:.3e} (reference), {df:.3e} (fast path)").into());
    }
    for i in 0..n {
        if g.u[i * n..i * n + i].iter().any(|&v| v != 0.0) {
            return Err(format!("U has a value below the diagonal in row {i}").into());
        }
    }
    // A GPTQ w4 sweep of a random weight on each factor.
    let rows = 9;
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let w: Vec<f32> = (0..rows * n)
        .map(|_| rng.random_range(-0.05..0.05))
        .collect();
    let job = Job {
        quant: Some(QuantJob {
            spec: QuantSpec {
                bits: 4,
                group: None,
                symmetric: true,
            },
            rounding: Rounding::Nearest,
            dtype: DType::BF16,
            scales: GroupScales::Upfront,
        }),
        prune: None,
        block: 32,
    };
    let a = FastCpu.solve(&w, rows, &f, &job)?;
    let b = gpu.solve(&w, rows, &g, &job)?;
    let (ca, cb) = (&a.quantized.unwrap().codes, &b.quantized.unwrap().codes);
    let same = ca.iter().zip(cb).filter(|(x, y)| x == y).count() as f64 / ca.len() as f64;
    let ea = FastCpu.weighted_error(&w, &a.values, rows, gram)?;
    let eb = FastCpu.weighted_error(&w, &b.values, rows, gram)?;
    if same < 0.99 || (ea - eb).abs() > 0.03 * ea.max(1e-12) {
        return Err(format!("GPTQ on the GPU factor: {same:.4} of codes equal, weighted error {ea:.6e} (cpu) vs {eb:.6e} (gpu)").into());
    }
    println!("n {n}: U within {dr:.2e} of the reference, {df:.2e} of the fast path; codes {same:.4} equal");
    Ok(())
}

/// Gram sums added in `chunks` against the reference's.
fn check_gram(ctx: &GpuContext, tokens: usize, n: usize, chunks: &[usize]) -> Result<(), Failed> {
    let x = inputs(tokens, n, &[n / 2], 7 + n as u64);
    let gpu = GpuHessian::new(ctx);
    let mut r = Reference.gram(n)?;
    let mut g = gpu.gram(n)?;
    let mut f = FastCpu.gram(n)?;
    let mut t0 = 0;
    for &c in chunks.iter().cycle() {
        if t0 >= tokens {
            break;
        }
        let c = c.min(tokens - t0);
        let part = &x[t0 * n..(t0 + c) * n];
        r.add(part, c)?;
        g.add(part, c)?;
        f.add(part, c)?;
        t0 += c;
    }
    let (r, g, f) = (r.finish()?, g.finish()?, f.finish()?);
    for i in 0..n {
        for j in 0..i {
            if g[i * n + j] != g[j * n + i] {
                return Err(format!("not symmetric at [{i}, {j}]").into());
            }
        }
    }
    let (dg, df) = (gram_difference(&r, &g, n), gram_difference(&r, &f, n));
    if dg > GRAM_RTOL || df > GRAM_RTOL {
        return Err(format!("XᵀX differs by {dg:.3e} (gpu), {df:.3e} (fast path)").into());
    }
    println!("{tokens}×{n}: gpu within {dg:.2e}, fast path within {df:.2e}");
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let gpu: Result<Option<Arc<GpuContext>>, String> = test_gpu().map(|c| c.map(Arc::new));
    let ignored = matches!(gpu, Ok(None));
    type Check = Box<dyn Fn(&GpuContext) -> Result<(), Failed> + Send + Sync>;
    let mut checks: Vec<(String, Check)> = Vec::new();
    for (name, gram) in golden_grams() {
        for order in [ActOrder::None, ActOrder::Static] {
            let gram = gram.clone();
            checks.push((
                format!("factor {name} {order:?}"),
                Box::new(move |ctx| check_factor(ctx, &gram, order, 64)),
            ));
        }
    }
    // One panel, a ragged last panel, three panels, the wide panels.
    for (n, dead, order, panel) in [
        (1, vec![], ActOrder::None, 64),
        (5, vec![2], ActOrder::None, 64),
        (64, vec![], ActOrder::Static, 64),
        (65, vec![0, 64], ActOrder::None, 64),
        (130, vec![7, 100], ActOrder::Static, 64),
        (300, vec![3], ActOrder::None, 128),
    ] {
        checks.push((
            format!("factor random {n} dead {dead:?} {order:?} panels of {panel}"),
            Box::new(move |ctx| {
                let x = inputs(n + 40, n, &dead, n as u64);
                check_factor(ctx, &gram_of(&x, n + 40, n), order, panel)
            }),
        ));
    }
    checks.push((
        "factor refuses a matrix that is not positive definite".into(),
        Box::new(|ctx| {
            // [[1, 2], [2, 1]] has eigenvalues 3 and −1.
            let gram = [1.0f32, 2.0, 2.0, 1.0];
            let cpu = FastCpu.factor(&gram, 2, 0.0, ActOrder::None).unwrap_err();
            let gpu = GpuHessian::new(ctx)
                .factor(&gram, 2, 0.0, ActOrder::None)
                .err()
                .ok_or("the GPU factored an indefinite matrix")?;
            if !gpu.to_string().contains("not positive definite") {
                return Err(format!("the GPU said: {gpu}").into());
            }
            println!("cpu: {cpu}\ngpu: {gpu}");
            Ok(())
        }),
    ));
    for (tokens, n, chunks) in [
        (1, 1, vec![1]),
        (40, 7, vec![40]),
        (300, 33, vec![17, 100, 1]),
        (257, 130, vec![64, 193]),
    ] {
        let whole = chunks.clone();
        checks.push((
            format!("gram {tokens}x{n} in chunks {chunks:?}"),
            Box::new(move |ctx| check_gram(ctx, tokens, n, &whole)),
        ));
        let name = format!("gram {tokens}x{n} in chunks {chunks:?} small bindings");
        checks.push((
            name,
            Box::new(move |_| {
                // A few rows per panel and per upload of X.
                let ctx = GpuContext::new()
                    .map_err(|e| e.to_string())?
                    .with_chunk_bytes((n * 4 * 3) as u64);
                check_gram(&ctx, tokens, n, &chunks)
            }),
        ));
    }
    let checks = Arc::new(checks);
    let trials = (0..checks.len())
        .map(|i| {
            let (gpu, checks) = (gpu.clone(), checks.clone());
            Trial::test(checks[i].0.clone(), move || match gpu {
                Err(e) => Err(e.into()),
                Ok(None) => Ok(()),
                Ok(Some(ctx)) => (checks[i].1)(&ctx),
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
