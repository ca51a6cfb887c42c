//! The root package of the shears workspace: it owns the integration tests
//! (`tests/`) and the criterion benches (`benches/`), and offers them the
//! helpers below. The tool itself is `shears-cli`; the libraries are
//! `shears-core` and `shears-kernels`.

pub use shears_core as core;
pub use shears_kernels as kernels;

/// Helpers shared by tests and benches.
pub mod testing {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;
    use shears_core::reference::quant::{qparams, round_to, QuantSpec};
    use shears_kernels::quant::GgufBlocks;
    use shears_kernels::GpuContext;

    /// `tokens` calibration-like input rows of width `n` that share about
    /// n/3 latent factors plus 5% noise: an ill-conditioned XᵀX, seeded.
    pub fn correlated_inputs(tokens: usize, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = (n / 3).max(1);
        let a: Vec<f32> = (0..r * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut x = vec![0.0f32; tokens * n];
        for row in x.chunks_mut(n.max(1)) {
            let z: Vec<f32> = (0..r).map(|_| rng.random_range(-1.0..1.0)).collect();
            for (j, v) in row.iter_mut().enumerate() {
                let s: f32 = (0..r).map(|k| z[k] * a[k * n + j]).sum();
                *v = s + 0.05 * rng.random_range(-1.0f32..1.0);
            }
        }
        x
    }

    /// GGUF blocks from a GPU path (`quantize`) against `want`, the bytes
    /// ggml made of the f32 rows of `x` (`cols` wide): row by row, each
    /// equal and, where the GPU handed blocks to the CPU, the row listed in
    /// `allowed`; then all rows in one call. `label` names the case.
    pub fn gpu_gguf_rows_match(
        label: &str,
        x: &[f32],
        cols: usize,
        want: &[u8],
        allowed: &[usize],
        quantize: impl Fn(&shears_core::TensorView) -> shears_kernels::Result<GgufBlocks>,
    ) {
        use shears_core::{DType, TensorBuf};
        let rows = x.len() / cols;
        let per_row = want.len() / rows;
        let mut on_cpu = Vec::new();
        for (r, row) in x.chunks(cols).enumerate() {
            let t = TensorBuf::from_f32(DType::F32, vec![1, cols], row).unwrap();
            let got = quantize(&t.view()).unwrap();
            assert_eq!(
                got.bytes,
                want[r * per_row..(r + 1) * per_row],
                "{label} row {r} on the GPU ({} blocks on the CPU)",
                got.on_cpu
            );
            if got.on_cpu > 0 {
                on_cpu.push(r);
            }
        }
        eprintln!("{label}: rows finished on the CPU: {on_cpu:?}");
        assert!(
            on_cpu.iter().all(|r| allowed.contains(r)),
            "{label}: rows {on_cpu:?} fell back to the CPU"
        );
        let t = TensorBuf::from_f32(DType::F32, vec![rows, cols], x).unwrap();
        assert_eq!(
            quantize(&t.view()).unwrap().bytes,
            want,
            "{label} in one dispatch"
        );
    }

    /// Whether `SHEARS_REQUIRE_GPU=1` asks that a missing adapter fail the
    /// GPU tests instead of skipping them.
    pub fn gpu_required() -> bool {
        std::env::var("SHEARS_REQUIRE_GPU").is_ok_and(|v| v == "1")
    }

    /// The GPU the tests run on: `Ok(Some)` when an adapter opened,
    /// `Ok(None)` when there is none and skipping is allowed, `Err` with
    /// the reason when there is none and `SHEARS_REQUIRE_GPU=1`.
    pub fn test_gpu() -> Result<Option<GpuContext>, String> {
        match GpuContext::new() {
            Ok(ctx) => Ok(Some(ctx)),
            Err(e) if gpu_required() => Err(format!("SHEARS_REQUIRE_GPU=1 but {e}")),
            Err(e) => {
                eprintln!("GPU tests skipped: {e} (set SHEARS_REQUIRE_GPU=1 to fail instead)");
                Ok(None)
            }
        }
    }

    /// `n` seeded test values: Gaussian-like, with zeros, negative zeros,
    /// large values, values below the square floor and, when `specials`,
    /// NaN and infinities mixed in.
    pub fn test_values(n: usize, seed: u64, specials: bool) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let r: u32 = rng.random_range(0..97);
                match r {
                    0 => 0.0,
                    1 => -0.0,
                    2 => 1.0e-12,
                    3 => -3.0e4,
                    4 if specials => f32::NAN,
                    5 if specials => f32::INFINITY,
                    6 if specials => f32::NEG_INFINITY,
                    _ => rng.sample::<f32, _>(StandardNormal) * 0.5,
                }
            })
            .collect()
    }

    /// Values next to rounding ties of x / s: every group starts with its
    /// absmax A (so the group's scale s is known in advance), the others are
    /// the f32 nearest (k + ½)·s, nudged by −1, 0 or +1 ulp, so x / s sits within
    /// an ulp of a tie and only a correctly rounded quotient gets every code.
    pub fn near_ties(
        spec: &QuantSpec,
        dtype: shears_core::DType,
        rows: usize,
        cols: usize,
        seed: u64,
    ) -> Vec<f32> {
        let group = spec.group_len(cols);
        let noise = test_values(rows * cols, seed, false);
        let qmax = spec.qmax() as f32;
        let mut out = vec![0.0f32; rows * cols];
        for r in 0..rows {
            for g0 in (0..cols).step_by(group) {
                let a = 0.5 + (noise[r * cols + g0].abs() % 0.5);
                let a = round_to(dtype, a);
                let s = qparams(spec, &[a, -a], dtype).scale as f64;
                out[r * cols + g0] = a;
                for j in g0 + 1..(g0 + group).min(cols) {
                    let k = (noise[r * cols + j] * 40.0)
                        .round()
                        .clamp(-qmax + 1.0, qmax - 2.0) as f64;
                    let t = ((k + 0.5) * s) as f32;
                    let nudged = f32::from_bits((t.to_bits() as i64 + (j as i64 % 3) - 1) as u32);
                    out[r * cols + j] = round_to(dtype, nudged);
                }
            }
        }
        out
    }
}
