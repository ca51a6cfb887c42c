//! Element types of safetensors checkpoints.

use std::fmt;
use std::str::FromStr;

/// Every dtype the safetensors format names. All of them pass through
/// shears untouched; [`DType::is_float_computable`] says which ones the
/// kernels compute on (F32, F16, BF16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

impl DType {
    /// All dtypes, in the order safetensors lists them.
    pub const ALL: [DType; 20] = [
        DType::Bool,
        DType::F4,
        DType::F6E2M3,
        DType::F6E3M2,
        DType::U8,
        DType::I8,
        DType::F8E5M2,
        DType::F8E4M3,
        DType::F8E8M0,
        DType::I16,
        DType::U16,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::U32,
        DType::F32,
        DType::C64,
        DType::F64,
        DType::I64,
        DType::U64,
    ];

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::F4 => "F4",
            DType::F6E2M3 => "F6_E2M3",
            DType::F6E3M2 => "F6_E3M2",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E8M0 => "F8_E8M0",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::C64 => "C64",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
        }
    }

    /// Size of one element in bits (sub-byte types are packed).
    pub fn bits(self) -> usize {
        match self {
            DType::F4 => 4,
            DType::F6E2M3 | DType::F6E3M2 => 6,
            DType::Bool | DType::U8 | DType::I8 => 8,
            DType::F8E5M2 | DType::F8E4M3 | DType::F8E8M0 => 8,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::U32 | DType::F32 => 32,
            DType::C64 | DType::F64 | DType::I64 | DType::U64 => 64,
        }
    }

    /// Bytes taken by `numel` elements, or `None` when the count of bits is
    /// not a whole number of bytes or overflows.
    pub fn byte_len(self, numel: usize) -> Option<usize> {
        let bits = numel.checked_mul(self.bits())?;
        (bits % 8 == 0).then_some(bits / 8)
    }

    /// Whether shears' kernels compute on this dtype (F32, F16, BF16).
    pub fn is_float_computable(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown dtype '{s}'"))
    }
}

/// How many of the little-endian `size`-byte values in `bytes` have every
/// `mask` bit set (NaN/inf) and how many have no `magnitude` bit set (±0).
/// Eight bytes at a time, each lane tested without a branch: a lane is
/// non-zero exactly when adding the lane-wide all-but-top-bit pattern
/// carries into its top bit (the lanes' top bits are clear after masking),
/// so one popcount counts the lanes of a word. Several times faster than a
/// value-by-value loop, which the compiler does not vectorize.
pub(crate) fn count_special(bytes: &[u8], size: usize, mask: u32, magnitude: u32) -> (u64, u64) {
    let lanes = (8 / size) as u64;
    let (low, top) = if size == 4 {
        (0x7fff_ffff_7fff_ffffu64, 0x8000_0000_8000_0000u64)
    } else {
        (0x7fff_7fff_7fff_7fffu64, 0x8000_8000_8000_8000u64)
    };
    let spread = |m: u32| -> u64 { (0..lanes).fold(0, |acc, i| acc | (m as u64) << (i * 8 * size as u64)) };
    let (wide_mask, wide_magnitude) = (spread(mask), spread(magnitude));
    let nonzero = |x: u64| ((x + low) & top).count_ones() as u64;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let (mut bad, mut zeros) = (0u64, 0u64);
    for w in words {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        // (x & mask) ^ mask is zero in a lane exactly when all mask bits are set.
        bad += lanes - nonzero((x & wide_mask) ^ wide_mask);
        zeros += lanes - nonzero(x & wide_magnitude);
    }
    for v in tail.chunks_exact(size) {
        let b = v.iter().rev().fold(0u32, |acc, &x| acc << 8 | x as u32);
        bad += (b & mask == mask) as u64;
        zeros += (b & magnitude == 0) as u64;
    }
    (bad, zeros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("F12".parse::<DType>().is_err());
    }

    #[test]
    fn sub_byte_lengths() {
        assert_eq!(DType::F4.byte_len(4), Some(2));
        assert_eq!(DType::F4.byte_len(3), None);
        assert_eq!(DType::F6E2M3.byte_len(4), Some(3));
        assert_eq!(DType::BF16.byte_len(5), Some(10));
        assert_eq!(DType::F32.byte_len(usize::MAX), None);
    }

    proptest::proptest! {
        /// The word-at-a-time count equals a value-by-value count, for
        /// 2- and 4-byte floats, any bits (zeros, NaN, inf drawn often)
        /// and any length, tails included.
        #[test]
        fn special_counts_match_one_by_one(
            picks in proptest::collection::vec((0u8..6, proptest::prelude::any::<u32>()), 0..67),
            wide in proptest::prelude::any::<bool>(),
        ) {
            let (size, mask, magnitude) = if wide {
                (4usize, 0x7f80_0000u32, 0x7fff_ffffu32)
            } else {
                (2, 0x7c00, 0x7fff)
            };
            let values: Vec<u32> = picks
                .iter()
                .map(|&(k, r)| match k {
                    0 => 0,
                    1 => r & !magnitude,
                    2 => mask | (r & !mask),
                    _ => r,
                } & if wide { u32::MAX } else { 0xffff })
                .collect();
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|v| v.to_le_bytes()[..size].to_vec())
                .collect();
            let bad = values.iter().filter(|&&v| v & mask == mask).count() as u64;
            let zeros = values.iter().filter(|&&v| v & magnitude == 0).count() as u64;
            proptest::prop_assert_eq!(count_special(&bytes, size, mask, magnitude), (bad, zeros));
        }
    }
}
