// importance.wgsl: per-element scores, row and column sums of squares, and
// tile statistics. Specification: crates/core/src/reference/importance.rs
// (same order of every sum, same special cases), so results are
// bit-identical to the CPU.
//
// Bindings (group 0), shared by every entry point:
//   0  src     array<u32>   read        the chunk's input as packed words:
//                                       f32 one element per word; f16/bf16
//                                       two, element 2k in the low half.
//   1  dst     array<u32>   read_write  results as f32 bit patterns / counts.
//   2  params  Params       uniform     mirrors `ImportanceParams` (32 bytes).
//
// Override constants:
//   DTYPE  0 = f32, 1 = f16 (unpack2x16float), 2 = bf16 (bits << 16).
//
// Dispatch geometry (all loops are grid-stride, so no dimension of the
// dispatch ever needs more than 65,535 workgroups):
//   elem_abs, elem_square  @workgroup_size(256); x covers elements.
//   row_sumsq              @workgroup_size(256); one workgroup per row.
//   col_partial            @workgroup_size(64, 4); x covers columns, y the
//                          256 lanes (64 workgroups). dst holds 256 × cols
//                          running lane sums that persist across chunks.
//   tile_stats             @workgroup_size(256); one workgroup per tile of
//                          16,384 elements; writes 6 words per tile at
//                          dst[(tile0 + tile) * 6].
//
// Invariants: a chunk starts on a row boundary (rows, cols) or a tile
// boundary (tile_stats); `first` is the element offset of chunk element 0
// inside word 0 (0 or 1, only for 16-bit types); count < 2^31.

struct Params {
    count: u32,   // elements in this chunk
    first: u32,   // offset of element 0 inside the first word
    rows: u32,    // rows in this chunk
    cols: u32,    // elements per row
    row0: u32,    // global index of the chunk's first row
    tile0: u32,   // global index of the chunk's first tile
    _pad0: u32,
    _pad1: u32,
}

override DTYPE: u32 = 0u;

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

const LANES: u32 = 256u;
const TILE: u32 = 16384u;
// 2^-32: smaller magnitudes add nothing to sums of squares.
const SQUARE_FLOOR: f32 = 2.3283064e-10;
const MIN_NORMAL: f32 = 1.1754944e-38;
const F32_MAX: f32 = 3.4028235e38;
const INF_BITS: u32 = 0x7f800000u;

var<workgroup> sh_a: array<f32, 256>;
var<workgroup> sh_b: array<f32, 256>;
var<workgroup> sh_min: array<f32, 256>;
var<workgroup> sh_max: array<f32, 256>;
var<workgroup> sh_zeros: array<u32, 256>;
var<workgroup> sh_bad: array<u32, 256>;

// Element i of the chunk as f32 bits.
fn load_bits(i: u32) -> u32 {
    let k = i + params.first;
    if (DTYPE == 0u) {
        return src[k];
    }
    let w = src[k >> 1u];
    let odd = (k & 1u) == 1u;
    if (DTYPE == 1u) {
        let v = unpack2x16float(w);
        return bitcast<u32>(select(v.x, v.y, odd));
    }
    return select(w << 16u, w & 0xffff0000u, odd);
}

fn is_nonfinite(bits: u32) -> bool {
    return (bits & INF_BITS) == INF_BITS;
}

// acc + x², as three exact products added in order (see the reference).
fn add_square(acc: f32, bits: u32) -> f32 {
    let a = bitcast<f32>(bits & 0x7fffffffu);
    if (!(a >= SQUARE_FLOOR) || is_nonfinite(bits)) {
        return acc;
    }
    let x = bitcast<f32>(bits);
    let hi = bitcast<f32>(bits & 0xfffff000u);
    let lo = x - hi;
    return ((acc + hi * hi) + (2.0 * hi) * lo) + lo * lo;
}

fn sum_term(bits: u32) -> f32 {
    let e = bits & INF_BITS;
    if (e == 0u || e == INF_BITS) {
        return 0.0;
    }
    return bitcast<f32>(bits);
}

// Folds sh_a and sh_b: lane t += lane t + stride, for stride 128, 64, .., 1.
fn tree_sums(t: u32) {
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if (t < s) {
            sh_a[t] = sh_a[t] + sh_a[t + s];
            sh_b[t] = sh_b[t] + sh_b[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn elem_abs(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    for (var i = gid.x; i < params.count; i = i + stride) {
        let a = load_bits(i) & 0x7fffffffu;
        // Every NaN becomes the canonical quiet NaN: drivers disagree on payloads.
        dst[i] = select(a, 0x7fc00000u, a > INF_BITS);
    }
}

@compute @workgroup_size(256)
fn elem_square(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    for (var i = gid.x; i < params.count; i = i + stride) {
        let bits = load_bits(i);
        if (is_nonfinite(bits)) {
            dst[i] = INF_BITS;
        } else {
            let x = bitcast<f32>(bits);
            let s = x * x;
            dst[i] = select(0u, bitcast<u32>(s), s >= MIN_NORMAL);
        }
    }
}

@compute @workgroup_size(256)
fn row_sumsq(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    for (var r = wid.x; r < params.rows; r = r + nwg.x) {
        var acc = 0.0;
        let base = r * params.cols;
        for (var j = t; j < params.cols; j = j + LANES) {
            acc = add_square(acc, load_bits(base + j));
        }
        sh_a[t] = acc;
        sh_b[t] = 0.0;
        workgroupBarrier();
        tree_sums(t);
        if (t == 0u) {
            dst[r] = bitcast<u32>(sh_a[0]);
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(64, 4)
fn col_partial(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.y;
    if (p >= LANES) {
        return;
    }
    // First row of this chunk that belongs to lane p.
    let i0 = (p + LANES - (params.row0 % LANES)) % LANES;
    let stride = nwg.x * 64u;
    for (var j = gid.x; j < params.cols; j = j + stride) {
        let slot = p * params.cols + j;
        var acc = bitcast<f32>(dst[slot]);
        for (var i = i0; i < params.rows; i = i + LANES) {
            acc = add_square(acc, load_bits(i * params.cols + j));
        }
        dst[slot] = bitcast<u32>(acc);
    }
}

@compute @workgroup_size(256)
fn tile_stats(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    let tiles = (params.count + TILE - 1u) / TILE;
    for (var tile = wid.x; tile < tiles; tile = tile + nwg.x) {
        var sum = 0.0;
        var sq = 0.0;
        var lo = F32_MAX;
        var hi = -F32_MAX;
        var zeros = 0u;
        var bad = 0u;
        for (var s = 0u; s < TILE / LANES; s = s + 1u) {
            let i = tile * TILE + s * LANES + t;
            if (i < params.count) {
                let bits = load_bits(i);
                sum = sum + sum_term(bits);
                sq = add_square(sq, bits);
                if (is_nonfinite(bits)) {
                    bad = bad + 1u;
                } else {
                    let x = bitcast<f32>(bits);
                    lo = min(lo, x);
                    hi = max(hi, x);
                }
                if ((bits & 0x7fffffffu) == 0u) {
                    zeros = zeros + 1u;
                }
            }
        }
        sh_a[t] = sum;
        sh_b[t] = sq;
        sh_min[t] = lo;
        sh_max[t] = hi;
        sh_zeros[t] = zeros;
        sh_bad[t] = bad;
        workgroupBarrier();
        for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
            if (t < s) {
                sh_a[t] = sh_a[t] + sh_a[t + s];
                sh_b[t] = sh_b[t] + sh_b[t + s];
                sh_min[t] = min(sh_min[t], sh_min[t + s]);
                sh_max[t] = max(sh_max[t], sh_max[t + s]);
                sh_zeros[t] = sh_zeros[t] + sh_zeros[t + s];
                sh_bad[t] = sh_bad[t] + sh_bad[t + s];
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            let o = (params.tile0 + tile) * 6u;
            dst[o] = bitcast<u32>(sh_a[0]);
            dst[o + 1u] = bitcast<u32>(sh_b[0]);
            dst[o + 2u] = bitcast<u32>(sh_min[0]);
            dst[o + 3u] = bitcast<u32>(sh_max[0]);
            dst[o + 4u] = sh_zeros[0];
            dst[o + 5u] = sh_bad[0];
        }
        workgroupBarrier();
    }
}
