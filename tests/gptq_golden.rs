//! GPTQ and SparseGPT on the golden forward models (tests/golden/forward),
//! with the XᵀX transformers computed for every linear layer over the
//! golden tokens: the CPU reference and the fast CPU path agree as stated
//! in DESIGN.md's hessian row — at least 99% of codes (and mask entries)
//! equal, and the Hessian-weighted errors within 3% (the factor is f64 in
//! the reference and f32 on the fast path). The GPU backend runs this
//! family on the fast CPU path until it has WGSL kernels, so these two
//! are every implementation there is.

use std::path::PathBuf;

use shears::core::fast::FastCpu;
use shears::core::reference::hessian::{ActOrder, GroupScales, Hessian, Job, QuantJob, Sparsify};
use shears::core::reference::quant::{QuantSpec, Rounding};
use shears::core::reference::Reference;
use shears::core::Checkpoint;

const FAMILIES: [&str; 5] = ["llama", "llama3-tied", "mistral", "qwen2", "qwen3"];

/// Fraction of codes and mask entries that must be equal.
const SAME_MIN: f64 = 0.99;
/// Relative difference of the weighted errors allowed.
const ERROR_RTOL: f64 = 0.03;

fn golden(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/forward")
        .join(family)
}

fn same<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

#[test]
fn reference_and_fast_path_agree_on_every_golden_layer() {
    let mut layers = 0;
    for family in FAMILIES {
        let model = Checkpoint::open(golden(family).join("model.safetensors")).unwrap();
        let expected = Checkpoint::open(golden(family).join("expected.safetensors")).unwrap();
        for t in model
            .tensors
            .iter()
            .filter(|t| t.name.contains("_proj.weight"))
        {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let g = expected
                .get(&format!("{}.input_gram", t.name))
                .unwrap_or_else(|| panic!("{family}: no XᵀX of {}", t.name));
            let gram = expected.view(g).to_f32().unwrap();
            let w = model.view(t).to_f32().unwrap();
            let quant = QuantJob {
                spec: QuantSpec {
                    bits: 4,
                    group: Some(32),
                    symmetric: true,
                },
                rounding: Rounding::Nearest,
                dtype: t.dtype,
                scales: GroupScales::AsReached,
            };
            let jobs = [
                (ActOrder::None, Some(quant), None),
                (ActOrder::Group, Some(quant), None),
                (ActOrder::None, None, Some(Sparsify::Unstructured(0.5))),
                (
                    ActOrder::None,
                    Some(quant),
                    Some(Sparsify::Pattern { n: 2, m: 4 }),
                ),
            ];
            for (order, quant, prune) in jobs {
                let job = Job {
                    quant,
                    prune,
                    block: 32,
                };
                let what = format!("{family} {} {order:?} {quant:?} {prune:?}", t.name);
                let fa = Reference.factor(&gram, cols, 0.01, order).unwrap();
                let fb = FastCpu.factor(&gram, cols, 0.01, order).unwrap();
                let a = Reference.solve(&w, rows, &fa, &job).unwrap();
                let b = FastCpu.solve(&w, rows, &fb, &job).unwrap();
                if let (Some(x), Some(y)) = (&a.quantized, &b.quantized) {
                    let s = same(&x.codes, &y.codes);
                    assert!(s >= SAME_MIN, "{what}: {:.4} of codes equal", s);
                }
                assert_eq!(a.g_idx, b.g_idx, "{what}: g_idx");
                if let (Some(x), Some(y)) = (&a.keep, &b.keep) {
                    let s = same(x, y);
                    assert!(s >= SAME_MIN, "{what}: {:.4} of the mask equal", s);
                }
                let ea = Reference
                    .weighted_error(&w, &a.values, rows, &gram)
                    .unwrap();
                let eb = FastCpu.weighted_error(&w, &b.values, rows, &gram).unwrap();
                assert!(
                    (ea - eb).abs() <= ERROR_RTOL * ea.max(1e-12),
                    "{what}: weighted error {ea:.6e} vs {eb:.6e}"
                );
                layers += 1;
            }
        }
    }
    assert_eq!(layers, 5 * 2 * 7 * 4, "every layer of every family");
}
