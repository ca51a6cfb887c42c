//! The forward pass against transformers' (tests/golden/forward/, copied
//! from ../shared/golden/forward; see
//! its README): five tiny checkpoints of the families shears runs, with
//! the logits, every layer's hidden states, the next-token NLL and each
//! linear layer's input statistics transformers computed in float32.
//! Hidden states and logits must agree to 1e-4 of their largest magnitude,
//! the mean NLL to 1e-5 relative, the input norms and XᵀX to 1e-4.

use std::path::PathBuf;

use shears::core::model::collect::InputStats;
use shears::core::model::{ModelConfig, NoCapture, Runner, Weights};
use shears::core::reference::forward::Forward;
use shears::core::reference::hessian::Hessian;
use shears::core::{Checkpoint, DType};

const FAMILIES: [&str; 5] = ["llama", "llama3-tied", "mistral", "qwen2", "qwen3"];

fn golden(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/forward")
        .join(family)
}

/// The expected tensors of one family.
struct Expected(Checkpoint);

impl Expected {
    fn f32(&self, name: &str) -> Vec<f32> {
        let t = self.0.get(name).unwrap_or_else(|| panic!("{name} missing"));
        self.0.view(t).to_f32().unwrap()
    }

    fn ids(&self) -> (Vec<u32>, usize, usize) {
        let t = self.0.get("input_ids").unwrap();
        assert_eq!(t.dtype, DType::I64);
        let ids = self
            .0
            .view(t)
            .bytes()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        (ids, t.shape[0], t.shape[1])
    }
}

/// Largest |a − b| over the largest |b|.
fn scaled_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let peak = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / peak
}

/// Runs `family` on `fw` and checks every expected tensor, XᵀX summed by
/// `hess` (the same backend's hessian family).
pub fn check_family(family: &str, fw: &dyn Forward, hess: &dyn Hessian) {
    let dir = golden(family);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let layers = cfg.layers;
    let weights = Weights::open(&ckpt, cfg).unwrap();
    let exp = Expected(Checkpoint::open(dir.join("expected.safetensors")).unwrap());
    let (ids, seqs, seq_len) = exp.ids();
    let runner = Runner::new(&weights, fw, seq_len).unwrap();
    let mut x = runner.embed(&ids).unwrap();
    let tol = 1e-4;
    let err = scaled_error(&x, &exp.f32("hidden.0"));
    assert!(err <= tol, "{family}: embeddings off by {err}");
    let mut stats = InputStats::new(ids.len(), 0, 0, Some(hess));
    for i in 0..layers {
        let lw = weights.layer(i).unwrap();
        runner.layer(&lw, &mut x, &mut stats).unwrap();
        if i + 1 < layers {
            let err = scaled_error(&x, &exp.f32(&format!("hidden.{}", i + 1)));
            assert!(
                err <= tol,
                "{family} on {}: layer {i} off by {err}",
                fw.backend()
            );
        }
    }
    let xn = runner.final_norm(&x).unwrap();
    let err = scaled_error(&xn, &exp.f32(&format!("hidden.{layers}")));
    assert!(err <= tol, "{family}: final norm off by {err}");
    let head = weights.lm_head().unwrap();
    let logits = runner.logits(&head, &xn).unwrap();
    let err = scaled_error(&logits, &exp.f32("logits"));
    assert!(
        err <= tol,
        "{family} on {}: logits off by {err}",
        fw.backend()
    );
    eprintln!(
        "{family} on {}: logits within {err:.1e} of their peak",
        fw.backend()
    );
    let nll = runner.nll(&head, &xn, &ids).unwrap();
    let want = exp.f32("nll");
    assert_eq!(nll.len(), seqs * (seq_len - 1));
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let (got, want) = (mean(&nll), mean(&want));
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "{family}: mean NLL {got} against {want}"
    );
    let tensors = stats.tensors().unwrap();
    let mut seen = 0;
    for (name, t) in &tensors {
        let Some(suffix) = ["input_norm", "input_gram"]
            .into_iter()
            .find(|s| name.ends_with(s))
        else {
            continue;
        };
        let err = scaled_error(&t.view().to_f32().unwrap(), &exp.f32(name));
        assert!(
            err <= tol,
            "{family} on {}: {name} off by {err}",
            hess.backend()
        );
        seen += (suffix == "input_gram") as usize;
    }
    assert_eq!(seen, 7 * layers, "{family}: every linear layer seen");
}

#[test]
fn reference_matches_transformers() {
    for family in FAMILIES {
        let r = shears::core::reference::Reference;
        check_family(family, &r, &r);
    }
}

#[test]
fn fast_cpu_matches_transformers() {
    for family in FAMILIES {
        let f = shears::core::fast::FastCpu;
        check_family(family, &f, &f);
    }
}

/// On the GPU (lavapipe in CI), with the weights' products in blocks of
/// rows small enough to take the chunked path too.
#[test]
fn gpu_matches_transformers() {
    let ctx = match shears::testing::test_gpu() {
        Ok(Some(ctx)) => ctx,
        Ok(None) => return,
        Err(e) => panic!("{e}"),
    };
    let fw = shears::kernels::GpuForward::new(&ctx);
    let hess = shears::kernels::hessian::GpuHessian::new(&ctx);
    for family in FAMILIES {
        check_family(family, &fw, &hess);
    }
    let small = shears::testing::test_gpu()
        .unwrap()
        .expect("opened once")
        .with_chunk_bytes(64 * 1024);
    let fw = shears::kernels::GpuForward::new(&small);
    let hess = shears::kernels::hessian::GpuHessian::new(&small);
    check_family("qwen3", &fw, &hess);
}

#[test]
fn perplexities_match_ppl_json() {
    let text = std::fs::read_to_string(golden("ppl.json")).unwrap();
    let ppl: serde_json::Value = serde_json::from_str(&text).unwrap();
    for family in FAMILIES {
        let dir = golden(family);
        let ckpt = Checkpoint::open(&dir).unwrap();
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let weights = Weights::open(&ckpt, cfg.clone()).unwrap();
        let exp = Expected(Checkpoint::open(dir.join("expected.safetensors")).unwrap());
        let (ids, _, seq_len) = exp.ids();
        let fw = shears::core::reference::Reference;
        let runner = Runner::new(&weights, &fw, seq_len).unwrap();
        let mut x = runner.embed(&ids).unwrap();
        for i in 0..cfg.layers {
            runner
                .layer(&weights.layer(i).unwrap(), &mut x, &mut NoCapture)
                .unwrap();
        }
        let nll = runner
            .nll(
                &weights.lm_head().unwrap(),
                &runner.final_norm(&x).unwrap(),
                &ids,
            )
            .unwrap();
        let mean = nll.iter().map(|&x| x as f64).sum::<f64>() / nll.len() as f64;
        let want = ppl[family].as_f64().unwrap();
        assert!(
            (mean.exp() - want).abs() <= 1e-4 * want,
            "{family}: perplexity {} against {want}",
            mean.exp()
        );
    }
}
