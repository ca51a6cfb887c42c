//! The pruning families (select, mask, matmul) on every backend (the fast
//! CPU path, the GPU, the GPU with small chunks) against the CPU
//! reference: byte-identical cuts and masks for every dtype, method and
//! shape (bf16 tensors full of ties, chunk boundaries), matmul within its
//! named tolerance. Written once ([`parity::Backends`]); the GPU cases are
//! ignored without an adapter, failing under `SHEARS_REQUIRE_GPU=1`.

use libtest_mimic::{Arguments, Failed};
use shears::core::reference::mask::{Mask, Reference as RefMask};
use shears::core::reference::matmul::{probe_inputs, Matmul, Reference as RefMatmul, MATMUL_RTOL};
use shears::core::reference::score::{Method, Scorer};
use shears::core::reference::select::{
    prune_count, select_cut, tensor_cut, Bracket, Reference as RefSelect, Select,
};
use shears::core::{DType, TensorBuf};
use shears::testing::test_values;

mod parity;

use parity::{Backends, Families};

/// Values rounded to a few levels so that keys tie massively.
fn tied(values: &[f32], levels: f32) -> Vec<f32> {
    values
        .iter()
        .map(|v| (v * levels).round() / levels)
        .collect()
}

struct Case {
    dtype: DType,
    shape: [usize; 2],
    method: Method,
    ties: bool,
    seed: u64,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{}::{}::{:?}{}",
            self.method.name(),
            self.dtype,
            self.shape,
            if self.ties { "::ties" } else { "" }
        )
    }
}

struct Inputs {
    w: TensorBuf,
    norms: Vec<f32>,
    grad: TensorBuf,
}

fn inputs(c: &Case) -> Inputs {
    let [rows, cols] = c.shape;
    let mut v = test_values(rows * cols, c.seed, true);
    if c.ties {
        v = tied(&v, 4.0);
    }
    let mut norms: Vec<f32> = test_values(cols, c.seed + 1, false)
        .iter()
        .map(|x| x.abs())
        .collect();
    if cols > 2 {
        norms[1] = 0.0;
    }
    let g = test_values(rows * cols, c.seed + 2, false);
    let gdtype = if c.seed.is_multiple_of(2) {
        DType::F32
    } else {
        DType::BF16
    };
    Inputs {
        w: TensorBuf::from_f32(c.dtype, vec![rows, cols], &v).unwrap(),
        norms,
        grad: TensorBuf::from_f32(gdtype, vec![rows, cols], &g).unwrap(),
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> Failed {
    format!("{what}: {e}").into()
}

fn check(fam: &Families, c: &Case) -> Result<(), Failed> {
    let inp = inputs(c);
    let w = inp.w.view();
    let scorer = Scorer {
        method: c.method,
        norms: Some(&inp.norms),
        grad: Some(inp.grad.view()),
        salt: 77,
    };
    let (gs, gm) = (fam.select.as_ref(), fam.mask.as_ref());
    let mut keys = Vec::new();
    scorer
        .keys(&w, 0..w.numel(), &mut keys)
        .map_err(|e| fail("keys", e))?;
    let [rows, cols] = c.shape;

    // Tensor scope: census-based cut and mask.
    for s in [0.0, 0.3, 0.5, 0.9] {
        let k = prune_count(s, keys.len() as u64);
        let want = select_cut(&keys, k);
        let got = tensor_cut(gs, &w, &scorer, k).map_err(|e| fail("tensor_cut", e))?;
        if got != want {
            return Err(format!("tensor cut at s={s}: expected {want:?}, got {got:?}").into());
        }
        let a = RefMask
            .apply_cut(&w, &scorer, want)
            .map_err(|e| fail("ref mask", e))?;
        let b = gm
            .apply_cut(&w, &scorer, want)
            .map_err(|e| fail("gpu mask", e))?;
        if a != b {
            let i = a.0.iter().zip(&b.0).position(|(x, y)| x != y);
            return Err(format!(
                "apply_cut at s={s}: first difference at {i:?}, ties used {} vs {}",
                a.1, b.1
            )
            .into());
        }
    }
    // A bracket that misses forces the census to report a miss; the
    // histograms themselves must match.
    for hi16 in [None, Some(keys[keys.len() / 2] >> 16)] {
        let a = RefSelect
            .histogram(&w, &scorer, hi16)
            .map_err(|e| fail("ref hist", e))?;
        let b = gs
            .histogram(&w, &scorer, hi16)
            .map_err(|e| fail("gpu hist", e))?;
        if a != b {
            return Err(format!("histogram {hi16:?} differs").into());
        }
    }
    let b = Bracket {
        lo: keys[0].min(keys[keys.len() - 1]),
        hi: keys[0].max(keys[keys.len() - 1]),
    };
    let (mut a, mut g) = (
        RefSelect
            .census(&w, &scorer, b)
            .map_err(|e| fail("ref census", e))?,
        gs.census(&w, &scorer, b)
            .map_err(|e| fail("gpu census", e))?,
    );
    a.inside.sort_unstable();
    g.inside.sort_unstable();
    if a != g {
        return Err(format!("census differs for bracket {b:?}").into());
    }

    // Row scope. A GPU refuses rows wider than one binding (the small-chunk
    // context's 1 KiB), clearly, instead of cutting them wrong.
    // (Taylor binds its gradient too, which may be wider than the weight.)
    let mut bits = c.dtype.bits();
    if c.method == Method::Taylor {
        bits = bits.max(inp.grad.dtype.bits());
    }
    let row_bytes = cols * bits / 8;
    if fam
        .gpu
        .is_some_and(|ctx| row_bytes + 4 > ctx.chunk_bytes() as usize)
    {
        return match gs.row_cuts(&w, &scorer, 1) {
            Err(e) if e.to_string().contains("larger than one GPU binding") => Ok(()),
            other => {
                Err(format!("expected a 'larger than one GPU binding' error, got {other:?}").into())
            }
        };
    }
    for s in [0.25, 0.5, 0.75] {
        let k = prune_count(s, cols as u64);
        let want = RefSelect
            .row_cuts(&w, &scorer, k)
            .map_err(|e| fail("ref rows", e))?;
        let got = gs
            .row_cuts(&w, &scorer, k)
            .map_err(|e| fail("gpu rows", e))?;
        if want != got {
            let r = want.iter().zip(&got).position(|(a, b)| a != b);
            return Err(format!("row cuts at s={s}: first differing row {r:?}").into());
        }
        let a = RefMask
            .apply_row_cuts(&w, &scorer, &want)
            .map_err(|e| fail("ref row mask", e))?;
        let b = gm
            .apply_row_cuts(&w, &scorer, &want)
            .map_err(|e| fail("gpu row mask", e))?;
        if a != b {
            return Err(format!("row mask at s={s} differs").into());
        }
    }

    // N:M where the row length allows.
    for (n, m) in [(2usize, 4usize), (1, 2), (3, 8)] {
        if cols % m == 0 {
            let a = RefMask
                .nm(&w, &scorer, n, m)
                .map_err(|e| fail("ref nm", e))?;
            let b = gm.nm(&w, &scorer, n, m).map_err(|e| fail("gpu nm", e))?;
            if a != b {
                return Err(format!("{n}:{m} mask differs").into());
            }
        }
    }

    // Masked matmul within tolerance (probe rows not a multiple of 16).
    if c.method == Method::Magnitude && !c.ties {
        let p = 19;
        let x = probe_inputs(p, cols, c.seed);
        let (mask, _) = RefMask
            .apply_cut(&w, &scorer, select_cut(&keys, keys.len() as u64 / 2))
            .unwrap();
        let wf: Vec<f32> = w
            .to_f32()
            .unwrap()
            .iter()
            .map(|v| if v.is_finite() { *v } else { 0.0 })
            .collect();
        let clean = TensorBuf::from_f32(c.dtype, vec![rows, cols], &wf).unwrap();
        let cw = clean.view();
        for m in [None, Some(mask.as_slice())] {
            let a = RefMatmul
                .masked_matmul(&x, p, &cw, m)
                .map_err(|e| fail("ref matmul", e))?;
            let b = fam
                .matmul
                .masked_matmul(&x, p, &cw, m)
                .map_err(|e| fail("gpu matmul", e))?;
            let cwf = cw.to_f32().unwrap();
            for i in 0..p {
                for o in 0..rows {
                    let scale: f32 = (0..cols)
                        .map(|j| (x[i * cols + j] * cwf[o * cols + j]).abs())
                        .sum();
                    let (ya, yb) = (a[i * rows + o], b[i * rows + o]);
                    let tol = MATMUL_RTOL * scale + 1e-30;
                    if (ya - yb).abs() > tol {
                        return Err(format!(
                            "matmul [{i}, {o}]: expected {ya}, got {yb}, tolerance {tol}"
                        )
                        .into());
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let backends = Backends::open();
    let mut trials = Vec::new();
    let mut seed = 100;
    let shapes: [[usize; 2]; 12] = [
        [1, 1],
        [1, 2],
        [3, 5],
        [7, 7],
        [2, 255],
        [5, 256],
        [3, 257],
        [33, 129],
        [300, 64],
        // Shapes whose rows cross the small GPU chunk.
        [200, 64],
        [40, 13],
        [9, 200],
    ];
    let methods = [
        Method::Magnitude,
        Method::Wanda,
        Method::Taylor,
        Method::Random,
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for shape in shapes {
            for method in methods {
                for ties in [false, true] {
                    if ties && method != Method::Magnitude {
                        continue;
                    }
                    seed += 1;
                    let case = Case {
                        dtype,
                        shape,
                        method,
                        ties,
                        seed,
                    };
                    let name = case.name();
                    let case = std::sync::Arc::new(case);
                    trials.extend(backends.trials(&name, move |fam| check(fam, &case)));
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
