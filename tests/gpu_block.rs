//! The block operations on the GPU (`shaders/block.wgsl`) against the CPU
//! reference: every op on shapes with grouped KV heads, several sequences
//! and odd widths; the composed forward and backward pass on the golden
//! models' first layer; and a pruned and int4 block distilled on both, whose loss
//! curves agree. The GPU trials are reported as ignored without an adapter;
//! `SHEARS_REQUIRE_GPU=1` makes them fail instead.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shears::core::fast::FastCpu;
use shears::core::model::rope::RopeTable;
use shears::core::model::{ModelConfig, Weights};
use shears::core::reference::forward::AttnShape;
use shears::core::reference::Reference;
use shears::core::train::block::BlockShape;
use shears::core::train::block_device::{triangle_len, BlockOps};
use shears::core::train::block_pass::{backward, forward, DeviceBlock};
use shears::core::train::blockwise::{distill_block, BlockProblem, BlockResult};
use shears::core::train::{Device, Grid, GridShape, LkdConfig};
use shears::core::Checkpoint;
use shears::kernels::{GpuContext, GpuTrain};
use shears::testing::test_gpu;

/// GPU values within this fraction of the largest reference magnitude.
const TOL: f32 = 1e-5;
/// The composed pass (many ops, each rounding): within this fraction.
const PASS_TOL: f32 = 1e-4;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect()
}

fn close(what: &str, want: &[f32], got: &[f32], tol: f32) -> Result<(), Failed> {
    if want.len() != got.len() {
        return Err(format!("{what}: {} values, want {}", got.len(), want.len()).into());
    }
    let max = want.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    for (i, (a, b)) in want.iter().zip(got).enumerate() {
        if (a - b).abs() > tol * max || !b.is_finite() {
            return Err(format!("{what}: element {i}: cpu {a}, gpu {b} (largest {max})").into());
        }
    }
    Ok(())
}

fn ops(g: &GpuTrain, s: AttnShape, seed: u64) -> Result<(), Failed> {
    let r = Reference;
    let d = s.head_dim;
    let tokens = s.seqs * s.seq_len;
    let (qw, kw) = (s.heads * d, s.kv_heads * d);
    let pair = |n: usize, sd: u64| -> Result<(Vec<f32>, _), Failed> {
        let v = values(n, sd);
        let b = g.upload(&v)?;
        Ok((v, b))
    };
    let down = |b: &_| -> Result<Vec<f32>, Failed> { Ok(g.download(b)?) };
    let name = format!(
        "{}x{} h{}/{} d{}",
        s.seqs, s.seq_len, s.heads, s.kv_heads, d
    );
    // RMSNorm and its gradient over rows of qw.
    let (x, xg) = pair(tokens * qw, seed)?;
    let (w, wg) = pair(qw, seed + 1)?;
    let (dy, dyg) = pair(tokens * qw, seed + 2)?;
    let mut want = vec![0.0; tokens * qw];
    let mut out = g.zeros(tokens * qw)?;
    r.rms_norm(&x, &w, &mut want, tokens, qw, 1e-6)?;
    g.rms_norm(&xg, &wg, &mut out, tokens, qw, 1e-6)?;
    close(&format!("{name} rms_norm"), &want, &down(&out)?, TOL)?;
    r.rms_norm_backward(&x, &w, &dy, &mut want, tokens, qw, 1e-6)?;
    g.rms_norm_backward(&xg, &wg, &dyg, &mut out, tokens, qw, 1e-6)?;
    close(
        &format!("{name} rms_norm_backward"),
        &want,
        &down(&out)?,
        TOL,
    )?;
    // RoPE both ways.
    let half = d / 2;
    let (cos, cosg) = pair(s.seq_len * half, seed + 3)?;
    let (sin, sing) = pair(s.seq_len * half, seed + 4)?;
    for inverse in [false, true] {
        r.rope(
            &x, &cos, &sin, &mut want, tokens, qw, half, s.seq_len, inverse,
        )?;
        g.rope(
            &xg, &cosg, &sing, &mut out, tokens, qw, half, s.seq_len, inverse,
        )?;
        close(
            &format!("{name} rope inverse={inverse}"),
            &want,
            &down(&out)?,
            TOL,
        )?;
    }
    // Attention and its gradients.
    let (k, kg) = pair(tokens * kw, seed + 5)?;
    let (v, vg) = pair(tokens * kw, seed + 6)?;
    let tri = triangle_len(&s);
    let (mut p, mut a) = (vec![0.0; tri], vec![0.0; tokens * qw]);
    let (mut pg, mut ag) = (g.zeros(tri)?, g.zeros(tokens * qw)?);
    r.attention(&x, &k, &v, &mut p, &mut a, s)?;
    g.attention(&xg, &kg, &vg, &mut pg, &mut ag, s)?;
    close(&format!("{name} attention weights"), &p, &down(&pg)?, TOL)?;
    close(&format!("{name} attention output"), &a, &down(&ag)?, TOL)?;
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; tokens * qw],
        vec![0.0; tokens * kw],
        vec![0.0; tokens * kw],
    );
    let (mut dqg, mut dkg, mut dvg) = (
        g.zeros(tokens * qw)?,
        g.zeros(tokens * kw)?,
        g.zeros(tokens * kw)?,
    );
    r.attention_backward(&x, &k, &v, &p, &dy, &mut dq, &mut dk, &mut dv, s)?;
    g.attention_backward(&xg, &kg, &vg, &pg, &dyg, &mut dqg, &mut dkg, &mut dvg, s)?;
    close(&format!("{name} attention dq"), &dq, &down(&dqg)?, TOL)?;
    close(&format!("{name} attention dk"), &dk, &down(&dkg)?, TOL)?;
    close(&format!("{name} attention dv"), &dv, &down(&dvg)?, TOL)?;
    // SwiGLU's product, its gradients, the residual sum.
    let n = tokens * qw;
    let (mut m, mut du) = (vec![0.0; n], vec![0.0; n]);
    let (mut mg, mut dug) = (g.zeros(n)?, g.zeros(n)?);
    r.silu_mul(&x, &dy, &mut m, n)?;
    g.silu_mul(&xg, &dyg, &mut mg, n)?;
    close(&format!("{name} silu_mul"), &m, &down(&mg)?, TOL)?;
    r.silu_mul_backward(&x, &dy, &a, &mut want, &mut du, n)?;
    g.silu_mul_backward(&xg, &dyg, &ag, &mut out, &mut dug, n)?;
    close(&format!("{name} silu_mul dgate"), &want, &down(&out)?, TOL)?;
    close(&format!("{name} silu_mul dup"), &du, &down(&dug)?, TOL)?;
    r.add(&x, &dy, &mut want, n)?;
    g.add(&xg, &dyg, &mut out, n)?;
    close(&format!("{name} add"), &want, &down(&out)?, 0.0)?;
    Ok(())
}

fn golden(family: &str) -> (Checkpoint, ModelConfig) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/forward")
        .join(family);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    (Checkpoint::open(&dir).unwrap(), cfg)
}

/// Output, the seven weight gradients and the bias gradients (Qwen2's q,
/// k, v) of one pass on `dev`.
fn pass_on<D: BlockOps>(dev: &D, family: &str) -> Result<Vec<Vec<f32>>, Failed> {
    const SEQ: usize = 9;
    let (ckpt, cfg) = golden(family);
    let weights = Weights::open(&ckpt, cfg.clone())?;
    let lw = weights.layer(0)?;
    let shape = BlockShape::new(&cfg, SEQ);
    let rope = RopeTable::new(&cfg, SEQ);
    let db = DeviceBlock::new(dev, shape, &lw, &rope)?;
    let mut w = Vec::new();
    for l in lw.linears() {
        w.push(dev.upload(&l.w)?);
    }
    let w: [&D::Buf; 7] = std::array::from_fn(|i| &w[i]);
    let n = 2 * SEQ * cfg.hidden;
    let x = dev.upload(&values(n, 11))?;
    let pass = forward(dev, &db, w, &x, 2 * SEQ)?;
    let dy = dev.upload(&values(n, 12))?;
    let (grads, biases) = backward(dev, &db, w, &pass, &dy)?;
    let mut out = vec![dev.download(&pass.y)?];
    for g in grads.iter().chain(biases.iter().flatten()) {
        out.push(dev.download(g)?);
    }
    Ok(out)
}

fn pass(g: &GpuTrain, family: &str) -> Result<(), Failed> {
    let want = pass_on(&Reference, family)?;
    let got = pass_on(g, family)?;
    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
        let what = match i {
            0 => "output".to_string(),
            1..=7 => format!("gradient of linear {}", i - 1),
            _ => format!("gradient of bias {}", i - 8),
        };
        close(&format!("{family} {what}"), a, b, PASS_TOL)?;
    }
    Ok(())
}

/// The first steps' losses of a block distilled on the GPU and on the fast
/// CPU path agree within this fraction.
const CURVE_RTOL: f64 = 1e-3;
const CURVE_STEPS: usize = 40;

/// The golden Llama's first block, its MLP pruned by half and its q/k/v/o
/// on int4 grids (groups of 32), distilled towards the dense block.
fn distill_on<D: BlockOps>(dev: &D) -> Result<BlockResult, Failed> {
    const SEQ: usize = 8;
    let (ckpt, cfg) = golden("llama");
    let weights = Weights::open(&ckpt, cfg.clone())?;
    let teacher = weights.layer(0)?;
    let shape = BlockShape::new(&cfg, SEQ);
    let rope = RopeTable::new(&cfg, SEQ);
    let masks: Vec<Vec<f32>> = teacher
        .linears()
        .iter()
        .enumerate()
        .map(|(l, w)| {
            (0..w.w.len())
                .map(|i| if l < 4 { 1.0 } else { ((i + i / 5) % 2) as f32 })
                .collect()
        })
        .collect();
    let grids: Vec<Option<Grid>> = teacher
        .linears()
        .iter()
        .enumerate()
        .map(|(l, w)| {
            (l < 4).then(|| {
                let scales =
                    w.w.chunks(32)
                        .map(|g| g.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 7.0)
                        .collect();
                Grid {
                    shape: GridShape::int(4, 32),
                    scales,
                    zero_points: None,
                }
            })
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let ids: Vec<u32> = (0..48 * SEQ)
        .map(|_| rng.random_range(0..cfg.vocab as u32))
        .collect();
    let x = weights.embed(&ids)?;
    let y = {
        let db = DeviceBlock::new(&Reference, shape, &teacher, &rope)?;
        let w: Vec<Vec<f32>> = teacher.linears().iter().map(|l| l.w.clone()).collect();
        let pass = forward(
            &Reference,
            &db,
            std::array::from_fn(|i| &w[i]),
            &x,
            x.len() / cfg.hidden,
        )?;
        pass.y
    };
    let split = 40 * SEQ * cfg.hidden;
    let problem = BlockProblem {
        shape,
        rope: &rope,
        x_train: &x[..split],
        y_train: &y[..split],
        x_held: &x[split..],
        y_held: &y[split..],
        block: &teacher,
        trained: [true; 7],
        masks: std::array::from_fn(|i| Some(masks[i].as_slice())),
        grids: std::array::from_fn(|i| grids[i].as_ref()),
    };
    let lkd = LkdConfig {
        epochs: 10,
        batch_size: 4 * SEQ,
        lr: 0.003,
        seed: 3,
        patience: None,
    };
    Ok(distill_block(dev, &problem, &lkd)?)
}

fn curves(g: &GpuTrain) -> Result<(), Failed> {
    let want = distill_on(&FastCpu)?;
    let got = distill_on(g)?;
    if want.losses.len() < CURVE_STEPS || got.losses.len() != want.losses.len() {
        return Err(format!("{} / {} steps", want.losses.len(), got.losses.len()).into());
    }
    for (i, (a, b)) in want
        .losses
        .iter()
        .zip(&got.losses)
        .take(CURVE_STEPS)
        .enumerate()
    {
        if (a - b).abs() > CURVE_RTOL * a.abs() {
            return Err(format!("step {}: cpu loss {a}, gpu loss {b}", i + 1).into());
        }
    }
    if want.error_after >= 0.97 * want.error_before {
        return Err(format!("cpu: error {} -> {}", want.error_before, want.error_after).into());
    }
    let rel = (want.error_after - got.error_after).abs() / want.error_after;
    if rel > 1e-2 {
        return Err(format!(
            "held-out error after: cpu {}, gpu {}",
            want.error_after, got.error_after
        )
        .into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Case {
    Ops(AttnShape, u64),
    Pass(&'static str),
    Curves,
}

fn main() {
    let args = Arguments::from_args();
    let gpu: Result<Option<Arc<GpuContext>>, String> = test_gpu().map(|c| c.map(Arc::new));
    let skip = matches!(gpu, Ok(None));
    let shape = |seqs, seq_len, heads, kv_heads, head_dim| AttnShape {
        seqs,
        seq_len,
        heads,
        kv_heads,
        head_dim,
    };
    let mut cases = vec![
        Case::Ops(shape(1, 1, 1, 1, 2), 1),
        Case::Ops(shape(2, 5, 4, 2, 6), 2),
        Case::Ops(shape(3, 17, 6, 2, 8), 3),
        Case::Ops(shape(1, 33, 3, 3, 10), 4),
    ];
    cases.extend(["llama", "qwen2", "qwen3"].map(Case::Pass));
    cases.push(Case::Curves);
    let mut trials = Vec::new();
    for case in cases {
        let gpu = gpu.clone();
        let name = match case {
            Case::Ops(s, _) => format!(
                "gpu::block_ops::{}x{}_h{}_kv{}_d{}",
                s.seqs, s.seq_len, s.heads, s.kv_heads, s.head_dim
            ),
            Case::Pass(f) => format!("gpu::block_pass::{f}"),
            Case::Curves => "gpu::block_distill_curves".into(),
        };
        trials.push(
            Trial::test(name, move || match &gpu {
                Err(r) => Err(r.clone().into()),
                Ok(None) => Ok(()),
                Ok(Some(ctx)) => {
                    let g = GpuTrain::new(ctx);
                    match case {
                        Case::Ops(s, seed) => ops(&g, s, seed),
                        Case::Pass(f) => pass(&g, f),
                        Case::Curves => curves(&g),
                    }
                }
            })
            .with_ignored_flag(skip),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
