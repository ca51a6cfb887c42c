//! Times the fast CPU mask of a 50% tensor cut on 16.8M bf16 weights.
//!
//! `cargo run --release --example mask_profile`
use std::time::Instant;

use shears::core::fast::mask::FastCpu;
use shears::core::fast::select::FastCpu as FastSelect;
use shears::core::reference::mask::Mask;
use shears::core::reference::score::Scorer;
use shears::core::reference::select::{prune_count, tensor_cut};
use shears::core::{DType, TensorBuf};

fn main() {
    let v = shears::testing::test_values(4096 * 4096, 7, false);
    let buf = TensorBuf::from_f32(DType::BF16, vec![4096, 4096], &v).unwrap();
    let w = buf.view();
    let s = Scorer::magnitude();
    let cut = tensor_cut(&FastSelect, &w, &s, prune_count(0.5, (4096 * 4096) as u64)).unwrap();
    for _ in 0..10 {
        let t = Instant::now();
        let (m, used) = FastCpu.apply_cut(&w, &s, cut).unwrap();
        println!(
            "apply_cut {:?} ({} ties used, {} kept)",
            t.elapsed(),
            used,
            m.iter().filter(|&&x| x == 1).count()
        );
    }
}
