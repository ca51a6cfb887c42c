// score.wgsl: pruning scores as u32 keys, prepended to select.wgsl and
// mask.wgsl (kernels/src/source.rs joins them). Specification:
// crates/core/src/reference/scores.rs.
//
// Bindings shared by every scored kernel (group 0):
//   0  src     array<u32>  read        weight chunk, packed as DTYPE says
//   1  aux     array<u32>  read        Wanda: input norms as f32 bits [cols];
//                                      Taylor: gradient chunk (AUX_DTYPE);
//                                      otherwise one unused word
//   2  params  Params      uniform     mirrors `ScoredParams` (64 bytes)
//   3  out0    array<atomic<u32>>  read_write   family output
//   4  out1    array<u32>          read_write   family output / input
//
// Override constants: DTYPE and AUX_DTYPE (0 f32, 1 f16, 2 bf16), METHOD
// (0 magnitude, 1 wanda, 2 taylor, 3 random).
//
// Invariants: element i of the chunk is element base + i of the tensor;
// `first` / `aux_first` are the offsets (0 or 1) of element 0 inside the
// first word of src / aux; tensors have fewer than 2^32 elements.

struct Params {
    count: u32,      // elements in this chunk
    first: u32,
    aux_first: u32,
    base: u32,       // flat index of chunk element 0
    cols: u32,       // row length
    salt: u32,       // random method
    lo: u32,         // census bracket / cut key
    hi: u32,
    ties: u32,       // ties this chunk may still prune
    k: u32,          // row_cuts: elements pruned per row
    hi16: u32,       // histogram: 0xffffffff for top halves, else the bin refined
    cap: u32,        // census: capacity of the inside list
    rows: u32,       // rows in this chunk
    n: u32,          // N:M
    m: u32,
    _pad: u32,
}

override DTYPE: u32 = 0u;
override AUX_DTYPE: u32 = 0u;
override METHOD: u32 = 0u;

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> aux: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read_write> out0: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> out1: array<u32>;

const INF_BITS: u32 = 0x7f800000u;

fn unpack_bits(w: u32, odd: bool, dtype: u32) -> u32 {
    if (dtype == 1u) {
        let v = unpack2x16float(w);
        return bitcast<u32>(select(v.x, v.y, odd));
    }
    return select(w << 16u, w & 0xffff0000u, odd);
}

fn load_w(i: u32) -> u32 {
    let k = i + params.first;
    if (DTYPE == 0u) {
        return src[k];
    }
    return unpack_bits(src[k >> 1u], (k & 1u) == 1u, DTYPE);
}

fn load_aux(i: u32) -> u32 {
    let k = i + params.aux_first;
    if (AUX_DTYPE == 0u) {
        return aux[k];
    }
    return unpack_bits(aux[k >> 1u], (k & 1u) == 1u, AUX_DTYPE);
}

fn mix32(x0: u32) -> u32 {
    var x = x0;
    x = x ^ (x >> 16u);
    x = x * 0x21f0aaadu;
    x = x ^ (x >> 15u);
    x = x * 0x735a2d97u;
    x = x ^ (x >> 15u);
    return x;
}

// |x| with every NaN made the canonical quiet NaN.
fn abs_bits(bits: u32) -> u32 {
    let a = bits & 0x7fffffffu;
    return select(a, 0x7fc00000u, a > INF_BITS);
}

// Canonical key of a score: subnormal -> 0, NaN -> 0x7fc00000.
fn key_of(s: f32) -> u32 {
    let b = bitcast<u32>(s) & 0x7fffffffu;
    if (b > INF_BITS) {
        return 0x7fc00000u;
    }
    if (b < 0x00800000u) {
        return 0u;
    }
    return b;
}

// A factor of a product: subnormal values count as zero on every backend.
fn factor(bits: u32) -> f32 {
    return select(bitcast<f32>(bits), 0.0, (bits & INF_BITS) == 0u);
}

// The key of chunk element i.
fn score_key(i: u32) -> u32 {
    if (METHOD == 3u) {
        return 0x3f800000u | (mix32((params.base + i) ^ mix32(params.salt)) >> 9u);
    }
    let wb = load_w(i);
    if (METHOD == 0u) {
        return abs_bits(wb);
    }
    if (METHOD == 1u) {
        let j = (params.base + i) % params.cols;
        return key_of(factor(abs_bits(wb)) * factor(aux[j]));
    }
    return key_of(factor(wb) * factor(load_aux(i)));
}
