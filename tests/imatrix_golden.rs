//! GGUF blocks weighted by an importance matrix against ggml's own
//! quantizers given the same importances (`quantize_q4_K(…, quant_weights)`
//! and its siblings, as llama-quantize --imatrix calls them):
//! tests/golden/kquants/weighted.safetensors holds the 37 edge-case rows of
//! 256 and 4 rows of 1024 with their importances (six orders of magnitude,
//! a few zeros) and the bytes libggml made of them
//! (scripts/imatrix-golden.py). shears' reference rows, the fast path's
//! parallel rows and the GPU's kernels (every weighted type) must give the
//! same bytes.

use shears::core::fast::quant::{quantize_gguf, quantize_gguf_weighted};
use shears::core::reference::gguf::GgufType;
use shears::core::reference::imatrix::quantize_row;
use shears::core::{Checkpoint, DType, TensorBuf};
use shears::kernels::quant::GpuQuant;
use shears::testing::{gpu_gguf_rows_match, test_gpu};

const KINDS: [(&str, GgufType); 7] = [
    ("q4_0", GgufType::Q4_0),
    ("q5_0", GgufType::Q5_0),
    ("q5_1", GgufType::Q5_1),
    ("q8_0", GgufType::Q8_0),
    ("q4_k", GgufType::Q4_K),
    ("q5_k", GgufType::Q5_K),
    ("q6_k", GgufType::Q6_K),
];

/// The edge row of subnormal values: its Q8_0 scale 1/d overflows to
/// infinity, where ggml's C cast of ±inf to int8 is undefined (x86 gives
/// 0) and shears saturates; the f16 d is 0 either way, so both decode to
/// zeros. Q8_0 ignores importances, so only that row of that type is left
/// out.
const SUBNORMAL_ROW: usize = 5;

fn golden() -> Checkpoint {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/kquants/weighted.safetensors");
    Checkpoint::open(&path).unwrap()
}

fn f32s(c: &Checkpoint, name: &str) -> (Vec<f32>, Vec<usize>) {
    let info = c.get(name).unwrap();
    (c.view(info).to_f32().unwrap(), info.shape.clone())
}

fn bytes(c: &Checkpoint, name: &str) -> Vec<u8> {
    c.view(c.get(name).unwrap()).bytes().to_vec()
}

#[test]
fn weighted_blocks_equal_ggml() {
    let c = golden();
    for set in ["edge", "wide"] {
        let (x, shape) = f32s(&c, &format!("{set}.input"));
        let (qw, _) = f32s(&c, &format!("{set}.importance"));
        let (rows, cols) = (shape[0], shape[1]);
        for (name, kind) in KINDS {
            let want = bytes(&c, &format!("{set}.{name}"));
            let per_row = want.len() / rows;
            for r in 0..rows {
                if set == "edge" && r == SUBNORMAL_ROW && kind == GgufType::Q8_0 {
                    continue;
                }
                let mut got = vec![0u8; per_row];
                quantize_row(kind, &x[r * cols..(r + 1) * cols], &qw, &mut got);
                assert_eq!(
                    got,
                    want[r * per_row..(r + 1) * per_row],
                    "{set} {name} row {r}"
                );
            }
            let t = TensorBuf::from_f32(DType::F32, vec![rows, cols], &x).unwrap();
            let fast = quantize_gguf_weighted(&t.view(), kind, &qw).unwrap();
            let mut reference = vec![0u8; want.len()];
            for (xr, o) in x.chunks(cols).zip(reference.chunks_mut(per_row)) {
                quantize_row(kind, xr, &qw, o);
            }
            assert_eq!(fast, reference, "{set} {name} fast path");
        }
    }
}

#[test]
fn importances_change_what_they_should() {
    let c = golden();
    let (x, shape) = f32s(&c, "wide.input");
    let (qw, _) = f32s(&c, "wide.importance");
    let t = TensorBuf::from_f32(DType::F32, shape, &x).unwrap();
    for (name, kind) in KINDS {
        let plain = quantize_gguf(&t.view(), kind).unwrap();
        let weighted = quantize_gguf_weighted(&t.view(), kind, &qw).unwrap();
        // Q8_0 ignores importances (as ggml does); every other type's
        // searches follow them.
        assert_eq!(plain == weighted, kind == GgufType::Q8_0, "{name}");
    }
    let bad = quantize_gguf_weighted(&t.view(), GgufType::Q4_K, &qw[..512]);
    assert!(bad.unwrap_err().to_string().contains("512 importances"));
}

/// The golden edge rows whose arithmetic leaves the normal f32 range (the
/// subnormal, below-epsilon and 1e±30 rows) and row 4 (one spike among
/// zeros, where the weighted Q5_K search's min reaches its max and ggml
/// divides by zero, and Q5_1's search likewise): the GPU hands them to the
/// CPU (the 32-value types recompute the whole row there, as its σ² is the
/// row's).
const OUTSIDE_NORMAL_RANGE: [usize; 4] = [4, 5, 6, 12];

#[test]
fn gpu_weighted_blocks_equal_ggml() {
    let Some(ctx) = test_gpu().unwrap() else {
        return;
    };
    let gpu = GpuQuant::new(&ctx);
    let c = golden();
    for set in ["edge", "wide"] {
        let (x, shape) = f32s(&c, &format!("{set}.input"));
        let (qw, _) = f32s(&c, &format!("{set}.importance"));
        let cols = shape[1];
        for (name, kind) in KINDS.iter().filter(|(_, k)| *k != GgufType::Q8_0) {
            let allowed: &[usize] = if set == "edge" {
                &OUTSIDE_NORMAL_RANGE
            } else {
                &[]
            };
            gpu_gguf_rows_match(
                &format!("{set} {name}"),
                &x,
                cols,
                &bytes(&c, &format!("{set}.{name}")),
                allowed,
                |w| gpu.quantize_gguf_weighted(w, *kind, &qw),
            );
        }
    }
}

/// The assets checkpoint's linear layers pruned to half by magnitude per
/// row, weighted by the assets calibration file's importances
/// (input_norm² / tokens), on the GPU: every super-block the reference's
/// (the fast path, held to the reference above). A zero's code in each of
/// the search's grids is shared by half its sub-block, so a grid one ulp
/// off moves a block: lavapipe regrouped ggml's (−0.9 + 0.05·is) + 15 as
/// 0.05·is + 14.1 until kexact.wgsl hid the constants (5 rows of Q4_K
/// differed here before).
#[test]
fn gpu_weighted_blocks_of_pruned_weights_equal_the_reference() {
    let Some(ctx) = test_gpu().unwrap() else {
        return;
    };
    let gpu = GpuQuant::new(&ctx);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = Checkpoint::open(root.join("assets/tiny-llama")).unwrap();
    let cal = shears::core::calibration::Calibration::open(
        &root.join("assets/tiny-llama-calibration.safetensors"),
    )
    .unwrap();
    let tokens = cal.tokens().unwrap_or(1).max(1) as f32;
    let mut checked = 0;
    for t in c.tensors.iter().filter(|t| t.shape.len() == 2) {
        let Some(norms) = cal.input_norms(&t.name, t.shape[1]).unwrap() else {
            continue;
        };
        let cols = t.shape[1];
        let mut w = c.view(t).to_f32().unwrap();
        for row in w.chunks_mut(cols) {
            let mut mags: Vec<f32> = row.iter().map(|v| v.abs()).collect();
            mags.sort_by(f32::total_cmp);
            let cut = mags[cols / 2];
            row.iter_mut()
                .filter(|v| v.abs() < cut)
                .for_each(|v| *v = 0.0);
        }
        let qw: Vec<f32> = norms.iter().map(|v| v * v / tokens).collect();
        let buf = TensorBuf::from_f32(DType::F32, t.shape.clone(), &w).unwrap();
        for (_, kind) in KINDS.into_iter().filter(|(_, k)| *k != GgufType::Q8_0) {
            let want = quantize_gguf_weighted(&buf.view(), kind, &qw).unwrap();
            let got = gpu.quantize_gguf_weighted(&buf.view(), kind, &qw).unwrap();
            let bb = kind.block_bytes();
            let bad: Vec<usize> = (0..want.len() / bb)
                .filter(|&b| want[b * bb..(b + 1) * bb] != got.bytes[b * bb..(b + 1) * bb])
                .collect();
            assert!(
                bad.is_empty(),
                "{} {kind:?}: super-blocks {bad:?} differ",
                t.name
            );
            assert_eq!(got.on_cpu, 0, "{} {kind:?}", t.name);
            checked += 1;
        }
    }
    assert_eq!(checked, 14 * 6);
}
