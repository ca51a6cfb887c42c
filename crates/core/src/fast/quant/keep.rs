//! What the quantizer does with pruning, row by row: nothing, zero what a
//! given keep-mask prunes, or make the magnitude N:M mask itself from the
//! decoded row and zero what it prunes. The last is `compress`'s common
//! recipe (2:4 by magnitude, then int4) in one pass over the weight instead
//! of two; its mask is the one `Mask::nm` makes, byte for byte (tested),
//! because the keys are the same: the magnitude key of each value's f32
//! bits, which decoding bf16 and f16 leaves exact.

use crate::fast::score::magnitude_key;
use crate::reference::mask::nm_group;

/// The pruning a quantization applies first.
#[derive(Debug)]
pub enum Keep<'a> {
    /// None: every element is quantized as it is.
    All,
    /// Elements whose byte is 0 are taken as zeros (one byte per element).
    Given(&'a [u8]),
    /// Magnitude N:M along rows: in each group of `m` the `n` largest |x|
    /// stay (ties to the later element, NaN largest), the rest become +0;
    /// the keep-mask (1 kept, 0 pruned) is written to `out`, one byte per
    /// element.
    MagnitudeNm {
        n: usize,
        m: usize,
        out: &'a mut [u8],
    },
}

/// One row's share of a [`Keep`].
pub(crate) enum RowKeep<'a> {
    All,
    Given(&'a [u8]),
    Nm {
        n: usize,
        m: usize,
        out: &'a mut [u8],
    },
}

impl RowKeep<'_> {
    /// Applies this row's pruning to its decoded values `x` (whose length
    /// divides by `m`).
    #[inline]
    pub(crate) fn apply(self, x: &mut [f32]) {
        match self {
            RowKeep::All => {}
            RowKeep::Given(k) => zero_pruned(x, k),
            RowKeep::Nm { n, m, out } => {
                #[cfg(target_arch = "x86_64")]
                if m == 4 && is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 checked; x and out have the row's length.
                    unsafe { n_of_4(x, n, out) };
                    return;
                }
                n_of_m(x, n, m, out);
            }
        }
    }
}

/// Sets the elements of `x` whose `keep` byte is 0 to +0.
#[inline]
pub(crate) fn zero_pruned(x: &mut [f32], keep: &[u8]) {
    for (v, &k) in x.iter_mut().zip(keep) {
        if k == 0 {
            *v = 0.0;
        }
    }
}

/// Magnitude N:M of `x` in groups of `m`: the mask into `out`, pruned
/// values to +0 (the reference's group rule, element by element).
fn n_of_m(x: &mut [f32], n: usize, m: usize, out: &mut [u8]) {
    let mut keys = [0u32; 16];
    for (xg, og) in x.chunks_exact_mut(m).zip(out.chunks_exact_mut(m)) {
        for (k, v) in keys.iter_mut().zip(xg.iter()) {
            *k = magnitude_key(v.to_bits());
        }
        nm_group(&keys[..m], n, og);
        zero_pruned(xg, og);
    }
}

/// [`n_of_m`] for groups of four, eight values (two groups) at a time: a
/// group of four is half of a 128-bit lane, so rotating the keys within
/// each group is one in-lane shuffle. Element i is kept when fewer than
/// `n` others rank above it; the element `r` places further along the
/// group, j = (i + r) mod 4, ranks above i when its key is larger, or equal
/// and j > i (that is, i < 4 − r).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn n_of_4(x: &mut [f32], n: usize, out: &mut [u8]) {
    use std::arch::x86_64::*;
    let body = x.len() - x.len() % 8;
    let magnitude = _mm256_set1_epi32(0x7fff_ffff);
    let inf = _mm256_set1_epi32(0x7f80_0000);
    let nan = _mm256_set1_epi32(0x7fc0_0000);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
    let nv = _mm256_set1_epi32(n as i32);
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 <= len of x and out; unaligned loads and stores.
        let v = _mm256_loadu_si256(x.as_ptr().add(i) as *const __m256i);
        let a = _mm256_and_si256(v, magnitude);
        // Keys as `magnitude_key` makes them; below 2^31, so the signed
        // comparisons order them as unsigned ones would.
        let k = _mm256_blendv_epi8(a, nan, _mm256_cmpgt_epi32(a, inf));
        let mut above = _mm256_setzero_si256();
        macro_rules! rotation {
            ($imm:literal, $r:literal) => {
                let kj = _mm256_shuffle_epi32::<$imm>(k);
                let later = _mm256_cmpgt_epi32(_mm256_set1_epi32(4 - $r), lane);
                let eq = _mm256_and_si256(_mm256_cmpeq_epi32(kj, k), later);
                let ranks = _mm256_or_si256(_mm256_cmpgt_epi32(kj, k), eq);
                above = _mm256_sub_epi32(above, ranks);
            };
        }
        rotation!(0b00_11_10_01, 1);
        rotation!(0b01_00_11_10, 2);
        rotation!(0b10_01_00_11, 3);
        let keep = _mm256_cmpgt_epi32(nv, above);
        _mm256_storeu_si256(
            x.as_mut_ptr().add(i) as *mut __m256i,
            _mm256_and_si256(v, keep),
        );
        // One byte per lane: 0/1 words packed down to bytes; each 128-bit
        // half then starts with its four.
        let ones = _mm256_srli_epi32(keep, 31);
        let bytes = _mm256_packus_epi16(
            _mm256_packs_epi32(ones, ones),
            _mm256_packs_epi32(ones, ones),
        );
        let lo = _mm256_cvtsi256_si32(bytes) as u32 as u64;
        let hi = _mm256_extract_epi32::<4>(bytes) as u32 as u64;
        out[i..i + 8].copy_from_slice(&(lo | hi << 32).to_le_bytes());
    }
    n_of_m(&mut x[body..], n, 4, &mut out[body..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values with many ties, both zeros, NaNs and infinities.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            (-3i8..4).prop_map(|v| v as f32),
            Just(-0.0f32),
            Just(f32::NAN),
            Just(-f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            any::<f32>(),
        ]
    }

    proptest! {
        /// The row's mask is the reference N:M mask of the same values,
        /// and exactly the pruned values become +0.
        #[test]
        fn matches_reference_mask(
            groups in 1usize..12,
            nm in prop_oneof![Just((2usize, 4usize)), Just((1, 4)), Just((3, 4)), Just((4, 8)), Just((1, 2))],
            seed in proptest::collection::vec(value(), 96),
        ) {
            let (n, m) = nm;
            let x0: Vec<f32> = seed.iter().cycle().take(groups * m).copied().collect();
            let keys: Vec<u32> = x0.iter().map(|v| magnitude_key(v.to_bits())).collect();
            let want = crate::reference::mask::nm_mask(&keys, x0.len(), n, m).unwrap();
            let mut x = x0.clone();
            let mut got = vec![7u8; x.len()];
            RowKeep::Nm { n, m, out: &mut got }.apply(&mut x);
            prop_assert_eq!(&got, &want);
            for ((v, v0), k) in x.iter().zip(&x0).zip(&want) {
                let expect = if *k == 0 { 0.0f32 } else { *v0 };
                prop_assert_eq!(v.to_bits(), expect.to_bits());
            }
        }
    }
}
