//! GPU training operations (`shaders/train.wgsl`) and the fast CPU path
//! (`FastCpu`) against the CPU reference (`Reference`): every op on odd shapes, fake-quantized values bit for bit,
//! and whole training runs (an MLP on labels, an MLP distilled from a
//! teacher, a masked and quantized layer distilled layer-wise) whose loss
//! curves agree within 1e-4 relative over their first 100 steps.
//! The GPU trials are reported as ignored without an adapter;
//! `SHEARS_REQUIRE_GPU=1` makes them fail instead.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use shears::core::fast::FastCpu;
use shears::core::reference::Reference;
use shears::core::train::{
    distill_layer, train, Device, Grid, GridShape, LayerProblem, LkdConfig, Mlp, TrainConfig,
};
use shears::kernels::{GpuContext, GpuTrain};
use shears::testing::{test_gpu, test_values};

#[path = "gpu_train/ops.rs"]
mod ops;

use ops::{err, ops, CURVE_RTOL};

/// The first `steps` losses of two runs agree within CURVE_RTOL.
fn curves(what: &str, want: &[f64], got: &[f64], steps: usize) -> Result<(), Failed> {
    if want.len() < steps || got.len() < steps {
        return Err(format!("{what}: {} / {} steps, need {steps}", want.len(), got.len()).into());
    }
    let mut worst = 0.0f64;
    for s in 0..steps {
        let (a, b) = (want[s], got[s]);
        if (a - b).abs() > CURVE_RTOL * a.abs() {
            return Err(format!("{what}: step {s}: reference loss {a}, backend loss {b}").into());
        }
        worst = worst.max((a - b).abs() / a.abs());
    }
    // Seen with --nocapture: how close the curves actually are.
    eprintln!("{what}: largest relative loss difference over {steps} steps: {worst:.2e}");
    Ok(())
}

/// Synthetic classification data: class c's examples scatter around a
/// seeded centre.
fn blobs(rows: usize, dims: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let centres = test_values(classes * dims, seed, false);
    let noise = test_values(rows * dims, seed + 1, false);
    let labels: Vec<u32> = (0..rows).map(|r| (r % classes) as u32).collect();
    let x = (0..rows * dims)
        .map(|i| 3.0 * centres[labels[i / dims] as usize * dims + i % dims] + noise[i])
        .collect();
    (x, labels)
}

fn mlp_curves<D: Device>(dev: &D, distill: bool) -> Result<(), Failed> {
    let (dims, classes, rows) = (24, 5, 1600);
    let (x, labels) = blobs(rows, dims, classes, 77);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        lr: 1e-3,
        seed: 5,
        temperature: 4.0,
        alpha: 0.5,
    };
    let teacher = if distill {
        let t = Mlp::new(&[dims, 32, classes], 9).map_err(err)?;
        Some(t.logits(&Reference, &x, rows).map_err(err)?)
    } else {
        None
    };
    let mut logs = Vec::new();
    for which in [0, 1] {
        let mut mlp = Mlp::new(&[dims, 20, 12, classes], 3).map_err(err)?;
        let log = if which == 0 {
            train(
                &Reference,
                &mut mlp,
                &x,
                &labels,
                teacher.as_deref(),
                &cfg,
                &mut |_, _| {},
            )
        } else {
            train(
                dev,
                &mut mlp,
                &x,
                &labels,
                teacher.as_deref(),
                &cfg,
                &mut |_, _| {},
            )
        }
        .map_err(err)?;
        logs.push(log.step_losses);
    }
    curves(
        if distill { "distilled MLP" } else { "MLP" },
        &logs[0],
        &logs[1],
        100,
    )
}

fn layerwise_curves<D: Device>(dev: &D) -> Result<(), Failed> {
    let (inp, out, n) = (48, 20, 640);
    let x = test_values(n * inp, 31, false);
    let held = test_values(64 * inp, 32, false);
    let tw = test_values(out * inp, 33, false);
    let mask: Vec<f32> = (0..out * inp).map(|i| ((i / 2) % 2) as f32).collect();
    let group = 16;
    let scales: Vec<f32> = (0..out * inp / group)
        .map(|i| 0.1 + (i % 4) as f32 * 0.02)
        .collect();
    let grid = Grid {
        shape: GridShape::int(4, group),
        scales,
        zero_points: None,
    };
    let problem = LayerProblem {
        inputs: inp,
        outputs: out,
        x_train: &x,
        x_held: &held,
        teacher_weight: &tw,
        teacher_bias: None,
        student_weight: &tw,
        student_bias: None,
        mask: Some(&mask),
        grid: Some(&grid),
        targets: None,
    };
    let cfg = LkdConfig {
        epochs: 10,
        batch_size: 64,
        lr: 1e-3,
        seed: 4,
        patience: None,
    };
    let a = distill_layer(&Reference, &problem, &cfg).map_err(err)?;
    let b = distill_layer(dev, &problem, &cfg).map_err(err)?;
    curves("layer-wise", &a.losses, &b.losses, 100)
}

/// One check, run on any training backend.
#[derive(Debug, Clone, Copy)]
enum Case {
    Ops(usize, usize, usize, u64),
    MlpLabels,
    MlpDistilled,
    Layerwise,
}

impl Case {
    fn name(&self) -> String {
        match self {
            Case::Ops(m, k, n, _) => format!("train_ops::{m}x{k}x{n}"),
            Case::MlpLabels => "curves::mlp_labels".into(),
            Case::MlpDistilled => "curves::mlp_distilled".into(),
            Case::Layerwise => "curves::layerwise_masked_int4".into(),
        }
    }

    fn run<D: Device>(&self, dev: &D) -> Result<(), Failed> {
        match *self {
            Case::Ops(m, k, n, seed) => ops(dev, m, k, n, seed),
            Case::MlpLabels => mlp_curves(dev, false),
            Case::MlpDistilled => mlp_curves(dev, true),
            Case::Layerwise => layerwise_curves(dev),
        }
    }
}

fn main() {
    let args = Arguments::from_args();
    let gpu: Result<Option<Arc<GpuContext>>, String> = test_gpu().map(|c| c.map(Arc::new));
    let skip = matches!(gpu, Ok(None));
    let mut cases = Vec::new();
    let mut seed = 700;
    for (m, k, n) in [
        (1, 1, 1),
        (7, 33, 5),
        (17, 16, 10),
        (33, 129, 31),
        (64, 100, 48),
    ] {
        seed += 20;
        cases.push(Case::Ops(m, k, n, seed));
    }
    cases.extend([Case::MlpLabels, Case::MlpDistilled, Case::Layerwise]);
    let mut trials = Vec::new();
    for case in cases {
        let gpu = gpu.clone();
        trials.push(
            Trial::test(format!("gpu::{}", case.name()), move || match &gpu {
                Err(r) => Err(r.clone().into()),
                Ok(None) => Ok(()),
                Ok(Some(ctx)) => case.run(&GpuTrain::new(ctx)),
            })
            .with_ignored_flag(skip),
        );
        // The fast CPU path is held to the same tolerances (no GPU needed).
        trials.push(Trial::test(
            format!("fast_cpu::{}", case.name()),
            move || case.run(&FastCpu),
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}
