//! Times the stages of one tensor selection on the fast CPU path (sample,
//! census, resolve).
//!
//! `cargo run --release --example select_profile`
use shears::core::fast::select::FastCpu;
use shears::core::reference::score::Scorer;
use shears::core::reference::select::*;
use shears::core::{DType, TensorBuf};
use std::time::Instant;
fn main() {
    for dtype in [DType::BF16, DType::F32] {
        let v = shears::testing::test_values(4096 * 4096, 7, false);
        let buf = TensorBuf::from_f32(dtype, vec![4096, 4096], &v).unwrap();
        let w = buf.view();
        let s = Scorer::magnitude();
        let k = prune_count(0.5, (4096 * 4096) as u64);
        for _ in 0..20 {
            let t = Instant::now();
            let mut sample = Vec::new();
            sample_keys(&w, &s, SAMPLE_RUNS * SAMPLE_RUN, &mut sample).unwrap();
            let sigmas = if exact_top_half(&w, &s) { 3.0 } else { 6.0 };
            let b = bracket_from_sample(&mut sample, k, w.numel() as u64, sigmas);
            let t1 = t.elapsed();
            let c = FastCpu.census(&w, &s, b).unwrap();
            let t2 = t.elapsed();
            let cut = resolve(&c, b, k);
            let t3 = t.elapsed();
            println!(
                "{dtype}: sample {:?} census {:?} resolve {:?} inside {} cut {:?}",
                t1,
                t2 - t1,
                t3 - t2,
                c.inside.len(),
                cut.is_some()
            );
        }
    }
}
