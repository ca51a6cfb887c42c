//! The WGSL sources of every kernel family, embedded at build time. One file
//! per family under `shaders/`; no WGSL is generated from Rust strings.

/// `shaders/importance.wgsl`.
pub const IMPORTANCE: &str = include_str!("../../../shaders/importance.wgsl");

/// `shaders/score.wgsl` + `shaders/select.wgsl`: the scored prelude (score
/// keys and the bindings every scored kernel shares) and the family.
pub const SELECT: &str = concat!(
    include_str!("../../../shaders/score.wgsl"),
    include_str!("../../../shaders/select.wgsl")
);

/// `shaders/score.wgsl` + `shaders/mask.wgsl`.
pub const MASK: &str = concat!(
    include_str!("../../../shaders/score.wgsl"),
    include_str!("../../../shaders/mask.wgsl")
);

/// `shaders/matmul.wgsl`.
pub const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");

/// `shaders/div_rn.wgsl` + `shaders/qparams.wgsl` + `shaders/load.wgsl` +
/// `shaders/kexact.wgsl` + `shaders/kweighted.wgsl` + `shaders/kquant.wgsl`
/// (GGUF's K-quants and Q5 blocks, on quant.wgsl's bindings) +
/// `shaders/quant.wgsl`.
pub const QUANT: &str = concat!(
    include_str!("../../../shaders/div_rn.wgsl"),
    include_str!("../../../shaders/qparams.wgsl"),
    include_str!("../../../shaders/load.wgsl"),
    include_str!("../../../shaders/kexact.wgsl"),
    include_str!("../../../shaders/kweighted.wgsl"),
    include_str!("../../../shaders/kquant.wgsl"),
    include_str!("../../../shaders/quant.wgsl")
);

/// `shaders/div_rn.wgsl` + `shaders/qparams.wgsl` + `shaders/load.wgsl` +
/// `shaders/minifloat.wgsl` + `shaders/float.wgsl`.
pub const FLOAT: &str = concat!(
    include_str!("../../../shaders/div_rn.wgsl"),
    include_str!("../../../shaders/qparams.wgsl"),
    include_str!("../../../shaders/load.wgsl"),
    include_str!("../../../shaders/minifloat.wgsl"),
    include_str!("../../../shaders/float.wgsl")
);

/// `shaders/div_rn.wgsl` + `shaders/qparams.wgsl` + `shaders/hessian.wgsl`.
pub const HESSIAN: &str = concat!(
    include_str!("../../../shaders/div_rn.wgsl"),
    include_str!("../../../shaders/qparams.wgsl"),
    include_str!("../../../shaders/hessian.wgsl")
);

/// `shaders/factor.wgsl`: the Hessian's Gram sums and factor.
pub const FACTOR: &str = include_str!("../../../shaders/factor.wgsl");

/// `shaders/div_rn.wgsl` + `shaders/minifloat.wgsl` +
/// `shaders/train_layout.wgsl` + `shaders/train.wgsl`.
pub const TRAIN: &str = concat!(
    include_str!("../../../shaders/div_rn.wgsl"),
    include_str!("../../../shaders/minifloat.wgsl"),
    include_str!("../../../shaders/train_layout.wgsl"),
    include_str!("../../../shaders/train.wgsl")
);

/// `shaders/train_layout.wgsl` + `shaders/block.wgsl`: a decoder block's
/// operations for block-wise distillation (on the training family's bind
/// layout).
pub const BLOCK: &str = concat!(
    include_str!("../../../shaders/train_layout.wgsl"),
    include_str!("../../../shaders/block.wgsl")
);

/// `shaders/forward.wgsl`.
pub const FORWARD: &str = include_str!("../../../shaders/forward.wgsl");

/// Every shader module as it is compiled, by family name (select and mask
/// carry the score prelude), for validation and the pipeline cache.
pub const ALL: &[(&str, &str)] = &[
    ("importance", IMPORTANCE),
    ("select", SELECT),
    ("mask", MASK),
    ("matmul", MATMUL),
    ("quant", QUANT),
    ("float", FLOAT),
    ("train", TRAIN),
    ("block", BLOCK),
    ("forward", FORWARD),
    ("hessian", HESSIAN),
    ("factor", FACTOR),
];
