//! Fast scoring: the keys of a block of elements, specialised per method
//! and dtype so the common case (magnitude of bf16 or f32) never leaves
//! integer registers and vectorises. Agrees with
//! `reference::score::Scorer::keys` element for element (tested).

use std::ops::Range;

use crate::reference::score::{score_key, Method, Scorer};
use crate::{DType, Result, TensorView};

/// Canonical magnitude key of f32 bits: sign cleared, NaN made 0x7fc00000.
/// Compared as i32 (the sign is clear), which SSE2 does in one instruction.
#[inline(always)]
pub fn magnitude_key(bits: u32) -> u32 {
    let a = (bits & 0x7fff_ffff) as i32;
    (if a > 0x7f80_0000 { 0x7fc0_0000 } else { a }) as u32
}

/// Reusable buffers of [`keys_into`].
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    g: Vec<f32>,
}

/// Writes the keys of elements `range` of `w` into `out` (same length).
pub fn keys_into(
    scorer: &Scorer,
    w: &TensorView,
    range: Range<usize>,
    out: &mut [u32],
    s: &mut Scratch,
) -> Result<()> {
    debug_assert_eq!(out.len(), range.len());
    if scorer.method == Method::Magnitude {
        match w.dtype() {
            DType::BF16 => {
                let bytes = &w.bytes()[range.start * 2..range.end * 2];
                match bytemuck::try_cast_slice::<u8, u16>(bytes) {
                    Ok(h) => out
                        .iter_mut()
                        .zip(h)
                        .for_each(|(o, &h)| *o = magnitude_key((h as u32) << 16)),
                    Err(_) => {
                        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                            *o = magnitude_key((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                        }
                    }
                }
                return Ok(());
            }
            DType::F32 => {
                let bytes = &w.bytes()[range.start * 4..range.end * 4];
                match bytemuck::try_cast_slice::<u8, u32>(bytes) {
                    Ok(x) => out
                        .iter_mut()
                        .zip(x)
                        .for_each(|(o, &x)| *o = magnitude_key(x)),
                    Err(_) => {
                        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                            *o = magnitude_key(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                        }
                    }
                }
                return Ok(());
            }
            _ => {}
        }
    }
    s.x.resize(range.len(), 0.0);
    w.decode_into(range.clone(), &mut s.x)?;
    let (_, cols) = w.matrix_dims();
    match scorer.method {
        Method::Magnitude => {
            for (o, x) in out.iter_mut().zip(&s.x) {
                *o = magnitude_key(x.to_bits());
            }
        }
        Method::Wanda => {
            let norms = scorer.norms.unwrap_or(&[]);
            for (i, (o, &x)) in out.iter_mut().zip(&s.x).enumerate() {
                let j = (range.start + i) % cols.max(1);
                *o = score_key(Method::Wanda, x, norms[j], 0, 0);
            }
        }
        Method::Taylor => {
            let g = scorer.grad.as_ref().expect("checked by Scorer::check");
            s.g.resize(range.len(), 0.0);
            g.decode_into(range.clone(), &mut s.g)?;
            for ((o, &x), &gv) in out.iter_mut().zip(&s.x).zip(&s.g) {
                *o = score_key(Method::Taylor, x, gv, 0, 0);
            }
        }
        Method::Random => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = score_key(
                    Method::Random,
                    0.0,
                    0.0,
                    (range.start + i) as u32,
                    scorer.salt,
                );
            }
        }
    }
    Ok(())
}
