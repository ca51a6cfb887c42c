//! Selection and masking: exact counts, the tie rule, and the fast path and
//! the census-based cut against the plain sort of the reference.

use proptest::prelude::*;
use shears_core::fast::mask::FastCpu as FastMask;
use shears_core::fast::score::{keys_into, Scratch};
use shears_core::fast::select::FastCpu as FastSelect;
use shears_core::reference::mask::{self, Mask, Reference as RefMask};
use shears_core::reference::score::{Method, Scorer};
use shears_core::reference::select::{
    global_cut, prune_count, select_cut, tensor_cut, Reference as RefSelect, Select,
};
use shears_core::{DType, TensorBuf};

/// Values with few distinct magnitudes when `levels` is small (ties).
fn values(n: usize, seed: u64, levels: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % levels as u64) as f32 - levels as f32 / 2.0;
            v * 0.013 * if x & 1 == 0 { 1.0 } else { -1.0 }
        })
        .collect()
}

fn all_keys(buf: &TensorBuf, scorer: &Scorer) -> Vec<u32> {
    let mut k = Vec::new();
    scorer
        .keys(&buf.view(), 0..buf.view().numel(), &mut k)
        .unwrap();
    k
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn tensor_scope_is_exact(
        dtype in dtype(),
        rows in 1usize..300,
        cols in 1usize..200,
        levels in prop_oneof![Just(3u32), Just(50), Just(1_000_000)],
        sparsity in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values(rows * cols, seed, levels)).unwrap();
        let w = buf.view();
        let scorer = Scorer::magnitude();
        let n = (rows * cols) as u64;
        let k = prune_count(sparsity, n);
        let want = select_cut(&all_keys(&buf, &scorer), k);
        prop_assert_eq!(tensor_cut(&FastSelect, &w, &scorer, k).unwrap(), want);
        prop_assert_eq!(tensor_cut(&RefSelect, &w, &scorer, k).unwrap(), want);
        let (m_ref, used_ref) = RefMask.apply_cut(&w, &scorer, want).unwrap();
        let (m_fast, used_fast) = FastMask.apply_cut(&w, &scorer, want).unwrap();
        prop_assert_eq!(&m_ref, &m_fast);
        prop_assert_eq!(used_ref, used_fast);
        prop_assert_eq!(m_ref.iter().filter(|&&m| m == 0).count() as u64, k);
    }

    #[test]
    fn row_scope_is_exact(
        dtype in dtype(),
        rows in 1usize..100,
        cols in 1usize..300,
        levels in prop_oneof![Just(3u32), Just(1_000_000)],
        sparsity in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values(rows * cols, seed, levels)).unwrap();
        let w = buf.view();
        let scorer = Scorer::magnitude();
        let k = prune_count(sparsity, cols as u64);
        let cuts = FastSelect.row_cuts(&w, &scorer, k).unwrap();
        prop_assert_eq!(&cuts, &RefSelect.row_cuts(&w, &scorer, k).unwrap());
        let m = FastMask.apply_row_cuts(&w, &scorer, &cuts).unwrap();
        prop_assert_eq!(&m, &RefMask.apply_row_cuts(&w, &scorer, &cuts).unwrap());
        for row in m.chunks(cols) {
            prop_assert_eq!(row.iter().filter(|&&x| x == 0).count() as u64, k);
        }
    }

    #[test]
    fn n_m_keeps_the_largest(
        dtype in dtype(),
        rows in 1usize..40,
        groups in 1usize..40,
        (n, m) in prop_oneof![Just((2usize, 4usize)), Just((1, 4)), Just((3, 8)), Just((1, 2)), Just((5, 16))],
        levels in prop_oneof![Just(2u32), Just(1_000_000)],
        seed in any::<u64>(),
    ) {
        let cols = groups * m;
        let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &values(rows * cols, seed, levels)).unwrap();
        let w = buf.view();
        let scorer = Scorer::magnitude();
        let fast = FastMask.nm(&w, &scorer, n, m).unwrap();
        prop_assert_eq!(&fast, &RefMask.nm(&w, &scorer, n, m).unwrap());
        let keys = all_keys(&buf, &scorer);
        for (g, k) in fast.chunks(m).zip(keys.chunks(m)) {
            prop_assert_eq!(g.iter().filter(|&&x| x == 0).count(), m - n);
            // Every kept element outranks every pruned one in (key, index).
            for i in 0..m {
                for j in 0..m {
                    if g[i] == 1 && g[j] == 0 {
                        prop_assert!((k[i], i) > (k[j], j));
                    }
                }
            }
        }
    }
}

#[test]
fn global_scope_equals_one_naive_sort() {
    let shapes = [(30usize, 17usize), (64, 64), (7, 3), (100, 40)];
    for (dtype, levels) in [
        (DType::BF16, 40u32),
        (DType::F32, 1_000_000),
        (DType::F16, 7),
    ] {
        let bufs: Vec<TensorBuf> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(r, c))| {
                TensorBuf::from_f32(dtype, vec![r, c], &values(r * c, i as u64 + 9, levels))
                    .unwrap()
            })
            .collect();
        let items: Vec<_> = bufs
            .iter()
            .map(|b| (b.view(), Scorer::magnitude()))
            .collect();
        let all: Vec<u32> = bufs
            .iter()
            .flat_map(|b| all_keys(b, &Scorer::magnitude()))
            .collect();
        for s in [0.0, 0.1, 0.5, 0.77, 0.999] {
            let k = prune_count(s, all.len() as u64);
            let want = select_cut(&all, k);
            let cut = global_cut(&FastSelect, &items, k).unwrap();
            assert_eq!(cut, want, "{dtype} s={s}");
            // Masks tensor by tensor with the ties running on, against the
            // naive mask of the concatenation.
            let (naive, _) = mask::mask_from_cut(&all, want);
            let mut left = cut.ties;
            let mut joined = Vec::new();
            for (w, scorer) in &items {
                let (m, used) = FastMask
                    .apply_cut(
                        w,
                        scorer,
                        shears_core::reference::select::Cut {
                            key: cut.key,
                            ties: left,
                        },
                    )
                    .unwrap();
                left -= used;
                joined.extend(m);
            }
            assert_eq!(joined, naive, "{dtype} s={s}");
            assert_eq!(joined.iter().filter(|&&m| m == 0).count() as u64, k);
        }
    }
}

#[test]
fn wanda_with_unit_norms_is_magnitude_per_row() {
    let (rows, cols) = (37, 64);
    let buf =
        TensorBuf::from_f32(DType::BF16, vec![rows, cols], &values(rows * cols, 5, 30)).unwrap();
    let w = buf.view();
    let ones = vec![1.0f32; cols];
    let wanda = Scorer {
        method: Method::Wanda,
        norms: Some(&ones),
        grad: None,
        salt: 0,
    };
    let k = prune_count(0.5, cols as u64);
    let a = FastSelect.row_cuts(&w, &wanda, k).unwrap();
    let b = FastSelect.row_cuts(&w, &Scorer::magnitude(), k).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        FastMask.apply_row_cuts(&w, &wanda, &a).unwrap(),
        FastMask
            .apply_row_cuts(&w, &Scorer::magnitude(), &b)
            .unwrap()
    );
}

#[test]
fn wanda_prunes_a_dead_input_feature_first() {
    let (rows, cols) = (20, 32);
    let mut vals = values(rows * cols, 11, 1_000_000);
    for v in vals.iter_mut() {
        *v = v.abs() + 0.5; // no zero weights
    }
    let buf = TensorBuf::from_f32(DType::F32, vec![rows, cols], &vals).unwrap();
    let mut norms = vec![1.0f32; cols];
    norms[13] = 0.0;
    let wanda = Scorer {
        method: Method::Wanda,
        norms: Some(&norms),
        grad: None,
        salt: 0,
    };
    let w = buf.view();
    let cuts = FastSelect.row_cuts(&w, &wanda, 1).unwrap();
    let m = FastMask.apply_row_cuts(&w, &wanda, &cuts).unwrap();
    for row in m.chunks(cols) {
        let pruned: Vec<usize> = (0..cols).filter(|&j| row[j] == 0).collect();
        assert_eq!(pruned, vec![13]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The specialised fast scoring equals the reference, element by element.
    #[test]
    fn fast_keys_equal_reference_keys(
        dtype in dtype(),
        gdtype in dtype(),
        method in prop_oneof![Just(Method::Magnitude), Just(Method::Wanda), Just(Method::Taylor), Just(Method::Random)],
        rows in 1usize..20,
        cols in 1usize..70,
        seed in any::<u64>(),
        start in 0usize..50,
    ) {
        let n = rows * cols;
        let mut v = values(n, seed, 1_000_000);
        for (i, x) in v.iter_mut().enumerate() {
            match i % 13 {
                0 => *x = f32::NAN,
                1 => *x = f32::NEG_INFINITY,
                2 => *x = 1.0e-41,
                3 => *x = -0.0,
                _ => {}
            }
        }
        let buf = TensorBuf::from_f32(dtype, vec![rows, cols], &v).unwrap();
        let g = TensorBuf::from_f32(gdtype, vec![rows, cols], &values(n, seed ^ 5, 1_000_000)).unwrap();
        let mut norms: Vec<f32> = values(cols, seed ^ 9, 1000).iter().map(|x| x.abs()).collect();
        norms[0] = 1.0e-40;
        let scorer = Scorer { method, norms: Some(&norms), grad: Some(g.view()), salt: seed as u32 };
        let w = buf.view();
        let r = start.min(n - 1)..n;
        let mut want = Vec::new();
        scorer.keys(&w, r.clone(), &mut want).unwrap();
        let mut got = vec![0u32; r.len()];
        keys_into(&scorer, &w, r, &mut got, &mut Scratch::default()).unwrap();
        prop_assert_eq!(want, got);
    }
}
