//! Every training op on one device against the CPU reference, on odd
//! shapes: exact where the spec is exact, named tolerances elsewhere.

use libtest_mimic::Failed;
use shears::core::reference::matmul::MATMUL_RTOL;
use shears::core::reference::Reference;
use shears::core::train::{AdamStep, Device, GridShape, Levels};
use shears::testing::test_values;

/// Ops without arithmetic freedom (bias add and sums in the same order,
/// ReLU, masked Adam's zeros, fake quantization): identical bits.
pub const EXACT: f32 = 0.0;
/// Ops through exp, log, tanh or sqrt, whose WGSL accuracy is not exact:
/// relative to the value, plus an absolute floor for values near 0.
pub const TRANSCENDENTAL_RTOL: f32 = 2e-5;
pub const TRANSCENDENTAL_ATOL: f32 = 1e-6;
/// Loss curves over the first 100 steps.
pub const CURVE_RTOL: f64 = 1e-4;

pub fn close(what: &str, want: &[f32], got: &[f32], rtol: f32, atol: f32) -> Result<(), Failed> {
    if want.len() != got.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()).into());
    }
    for (i, (&a, &b)) in want.iter().zip(got).enumerate() {
        let ok = if rtol == EXACT && atol == 0.0 {
            a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
        } else {
            (a - b).abs() <= rtol * a.abs() + atol
        };
        if !ok {
            return Err(format!(
                "{what}[{i}]: expected {a:e}, got {b:e} (rtol {rtol:e}, atol {atol:e})"
            )
            .into());
        }
    }
    Ok(())
}

pub fn err(e: impl std::fmt::Display) -> Failed {
    e.to_string().into()
}

/// Every op on both devices for one shape.
pub fn ops<D: Device>(dev: &D, m: usize, k: usize, n: usize, seed: u64) -> Result<(), Failed> {
    let cpu = Reference;
    let g = |v: &[f32]| dev.upload(v).map_err(err);
    let a = test_values(m * k, seed, false);
    let b = test_values(k * n, seed + 1, false);
    // matmul, all four layouts (transposed storage is the same values
    // read in the other order, which is all the op sees).
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut want = vec![0.0f32; m * n];
        cpu.matmul(&a, &b, &mut want, m, k, n, ta, tb)
            .map_err(err)?;
        let mut c = dev.zeros(m * n).map_err(err)?;
        dev.matmul(&g(&a)?, &g(&b)?, &mut c, m, k, n, ta, tb)
            .map_err(err)?;
        let got = dev.download(&c).map_err(err)?;
        // Tolerance per element: MATMUL_RTOL of Σ|a·b|.
        let abs_a: Vec<f32> = a.iter().map(|v| v.abs()).collect();
        let abs_b: Vec<f32> = b.iter().map(|v| v.abs()).collect();
        let mut scale = vec![0.0f32; m * n];
        cpu.matmul(&abs_a, &abs_b, &mut scale, m, k, n, ta, tb)
            .map_err(err)?;
        for i in 0..m * n {
            let tol = MATMUL_RTOL * scale[i] + 1e-30;
            if (want[i] - got[i]).abs() > tol {
                return Err(format!(
                    "matmul ta={ta} tb={tb} [{i}]: expected {}, got {}, tolerance {tol}",
                    want[i], got[i]
                )
                .into());
            }
        }
    }
    // Bias and its gradient.
    let y = test_values(m * n, seed + 2, false);
    let bias = test_values(n, seed + 3, false);
    let mut want = y.clone();
    cpu.add_bias(&mut want, &bias, m, n).map_err(err)?;
    let mut yb = g(&y)?;
    dev.add_bias(&mut yb, &g(&bias)?, m, n).map_err(err)?;
    close(
        "add_bias",
        &want,
        &dev.download(&yb).map_err(err)?,
        EXACT,
        0.0,
    )?;
    let mut want = vec![0.0f32; n];
    cpu.bias_grad(&y, &mut want, m, n).map_err(err)?;
    let mut db = dev.zeros(n).map_err(err)?;
    dev.bias_grad(&g(&y)?, &mut db, m, n).map_err(err)?;
    close(
        "bias_grad",
        &want,
        &dev.download(&db).map_err(err)?,
        EXACT,
        0.0,
    )?;
    // Activations.
    let z = test_values(m * n, seed + 4, false);
    let dh = test_values(m * n, seed + 5, false);
    let mut out = dev.zeros(m * n).map_err(err)?;
    let mut want = vec![0.0f32; m * n];
    let (zb, dhb) = (g(&z)?, g(&dh)?);
    let atol = |rtol: f32| {
        if rtol == EXACT {
            0.0
        } else {
            TRANSCENDENTAL_ATOL
        }
    };
    for (name, rtol) in [
        ("relu", EXACT),
        ("gelu", TRANSCENDENTAL_RTOL),
        ("relu_backward", EXACT),
        ("gelu_backward", TRANSCENDENTAL_RTOL),
    ] {
        let len = m * n;
        match name {
            "relu" => {
                cpu.relu(&z, &mut want, len).map_err(err)?;
                dev.relu(&zb, &mut out, len).map_err(err)?;
            }
            "gelu" => {
                cpu.gelu(&z, &mut want, len).map_err(err)?;
                dev.gelu(&zb, &mut out, len).map_err(err)?;
            }
            "relu_backward" => {
                cpu.relu_backward(&z, &dh, &mut want, len).map_err(err)?;
                dev.relu_backward(&zb, &dhb, &mut out, len).map_err(err)?;
            }
            _ => {
                cpu.gelu_backward(&z, &dh, &mut want, len).map_err(err)?;
                dev.gelu_backward(&zb, &dhb, &mut out, len).map_err(err)?;
            }
        }
        close(
            name,
            &want,
            &dev.download(&out).map_err(err)?,
            rtol,
            atol(rtol),
        )?;
    }
    // Softmax at two temperatures.
    for t in [1.0f32, 4.0] {
        cpu.softmax(&z, &mut want, m, n, t).map_err(err)?;
        dev.softmax(&zb, &mut out, m, n, t).map_err(err)?;
        let got = dev.download(&out).map_err(err)?;
        close(
            &format!("softmax T={t}"),
            &want,
            &got,
            TRANSCENDENTAL_RTOL,
            TRANSCENDENTAL_ATOL,
        )?;
    }
    // Losses and their gradients.
    let labels: Vec<f32> = (0..m)
        .map(|r| ((r * 7 + seed as usize) % n) as f32)
        .collect();
    let teacher = test_values(m * n, seed + 6, false);
    for with_teacher in [false, true] {
        let (t, alpha) = if with_teacher { (4.0, 0.5) } else { (1.0, 1.0) };
        let mut want_dz = vec![0.0f32; m * n];
        let want_loss = cpu
            .classification_loss(
                &z,
                with_teacher.then_some(&teacher),
                &labels,
                &mut want_dz,
                m,
                n,
                t,
                alpha,
            )
            .map_err(err)?;
        let tb = g(&teacher)?;
        let mut dz = dev.zeros(m * n).map_err(err)?;
        let got_loss = dev
            .classification_loss(
                &zb,
                with_teacher.then_some(&tb),
                &g(&labels)?,
                &mut dz,
                m,
                n,
                t,
                alpha,
            )
            .map_err(err)?;
        let what = format!("classification_loss teacher={with_teacher}");
        close(
            &what,
            &[want_loss as f32],
            &[got_loss as f32],
            TRANSCENDENTAL_RTOL,
            0.0,
        )?;
        let got_dz = dev.download(&dz).map_err(err)?;
        close(&format!("{what} dz"), &want_dz, &got_dz, 1e-4, 1e-7)?;
    }
    let target = test_values(m * n, seed + 7, false);
    let mut want_dy = vec![0.0f32; m * n];
    let want_loss = cpu.mse(&z, &target, &mut want_dy, m, n).map_err(err)?;
    let mut dy = dev.zeros(m * n).map_err(err)?;
    let got_loss = dev.mse(&zb, &g(&target)?, &mut dy, m, n).map_err(err)?;
    close("mse", &[want_loss as f32], &[got_loss as f32], 1e-6, 0.0)?;
    close(
        "mse dy",
        &want_dy,
        &dev.download(&dy).map_err(err)?,
        EXACT,
        0.0,
    )?;
    // Adam, three steps, with a mask on half the weights.
    let len = m * n;
    let mask: Vec<f32> = (0..len).map(|i| (i % 2) as f32).collect();
    for masked in [false, true] {
        let (mut w, mut mo, mut v) = (z.clone(), vec![0.0f32; len], vec![0.0f32; len]);
        let (mut wb, mut mb, mut vb) = (
            g(&z)?,
            dev.zeros(len).map_err(err)?,
            dev.zeros(len).map_err(err)?,
        );
        let maskb = g(&mask)?;
        for t in 1..=3 {
            let grad = test_values(len, seed + 10 + t as u64, false);
            let step = AdamStep::at(1e-2, 0.9, 0.999, 1e-8, t);
            cpu.adam(
                &mut w,
                &grad,
                &mut mo,
                &mut v,
                masked.then_some(&mask),
                len,
                step,
            )
            .map_err(err)?;
            dev.adam(
                &mut wb,
                &g(&grad)?,
                &mut mb,
                &mut vb,
                masked.then_some(&maskb),
                len,
                step,
            )
            .map_err(err)?;
        }
        let got = dev.download(&wb).map_err(err)?;
        close(&format!("adam masked={masked}"), &w, &got, 1e-6, 1e-9)?;
        if masked
            && got
                .iter()
                .zip(&mask)
                .any(|(v, &k)| k == 0.0 && v.to_bits() != 0)
        {
            return Err("adam: a masked weight is not exactly +0".into());
        }
    }
    // Fake quantization on a grid: identical values (identical codes), on
    // integer grids and the float formats (whose quotients here reach
    // past both formats' largest values, and their subnormals).
    let float_grids = [(Levels::E4M3, n), (Levels::E2M1, 4.min(n))];
    let int_grids = [(8u32, n, false), (4, 4.min(n), true), (4, n, false)];
    let grids = int_grids
        .iter()
        .map(|&(bits, group, asym)| (GridShape::int(bits, group), asym))
        .chain(
            float_grids
                .iter()
                .map(|&(levels, group)| (GridShape { levels, group }, false)),
        );
    for (grid, asym) in grids {
        let groups = n.div_ceil(grid.group);
        let scales: Vec<f32> = match grid.levels {
            Levels::Int { .. } => (0..m * groups)
                .map(|i| 0.05 + (i % 5) as f32 * 0.013)
                .collect(),
            // Divisors from 1e-4 (quotients past ±448) to 0.3.
            _ => (0..m * groups)
                .map(|i| [1e-4, 0.003, 0.05, 0.3][i % 4] * (1.0 + (i % 7) as f32 * 0.01))
                .collect(),
        };
        let zps: Vec<f32> = (0..m * groups).map(|i| ((i % 3) as f32) - 1.0).collect();
        cpu.fake_quant(&z, &scales, asym.then_some(&zps), &mut want, m, n, grid)
            .map_err(err)?;
        let zpb = g(&zps)?;
        dev.fake_quant(
            &zb,
            &g(&scales)?,
            asym.then_some(&zpb),
            &mut out,
            m,
            n,
            grid,
        )
        .map_err(err)?;
        let got = dev.download(&out).map_err(err)?;
        close(
            &format!("fake_quant {:?} g{} asym={asym}", grid.levels, grid.group),
            &want,
            &got,
            EXACT,
            0.0,
        )?;
    }
    Ok(())
}
