//! Helpers of the `distill layers` tests.

use std::path::{Path, PathBuf};

use shears_core::Checkpoint;

use super::{repo_root, run};

pub fn asset() -> String {
    repo_root().join("assets/tiny-llama").display().to_string()
}

pub fn calib() -> PathBuf {
    repo_root().join("assets/tiny-llama-calibration.safetensors")
}

#[allow(unused_imports)]
pub use super::s;

pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn report(path: &Path) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["layers"].as_array().unwrap().clone()
}

/// ‖X·Aᵀ − X·Bᵀ‖ / ‖X·Aᵀ‖ in f64 over the rows of `x` [n, inn].
pub fn output_error(x: &[f32], a: &[f32], b: &[f32], out: usize, inn: usize) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for row in x.chunks_exact(inn) {
        for o in 0..out {
            let (mut ya, mut yb) = (0.0f64, 0.0f64);
            for (j, &xj) in row.iter().enumerate() {
                ya += xj as f64 * a[o * inn + j] as f64;
                yb += xj as f64 * b[o * inn + j] as f64;
            }
            num += (ya - yb).powi(2);
            den += ya.powi(2);
        }
    }
    (num / den).sqrt()
}

pub fn f32s(c: &Checkpoint, name: &str) -> Vec<f32> {
    c.view(c.get(name).unwrap_or_else(|| panic!("{name} missing")))
        .to_f32()
        .unwrap()
}
