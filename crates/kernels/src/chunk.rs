//! Cutting a tensor into pieces that fit one storage binding.
//!
//! Chunk sizes come from the device's limits (see
//! [`crate::GpuContext::chunk_bytes`]), never from constants, and a chunk of
//! a 16-bit tensor may start in the middle of a 32-bit word: the upload
//! window then starts one element early and the shader skips it.

use std::ops::Range;

/// The bytes to upload for elements `elems` of a tensor whose elements are
/// `esize` bytes, and the offset (0 or 1) of the first element inside the
/// first uploaded word. The window starts on a 4-byte boundary and never
/// runs past the tensor's `len` bytes.
pub fn upload_window(elems: &Range<usize>, esize: usize, len: usize) -> (Range<usize>, u32) {
    let start = elems.start * esize;
    let aligned = start / 4 * 4;
    let end = (elems.end * esize).min(len);
    (aligned..end, ((start - aligned) / esize) as u32)
}

/// Consecutive ranges of at most `per` items covering `0..total`.
pub fn split(total: usize, per: usize) -> impl Iterator<Item = Range<usize>> {
    let per = per.max(1);
    (0..total.div_ceil(per)).map(move |i| i * per..((i + 1) * per).min(total))
}

/// Workgroups for `items` work items of `per_group` each, capped at the
/// device's per-dimension limit (the shaders loop over the rest).
pub fn groups(items: usize, per_group: usize, max: u32) -> u32 {
    (items.div_ceil(per_group.max(1)) as u64).clamp(1, max as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_on_words() {
        assert_eq!(upload_window(&(3..7), 2, 100), (4..14, 1));
        assert_eq!(upload_window(&(4..7), 2, 100), (8..14, 0));
        assert_eq!(upload_window(&(3..7), 4, 100), (12..28, 0));
        assert_eq!(upload_window(&(0..5), 2, 10), (0..10, 0));
    }

    #[test]
    fn split_covers_everything() {
        let parts: Vec<_> = split(10, 4).collect();
        assert_eq!(parts, vec![0..4, 4..8, 8..10]);
        assert_eq!(split(0, 4).count(), 0);
        assert_eq!(groups(1, 256, 65535), 1);
        assert_eq!(groups(100_000_000, 256, 65535), 65535);
    }
}
