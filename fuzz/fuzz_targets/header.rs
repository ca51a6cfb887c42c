//! The safetensors header parser on arbitrary bytes: it returns a header
//! or an error, never panics, and a header it accepts describes only bytes
//! the file has.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shears_core::checkpoint::header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = header::parse(std::path::Path::new("fuzz.safetensors"), data) {
        for e in &h.entries {
            assert!(e.range.end <= data.len());
            assert!(e.range.start >= h.data_start);
        }
    }
});
