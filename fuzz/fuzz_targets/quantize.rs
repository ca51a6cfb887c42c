//! A quantize of whatever a fuzzed safetensors file describes: every float
//! tensor the header accepts is scanned for non-finite values and
//! quantized (int8 per channel, int4 per channel, asymmetric) on the fast
//! CPU path, as `shears quantize` would, and its codes dequantized again.
//! Nothing may panic or allocate from an unchecked shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shears_core::checkpoint::header;
use shears_core::fast::quant::quantize_view;
use shears_core::reference::quant::{QuantSpec, Rounding};
use shears_core::TensorView;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = header::parse(std::path::Path::new("fuzz.safetensors"), data) else {
        return;
    };
    for e in &h.entries {
        // What `shears quantize` selects: 2-D float weights that are not empty.
        if e.shape.len() != 2 || e.shape.contains(&0) || !e.dtype.is_float_computable() {
            continue;
        }
        let Ok(view) = TensorView::new(e.dtype, &e.shape, &data[e.range.clone()]) else {
            continue;
        };
        let _ = view.non_finite();
        for (bits, symmetric) in [(8, true), (4, true), (4, false)] {
            let spec = QuantSpec {
                bits,
                group: None,
                symmetric,
            };
            for rounding in [Rounding::Nearest, Rounding::CompressedTensors] {
                if let Ok(q) = quantize_view(&spec, &view, rounding) {
                    assert_eq!(q.codes.len(), e.shape[0] * e.shape[1]);
                    let _ = q.dequantized();
                }
            }
        }
    }
});
