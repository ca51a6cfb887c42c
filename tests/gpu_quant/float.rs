//! The checks of the float-quant family's parity tests: FP8 (per channel
//! and per 128×128 block), NVFP4 and MXFP4 codes and scales of one backend
//! byte for byte against the CPU reference.

use libtest_mimic::Failed;
use shears::core::ops::float::FloatQuant;
use shears::core::reference::fp8::e4m3_value;
use shears::core::reference::quant::Rounding;
use shears::core::reference::Reference;
use shears::core::TensorBuf;
use shears::testing::test_values;

use crate::parity::{expect_row_refusal, Families};

/// A float scheme as the family's trait takes it.
#[derive(Debug, Clone, Copy)]
pub enum Float {
    Fp8(Option<usize>, Rounding),
    Nvfp4(f32),
    Mxfp4,
}

/// `rows × cols` values for `scheme`: seeded noise of every magnitude, and
/// every third row (or group) set so its scale is a power of two and the
/// quotients land on the format's rounding ties (midpoints of E4M3 or E2M1
/// neighbours), with both signs.
pub fn float_values(scheme: Float, rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut x = test_values(rows * cols, seed, false);
    let (top, mids): (f32, Vec<f32>) = match scheme {
        Float::Fp8(..) => (
            448.0,
            (0..0x7eu8)
                .map(|b| 0.5 * (e4m3_value(b) + e4m3_value(b + 1)))
                .collect(),
        ),
        _ => (6.0, vec![0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]),
    };
    let span = match scheme {
        Float::Fp8(..) => cols,
        Float::Nvfp4(_) => 16,
        Float::Mxfp4 => 32,
    };
    for r in (0..rows).step_by(3) {
        let k = (r as i32 % 7) - 5;
        for (j, v) in x[r * cols..(r + 1) * cols].iter_mut().enumerate() {
            let m = if j % span == 0 {
                top
            } else {
                mids[(j + r) % mids.len()]
            };
            let sign = if (j / 3 + r).is_multiple_of(2) {
                1.0
            } else {
                -1.0
            };
            *v = sign * m * f32::powi(2.0, k);
        }
    }
    if rows > 1 {
        x[cols..2 * cols].fill(0.0); // an all-zero row: the smallest scales
    }
    x
}

/// Codes, and scales as words.
type Bytes = (Vec<u8>, Vec<u32>);

/// Codes and scales of `fam` against the reference on `buf`; the GPU with
/// a small chunk refuses a band of rows wider than one binding.
pub fn check_float(fam: &Families, scheme: Float, buf: &TensorBuf) -> Result<(), Failed> {
    let w = buf.view();
    let (_, cols) = w.matrix_dims();
    let band = match scheme {
        Float::Fp8(Some(b), _) => b,
        _ => 1,
    };
    let too_wide = fam
        .gpu
        .is_some_and(|ctx| band * cols * w.dtype().bits() / 8 + 4 > ctx.chunk_bytes() as usize);
    let (got, want): (Bytes, Bytes) = match scheme {
        Float::Fp8(block, rounding) => {
            let got = fam.float.fp8(&w, block, rounding);
            if too_wide {
                return expect_row_refusal(got);
            }
            let got = got.map_err(|e| e.to_string())?;
            let want = Reference
                .fp8(&w, block, rounding)
                .map_err(|e| e.to_string())?;
            let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect();
            (
                (got.codes, bits(&got.scales)),
                (want.codes, bits(&want.scales)),
            )
        }
        Float::Nvfp4(_) | Float::Mxfp4 => {
            let gs = match scheme {
                Float::Nvfp4(g) => Some(g),
                _ => None,
            };
            let got = fam.float.fp4(&w, gs);
            if too_wide {
                return expect_row_refusal(got);
            }
            let got = got.map_err(|e| e.to_string())?;
            let want = Reference.fp4(&w, gs).map_err(|e| e.to_string())?;
            let wide = |s: &[u8]| s.iter().map(|&b| b as u32).collect();
            (
                (got.codes, wide(&got.scales)),
                (want.codes, wide(&want.scales)),
            )
        }
    };
    if got.1 != want.1 {
        let i = got.1.iter().zip(&want.1).position(|(a, b)| a != b);
        return Err(format!(
            "{}: scales differ (len {} vs {}), first at {i:?}: {:#x?} vs {:#x?}",
            fam.name,
            got.1.len(),
            want.1.len(),
            i.map(|i| got.1[i]),
            i.map(|i| want.1[i])
        )
        .into());
    }
    if got.0 != want.0 {
        let x = w.to_f32().map_err(|e| e.to_string())?;
        let n = got.0.iter().zip(&want.0).filter(|(a, b)| a != b).count();
        let i = got.0.iter().zip(&want.0).position(|(a, b)| a != b);
        return Err(format!(
            "{}: {n} of {} codes differ (len {}), first at {i:?}: x = {:?}, {:#04x?} vs {:#04x?}",
            fam.name,
            want.0.len(),
            got.0.len(),
            i.map(|i| x[i]),
            i.map(|i| got.0[i]),
            i.map(|i| want.0[i])
        )
        .into());
    }
    Ok(())
}
