//! `shears decompress` of the golden compressed-tensors folders: values
//! within half a step (plus the dtype's rounding) of the dense input, and
//! identical to shears' own dequantization (`quantize --format dense`).

mod common;

use common::{repo_root, run};
use shears_core::Checkpoint;

fn golden(rel: &str) -> std::path::PathBuf {
    repo_root().join("tests/golden").join(rel)
}

fn ok(args: &[&str]) {
    let res = run(args);
    assert_eq!(
        res.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn golden_folders_decompress_close_to_the_input_and_equal_our_dequantize() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["bf16", "f32"] {
        let dense = Checkpoint::open(golden(&format!("{dtype}/dense"))).unwrap();
        for scheme in ["w8a16", "w4a16", "w4a16-asym", "w8a8"] {
            let src = golden(&format!("{dtype}/{scheme}"));
            let a = dir.path().join(format!("{dtype}-{scheme}-decompressed"));
            let b = dir.path().join(format!("{dtype}-{scheme}-dequantized"));
            ok(&[
                "decompress",
                src.to_str().unwrap(),
                "-o",
                a.to_str().unwrap(),
            ]);
            ok(&[
                "quantize",
                golden(&format!("{dtype}/dense")).to_str().unwrap(),
                "-o",
                b.to_str().unwrap(),
                "--scheme",
                scheme,
                "--rounding",
                "compressed-tensors",
                "--format",
                "dense",
            ]);
            let (a, b) = (Checkpoint::open(&a).unwrap(), Checkpoint::open(&b).unwrap());
            let gold = Checkpoint::open(&src).unwrap();
            assert_eq!(a.tensors.len(), dense.tensors.len());
            // Unit roundoff u of the dtype: compressed-tensors rounds the
            // quotient x/s and the sum x/s + zp (|zp| ≤ 8) to it, and the
            // output is rounded to it once more.
            let u = if dtype == "bf16" {
                2f64.powi(-8)
            } else {
                2f64.powi(-23)
            };
            for t in &dense.tensors {
                let (x, y) = (a.get(&t.name).unwrap(), b.get(&t.name).unwrap());
                assert_eq!((x.dtype, &x.shape), (t.dtype, &t.shape), "{}", t.name);
                assert!(
                    a.view(x).bytes() == b.view(y).bytes(),
                    "{dtype}/{scheme} {}: differs from our dequantize",
                    t.name
                );
                let Some(prefix) = t.name.strip_suffix(".weight") else {
                    continue;
                };
                let Some(st) = gold.get(&format!("{prefix}.weight_scale")) else {
                    continue;
                };
                let scales = gold.view(st).to_f32().unwrap();
                let (orig, back) = (dense.view(t).to_f32().unwrap(), a.view(x).to_f32().unwrap());
                let (cols, groups) = (t.shape[1], st.shape[1]);
                for (i, (&o, &v)) in orig.iter().zip(&back).enumerate() {
                    let s = scales[(i / cols) * groups + (i % cols) / (cols / groups)] as f64;
                    let bound = s / 2.0 + 2.0 * u * (o.abs() as f64 + 9.0 * s) + 1e-12;
                    let lim = s * if scheme.starts_with("w4") { 7.0 } else { 127.0 };
                    if (o.abs() as f64) <= lim {
                        let err = (o as f64 - v as f64).abs();
                        assert!(
                            err <= bound,
                            "{dtype}/{scheme} {}[{i}]: {o} -> {v}, err {err} > {bound}",
                            t.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_config_that_does_not_match_its_tensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = golden("bf16/w4a16");
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        broken.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 64.into();
    std::fs::write(
        broken.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let out = dir.path().join("out");
    let res = run(&[
        "decompress",
        broken.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("model.safetensors") && err.contains("weight_scale"),
        "{err}"
    );
    assert!(!out.exists());

    std::fs::write(broken.join("config.json"), b"{}").unwrap();
    let res = run(&[
        "decompress",
        broken.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config.json") && err.contains("quantization_config"),
        "{err}"
    );
    assert!(!out.exists());
}
