//! GGUF block numerics (part of the `quant` family), as ggml's reference
//! functions `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` define them:
//!
//! * Q8_0: blocks of 32; d = amax / 127 stored as f16; codes
//!   roundf(x · (1/d)) (half away from zero), 1/d taken from the f32 d,
//!   0 when d is 0. A block is 2 + 32 bytes.
//! * Q4_0: blocks of 32; m is the value of largest magnitude (the first
//!   such); d = m / −8 stored as f16; q = min(15, trunc(x · (1/d) + 8.5));
//!   byte j holds element j (low nibble) and element j + 16 (high nibble).
//!   A block is 2 + 16 bytes.

use super::kquants::BlockFn;
use half::f16;

/// Elements per block.
pub const QK: usize = 32;

/// The GGUF block formats shears computes (the quant family's GGUF
/// kinds): the 32-value blocks here and the 256-value K-quant super-blocks
/// of [`super::kquants`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    Q8_0,
    Q4_0,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl GgufType {
    /// Every kind.
    pub const ALL: [GgufType; 7] = [
        GgufType::Q8_0,
        GgufType::Q4_0,
        GgufType::Q5_0,
        GgufType::Q5_1,
        GgufType::Q4_K,
        GgufType::Q5_K,
        GgufType::Q6_K,
    ];

    /// Values per block.
    pub fn block_elems(self) -> usize {
        match self {
            GgufType::Q4_K | GgufType::Q5_K | GgufType::Q6_K => super::kquants::QK_K,
            _ => QK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgufType::Q8_0 => 34,
            GgufType::Q4_0 => 18,
            GgufType::Q5_0 => 22,
            GgufType::Q5_1 => 24,
            GgufType::Q4_K => 144,
            GgufType::Q5_K => 176,
            GgufType::Q6_K => 210,
        }
    }

    /// The reference quantizer of one block ([`GgufType::block_elems`]
    /// values into [`GgufType::block_bytes`] bytes).
    pub fn block_fn(self) -> BlockFn {
        match self {
            GgufType::Q8_0 => |x, o| o.copy_from_slice(&quantize_q8_0(x)),
            GgufType::Q4_0 => |x, o| o.copy_from_slice(&quantize_q4_0(x)),
            GgufType::Q5_0 => q5_0_block,
            GgufType::Q5_1 => q5_1_block,
            GgufType::Q4_K => super::kquants::q4_k_block,
            GgufType::Q5_K => super::kquants::q5_k_block,
            GgufType::Q6_K => super::kquants::q6_k_block,
        }
    }

    /// The blocks of `x` (its length a multiple of the block).
    pub fn quantize(self, x: &[f32]) -> Vec<u8> {
        let (n, size) = (self.block_elems(), self.block_bytes());
        assert_eq!(x.len() % n, 0, "{self:?} needs whole blocks of {n}");
        let mut out = vec![0u8; x.len() / n * size];
        let block = self.block_fn();
        for (b, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(size)) {
            block(b, o);
        }
        out
    }
}

/// Q8_0 blocks of `x` (its length a multiple of 32).
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK, 0, "Q8_0 needs whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / QK * 34);
    for b in x.chunks_exact(QK) {
        let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// Values of Q8_0 blocks.
pub fn dequantize_q8_0(blocks: &[u8]) -> Vec<f32> {
    blocks
        .chunks_exact(34)
        .flat_map(|b| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            b[2..].iter().map(move |&q| q as i8 as f32 * d)
        })
        .collect()
}

/// Q4_0 blocks of `x` (its length a multiple of 32).
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK, 0, "Q4_0 needs whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / QK * 18);
    for b in x.chunks_exact(QK) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..QK / 2 {
            out.push(code(b[j]) | (code(b[j + QK / 2]) << 4));
        }
    }
    out
}

/// Values of Q4_0 blocks.
pub fn dequantize_q4_0(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / 18 * QK);
    for b in blocks.chunks_exact(18) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let qs = &b[2..];
        out.extend(qs.iter().map(|&q| ((q & 0xf) as i32 - 8) as f32 * d));
        out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
    }
    out
}

/// Values of Q4_1 blocks (20 bytes: f16 d and min, 16 bytes of nibbles;
/// value j is code·d + min, codes j and j + 16 in byte j). shears reads
/// Q4_1 (files in the wild carry it) but does not write it.
pub fn dequantize_q4_1(blocks: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() / 20 * QK);
    for b in blocks.chunks_exact(20) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let qs = &b[4..];
        out.extend(qs.iter().map(|&q| (q & 0xf) as f32 * d + m));
        out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
    }
    out
}

/// The x86 conversion of a float to an integer as ggml's C casts compile
/// (cvttss2si): truncation, and i32::MIN for NaN or out of range.
fn c_trunc(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// One Q5_0 block (22 bytes: f16 d, 4 bytes of fifth bits, 16 of low
/// nibbles) of 32 values, as `quantize_row_q5_0_ref`: d = m / −16 for the
/// first value of largest magnitude m, codes min(31, trunc(x/d + 16.5)).
pub fn q5_0_block(x: &[f32], out: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in &x[..QK] {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let code = |v: f32| (c_trunc(v * id + 16.5) as i8).min(31) as u8;
    let l: [u8; QK] = std::array::from_fn(|j| code(x[j]));
    let (qh, qs) = out[2..22].split_at_mut(4);
    pack_q5(&l, qs, qh);
}

/// Five-bit codes of a Q5 block: low nibbles of codes j and j + 16 in
/// `qs[j]`, the fifth bits in the 32-bit little-endian `qh`.
pub(crate) fn pack_q5(l: &[u8; QK], qs: &mut [u8], qh: &mut [u8]) {
    let mut h = 0u32;
    for j in 0..QK / 2 {
        let (a, b) = (l[j], l[j + QK / 2]);
        qs[j] = (a & 0xf) | ((b & 0xf) << 4);
        h |= (((a & 0x10) >> 4) as u32) << j;
        h |= (((b & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

/// One Q5_1 block (24 bytes: f16 d and min, 4 bytes of fifth bits, 16 of
/// low nibbles) of 32 values, as `quantize_row_q5_1_ref`: d = (max − min)
/// / 31, codes trunc((x − min)/d + 0.5).
pub fn q5_1_block(x: &[f32], out: &mut [u8]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in &x[..QK] {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    out[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
    let code = |v: f32| c_trunc((v - min) * id + 0.5) as u8;
    let l: [u8; QK] = std::array::from_fn(|j| code(x[j]));
    let (qh, qs) = out[4..24].split_at_mut(4);
    pack_q5(&l, qs, qh);
}

/// Values of Q5_0 (`min` false) or Q5_1 blocks.
pub fn dequantize_q5(blocks: &[u8], with_min: bool) -> Vec<f32> {
    let size = if with_min { 24 } else { 22 };
    let mut out = Vec::with_capacity(blocks.len() / size * QK);
    for b in blocks.chunks_exact(size) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (m, at) = match with_min {
            true => (f16::from_le_bytes([b[2], b[3]]).to_f32(), 4),
            false => (0.0, 2),
        };
        let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let qs = &b[at + 4..at + 20];
        let mut y = [0.0f32; QK];
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + QK / 2)) & 1) << 4;
            let (q0, q1) = ((qs[j] & 0xf) as u32 | h0, (qs[j] >> 4) as u32 | h1);
            if with_min {
                y[j] = q0 as f32 * d + m;
                y[j + QK / 2] = q1 as f32 * d + m;
            } else {
                y[j] = (q0 as i32 - 16) as f32 * d;
                y[j + QK / 2] = (q1 as i32 - 16) as f32 * d;
            }
        }
        out.extend_from_slice(&y);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(f: impl Fn(usize) -> f32) -> Vec<f32> {
        (0..QK).map(f).collect()
    }

    #[test]
    fn q8_0_follows_ggml() {
        // amax 127 → d = 1: codes are roundf(x), halves away from zero.
        let mut x = block(|j| j as f32 - 15.5);
        x[0] = 127.0;
        let b = quantize_q8_0(&x);
        assert_eq!(b.len(), 34);
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 1.0);
        assert_eq!(b[2] as i8, 127);
        assert_eq!(b[3] as i8, -15); // -14.5 rounds away from zero
        assert_eq!(b[4] as i8, -14); // -13.5 -> -14
        assert_eq!(b[2 + 16] as i8, 1); // 0.5 -> 1
        let back = dequantize_q8_0(&b);
        assert_eq!(back[0], 127.0);
        // An all-zero block has d = 0 and zero codes.
        let z = quantize_q8_0(&[0.0; QK]);
        assert!(z.iter().all(|&v| v == 0));
    }

    #[test]
    fn q4_0_follows_ggml() {
        // The largest magnitude is -8 (negative): d = 1, codes x + 8.
        let mut x = block(|j| ((j % 16) as f32) - 8.0);
        x[5] = -8.0;
        let b = quantize_q4_0(&x);
        assert_eq!(b.len(), 18);
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 1.0);
        let back = dequantize_q4_0(&b);
        for (j, (&a, &v)) in x.iter().zip(&back).enumerate() {
            assert_eq!(a, v, "element {j}");
        }
        // Element j in the low nibble, j + 16 in the high nibble.
        assert_eq!(b[2 + 5] & 0xf, 0);
        assert_eq!(b[2 + 5] >> 4, 5); // element 21 = -3 -> code 5
                                      // +8 cannot be represented when d = 1: trunc(16.5) is capped at 15.
        let mut s = x.clone();
        s[1] = 8.0;
        let sb = quantize_q4_0(&s);
        assert_eq!(sb[2 + 1] & 0xf, 15);
        // d comes from the first value of largest magnitude (here y[1]).
        let y = block(|j| if j == 0 { 8.0 } else { -9.0 + j as f32 * 0.01 });
        let yb = quantize_q4_0(&y);
        let d = f16::from_le_bytes([yb[0], yb[1]]).to_f32();
        assert_eq!(d, f16::from_f32(y[1] / -8.0).to_f32());
        assert_eq!(yb[2] & 0xf, 15); // 8.0 · (1/d) + 8.5 = 15.6: capped at 15
        assert_eq!(yb[3] & 0xf, 0); // the extreme itself: -8 + 8.5 -> 0
    }

    #[test]
    fn round_trips_stay_within_a_step() {
        let x: Vec<f32> = (0..QK * 8)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        for (q, dq, step) in [
            (
                quantize_q8_0(&x),
                dequantize_q8_0 as fn(&[u8]) -> Vec<f32>,
                1.0 / 127.0,
            ),
            (
                quantize_q4_0(&x),
                dequantize_q4_0 as fn(&[u8]) -> Vec<f32>,
                1.0 / 8.0,
            ),
        ] {
            for (a, b) in x.iter().zip(dq(&q)) {
                assert!((a - b).abs() <= step * 1.01, "{a} vs {b}");
            }
        }
    }
}
