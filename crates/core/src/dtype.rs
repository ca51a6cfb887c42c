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

/// How many of the little-endian `size`-byte values (2 or 4) in `bytes`
/// have every `mask` bit set (NaN/inf) and how many have no `magnitude` bit
/// set (±0); a trailing partial value is ignored. Written as plain
/// compare-and-count loops with narrow counters so the compiler vectorizes
/// them (about four times the speed of a word-at-a-time bit trick).
pub(crate) fn count_special(bytes: &[u8], size: usize, mask: u32, magnitude: u32) -> (u64, u64) {
    let (mut bad, mut zeros) = (0u64, 0u64);
    if size == 2 {
        let (mask, magnitude) = (mask as u16, magnitude as u16);
        // 16-bit counters cannot overflow within a block of 8,192 values.
        for block in bytes.chunks(2 * 8192) {
            let (mut b, mut z) = (0u16, 0u16);
            for c in block.chunks_exact(2) {
                let v = u16::from_le_bytes([c[0], c[1]]);
                b += (v & mask == mask) as u16;
                z += (v & magnitude == 0) as u16;
            }
            bad += b as u64;
            zeros += z as u64;
        }
    } else {
        for block in bytes.chunks(4 << 20) {
            let (mut b, mut z) = (0u32, 0u32);
            for c in block.chunks_exact(4) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                b += (v & mask == mask) as u32;
                z += (v & magnitude == 0) as u32;
            }
            bad += b as u64;
            zeros += z as u64;
        }
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
