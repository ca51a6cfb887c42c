//! Fast CPU paths: multi-threaded versions of the references that agree with
//! them bit for bit (products, which sum in another order, within
//! `MATMUL_RTOL`). This is what `--backend cpu` runs.

/// The fast CPU backend (`--backend cpu`): multi-threaded, one type
/// implementing every kernel family's trait, equal to [`crate::reference`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FastCpu;

pub mod block_train;
pub mod float;
pub mod forward;
pub mod gguf;
pub mod hessian;
pub mod importance;
pub mod kquants;
pub mod mask;
pub mod matmul;
pub mod quant;
pub mod score;
pub mod select;
pub mod train;

/// Runs `f` compiled for AVX2 and FMA where the CPU has them (the loops it
/// inlines then vectorize eight lanes wide), plainly elsewhere. The
/// arithmetic is the same IEEE operations either way.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { avx2(f) };
    }
    f()
}
