// matmul.wgsl: Y = X·(W⊙M)ᵀ (masked_matmul) and Y = X·dequant(Q)ᵀ read
// straight from packed codes and scales (dequant_matmul), tiled in workgroup
// memory, f32 accumulate. Specification: crates/core/src/reference/matmul.rs
// (sums in another order; agreement within MATMUL_RTOL).
//
// Bindings (group 0):
//   0  w       array<u32>  read        masked: weight chunk [rows, inn],
//                                      packed (DTYPE); dequant: code words
//                                      [rows, wpr], BITS bits each, least
//                                      significant first, offset 2^(BITS-1)
//   1  x       array<f32>  read        inputs [p, inn]
//   2  params  Params      uniform     mirrors `MatmulParams` (32 bytes)
//   3  side    array<u32>  read        masked: one mask byte per chunk
//                                      element, 4 a word (read only when
//                                      HAS_MASK); dequant: f32 bits of the
//                                      scales [rows, groups]
//   4  y       array<f32>  read_write  outputs [p, rows] of this chunk
//   5  zps     array<i32>  read        dequant: zero points [rows, groups]
//                                      (read only when HAS_ZP)
//
// Override constants: DTYPE (0 f32, 1 f16, 2 bf16), HAS_MASK (0 or 1),
// BITS (0 for the masked product, 4 or 8 for the dequantizing one), HAS_ZP,
// X_T and W_T (product_f32: operands stored transposed).
// Dispatch: @workgroup_size(16, 16); x covers rows (16 a group), y covers
// the p input rows. `first` is the offset of element 0 in the first word.

struct Params {
    p: u32,
    inn: u32,
    rows: u32,
    first: u32,
    group: u32,
    groups: u32,
    wpr: u32,
    pad: u32,
}

override DTYPE: u32 = 0u;
override HAS_MASK: u32 = 0u;
override BITS: u32 = 0u;
override HAS_ZP: u32 = 0u;
// f32 products of training (DTYPE 0, no mask, whole matrices): X_T = 1 reads
// x stored [inn, p]; W_T = 1 reads the weight stored [inn, rows].
override X_T: u32 = 0u;
override W_T: u32 = 0u;

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> side: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> zps: array<i32>;

const TS: u32 = 16u;

var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

// (q − zp)·scale of element (row, k) of the chunk's packed codes.
fn qweight(row: u32, k: u32) -> f32 {
    // BITS is 0 in masked_matmul's pipeline, where this is never called;
    // 8 then keeps the override expressions below defined.
    let bits = select(BITS, 8u, BITS == 0u);
    let per = 32u / bits;
    let word = w[row * params.wpr + k / per];
    let u = (word >> ((k % per) * bits)) & ((1u << bits) - 1u);
    let q = i32(u) - i32(1u << (bits - 1u));
    let g = row * params.groups + k / params.group;
    var zp = 0;
    if (HAS_ZP == 1u) {
        zp = zps[g];
    }
    return f32(q - zp) * bitcast<f32>(side[g]);
}

fn weight(row: u32, k: u32) -> f32 {
    if (BITS != 0u) {
        return qweight(row, k);
    }
    var e = row * params.inn + k;
    if (W_T == 1u) {
        e = k * params.rows + row;
    }
    if (HAS_MASK == 1u && ((side[e >> 2u] >> ((e & 3u) * 8u)) & 0xffu) == 0u) {
        return 0.0;
    }
    let at = e + params.first;
    if (DTYPE == 0u) {
        return bitcast<f32>(w[at]);
    }
    let word = w[at >> 1u];
    let odd = (at & 1u) == 1u;
    if (DTYPE == 1u) {
        let v = unpack2x16float(word);
        return select(v.x, v.y, odd);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, odd));
}

fn product(wid: vec3<u32>, lid: vec3<u32>) {
    let o = wid.x * TS + lid.x;
    let i = wid.y * TS + lid.y;
    let wrow = wid.x * TS + lid.y;
    var acc = 0.0;
    for (var k0 = 0u; k0 < params.inn; k0 = k0 + TS) {
        let k = k0 + lid.x;
        var xv = 0.0;
        if (i < params.p && k < params.inn) {
            if (X_T == 1u) {
                xv = x[k * params.p + i];
            } else {
                xv = x[i * params.inn + k];
            }
        }
        var wv = 0.0;
        if (wrow < params.rows && k < params.inn) {
            wv = weight(wrow, k);
        }
        xs[lid.y][lid.x] = xv;
        ws[lid.y][lid.x] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < TS; kk = kk + 1u) {
            acc = acc + xs[lid.y][kk] * ws[lid.x][kk];
        }
        workgroupBarrier();
    }
    if (i < params.p && o < params.rows) {
        y[i * params.rows + o] = acc;
    }
}

@compute @workgroup_size(16, 16)
fn masked_matmul(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    product(wid, lid);
}

@compute @workgroup_size(16, 16)
fn dequant_matmul(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    product(wid, lid);
}

// Y [p, rows] = op(X)·op(W)ᵀ on f32 matrices, for training's forward
// (X·Wᵀ), input-gradient and weight-gradient products (X_T, W_T).
@compute @workgroup_size(16, 16)
fn product_f32(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    product(wid, lid);
}
