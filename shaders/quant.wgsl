// quant.wgsl: int8 / int4 quantization per channel or group with
// compressed-tensors' arithmetic. Specification:
// crates/core/src/reference/quant.rs; results are byte-identical to it.
//
// Bindings (group 0):
//   0  src     array<u32>          read        weight chunk (whole rows), packed (DTYPE)
//   1  params  Params              uniform     mirrors `QuantParams` (32 bytes)
//   2  codes   array<atomic<u32>>  read_write  one byte per element (two's
//                                              complement), four to a word
//   3  qp      array<u32>          read_write  per group, 5 words: scale bits,
//                                              zero point, and what the group
//                                              lost (f32 bits): max |x − x̂|,
//                                              Σ(x − x̂)², Σx² (for the report;
//                                              sums in another order than
//                                              the CPU's, not bit-exact)
//
// quantize_q8_0 / quantize_q4_0 (GGUF blocks of 32, one invocation per
// block) use 0 src, 1 params (rows, cols of this chunk, first) and write the
// blocks' bytes (34 / 18 each, unaligned) into 2 codes with atomicOr on a
// cleared buffer; 3 qp is bound but unused.
//
// dequantize_packed (compressed-tensors' packed codes back to dense values
// in DTYPE; one invocation per output word) uses instead:
//   0  src       packed code words of the chunk's rows [rows, wpr]
//   1  params    as above (rows of this chunk, cols, group, groups)
//   4  dq_scale  array<f32>  read        scales [rows, groups] as f32
//   5  dq_zp     array<i32>  read        zero points [rows, groups]
//                                        (read only when SYMMETRIC is 0)
//   6  dq_out    array<u32>  read_write  the dense values, packed (DTYPE)
//
// Override constants: DTYPE (0 f32, 1 f16, 2 bf16), BITS (4 or 8),
// SYMMETRIC (0 or 1), CT_ROUNDING (0 nearest, 1 compressed-tensors).
//
// Dispatch: @workgroup_size(256), one workgroup per (row, group) of the
// chunk, grid-stride over rows × groups.
//
// WGSL division is not correctly rounded (2.5 ulp, often a reciprocal), so
// every quotient goes through div_rn (the prelude shaders/div_rn.wgsl).
// The override constants, the group parameters and the code of a value
// are the prelude shaders/qparams.wgsl, shared with the hessian family;
// reading an element of the chunk (`load`) is shaders/load.wgsl, shared
// with the float family.

struct Params {
    rows: u32,   // rows in this chunk
    cols: u32,
    group: u32,  // inputs per group
    groups: u32, // groups per row
    first: u32,  // offset of element 0 inside the first word
    qw_at: u32,  // GGUF with an importance matrix: its word offset in src
    zero: u32,   // always 0, which the shader compiler cannot know (kexact's opaque)
    sig_at: u32, // weighted 32-value GGUF blocks: word offset in qp of the rows' σ²
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> codes: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> qp: array<u32>;
@group(0) @binding(4) var<storage, read> dq_scale: array<f32>;
@group(0) @binding(5) var<storage, read> dq_zp: array<i32>;
@group(0) @binding(6) var<storage, read_write> dq_out: array<u32>;

var<workgroup> wg_lo: array<f32, 256>;
var<workgroup> wg_hi: array<f32, 256>;
var<workgroup> wg_mx: array<f32, 256>;
var<workgroup> wg_scale: f32;
var<workgroup> wg_zp: i32;

@compute @workgroup_size(256)
fn quantize_groups(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    for (var rg = wid.x; rg < params.rows * params.groups; rg = rg + nwg.x) {
        let r = rg / params.groups;
        let g = rg % params.groups;
        let start = r * params.cols + g * params.group;
        let len = min(params.group, params.cols - g * params.group);
        var lo = 0.0;
        var hi = 0.0;
        for (var i = t; i < len; i = i + 256u) {
            let v = load(start + i);
            lo = min(lo, v);
            hi = max(hi, v);
        }
        wg_lo[t] = lo;
        wg_hi[t] = hi;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s = s >> 1u) {
            if (t < s) {
                wg_lo[t] = min(wg_lo[t], wg_lo[t + s]);
                wg_hi[t] = max(wg_hi[t], wg_hi[t + s]);
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            let sz = group_params(wg_lo[0], wg_hi[0]);
            let scale = sz.x;
            let zp = i32(sz.y);
            wg_scale = scale;
            wg_zp = zp;
            qp[5u * rg] = bitcast<u32>(scale);
            qp[5u * rg + 1u] = bitcast<u32>(zp);
        }
        workgroupBarrier();
        let scale = wg_scale;
        let zpf = f32(wg_zp);
        var mx = 0.0;
        var e2 = 0.0;
        var x2 = 0.0;
        for (var i = t; i < len; i = i + 256u) {
            let e = start + i;
            let q = code_of(load(e), scale, zpf);
            atomicOr(&codes[e >> 2u], (bitcast<u32>(q) & 0xffu) << ((e & 3u) * 8u));
            let v = load(e);
            let err = v - f32(q - wg_zp) * scale;
            mx = max(mx, abs(err));
            e2 = e2 + err * err;
            x2 = x2 + v * v;
        }
        // The group's error statistics (thread 0 read wg_lo / wg_hi before
        // the barrier above).
        wg_mx[t] = mx;
        wg_lo[t] = e2;
        wg_hi[t] = x2;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s = s >> 1u) {
            if (t < s) {
                wg_mx[t] = max(wg_mx[t], wg_mx[t + s]);
                wg_lo[t] = wg_lo[t] + wg_lo[t + s];
                wg_hi[t] = wg_hi[t] + wg_hi[t + s];
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            qp[5u * rg + 2u] = bitcast<u32>(wg_mx[0]);
            qp[5u * rg + 3u] = bitcast<u32>(wg_lo[0]);
            qp[5u * rg + 4u] = bitcast<u32>(wg_hi[0]);
        }
        workgroupBarrier();
    }
}

// (q − zp)·scale of element e (flat in the chunk) of the packed codes.
fn packed_value(e: u32) -> f32 {
    let r = e / params.cols;
    let c = e % params.cols;
    let per = 32u / BITS;
    let wpr = (params.cols + per - 1u) / per;
    let word = src[r * wpr + c / per];
    let u = (word >> ((c % per) * BITS)) & ((1u << BITS) - 1u);
    let q = i32(u) - i32(1u << (BITS - 1u));
    let g = r * params.groups + c / params.group;
    var zp = 0;
    if (SYMMETRIC == 0u) {
        zp = dq_zp[g];
    }
    return f32(q - zp) * dq_scale[g];
}

// The bits of x rounded to the 16-bit DTYPE (x finite and in range).
fn half_bits(x: f32) -> u32 {
    if (DTYPE == 2u) {
        return bitcast<u32>(round_bits(x, 7, -126)) >> 16u;
    }
    return pack2x16float(vec2<f32>(round_bits(x, 10, -14), 0.0)) & 0xffffu;
}

@compute @workgroup_size(256)
fn dequantize_packed(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let n = params.rows * params.cols;
    if (DTYPE == 0u) {
        if (w < n) {
            dq_out[w] = bitcast<u32>(packed_value(w));
        }
        return;
    }
    let e = 2u * w;
    if (e >= n) {
        return;
    }
    var hi = 0u;
    if (e + 1u < n) {
        hi = half_bits(packed_value(e + 1u));
    }
    dq_out[w] = half_bits(packed_value(e)) | (hi << 16u);
}

// a · b correctly rounded to nearest even, computed on the integer
// mantissas so the product is materialised exactly and a following add is
// rounded on its own (a driver may fuse `x * y + z` into one fma, which
// rounds once and can change a code). Zero or subnormal operands give ±0;
// results below the normal range give ±0, above it ±inf.
fn mul_rn(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a);
    let bb = bitcast<u32>(b);
    let sign = (ab ^ bb) & 0x80000000u;
    let ea = (ab >> 23u) & 0xffu;
    let eb = (bb >> 23u) & 0xffu;
    if (ea == 0u || eb == 0u) {
        return bitcast<f32>(sign);
    }
    let ma = (ab & 0x7fffffu) | 0x800000u;
    let mb = (bb & 0x7fffffu) | 0x800000u;
    // The 48-bit product as hi·2^24 + lo, from 12-bit limbs.
    let a1 = ma >> 12u;
    let a0 = ma & 0xfffu;
    let b1 = mb >> 12u;
    let b0 = mb & 0xfffu;
    let mid = a1 * b0 + a0 * b1;
    let lo_raw = a0 * b0 + ((mid & 0xfffu) << 12u);
    let lo = lo_raw & 0xffffffu;
    let hi = a1 * b1 + (mid >> 12u) + (lo_raw >> 24u);
    let e = i32(ea) + i32(eb) - 127;
    if (hi >= 0x800000u) {
        // Product in [2^47, 2^48): the top 24 bits are hi.
        return round_rn(sign, e + 1, hi, (lo & 0x800000u) != 0u, (lo & 0x7fffffu) != 0u);
    }
    let m = (hi << 1u) | (lo >> 23u);
    return round_rn(sign, e, m, (lo & 0x400000u) != 0u, (lo & 0x3fffffu) != 0u);
}

// The f16 bits of x rounded half to even (±inf beyond the f16 range).
fn f16_bits(x: f32) -> u32 {
    let r = round_bits(x, 10, -14);
    if (abs(r) > 65504.0) {
        return ((bitcast<u32>(x) >> 16u) & 0x8000u) | 0x7c00u;
    }
    return pack2x16float(vec2<f32>(r, 0.0)) & 0xffffu;
}

// Byte `b` of the output, ORed into its word.
fn put_byte(at: u32, b: u32) {
    atomicOr(&codes[at >> 2u], (b & 0xffu) << ((at & 3u) * 8u));
}

// roundf: half away from zero (exact for |y| < 2^23; larger y are integers).
fn round_away(y: f32) -> f32 {
    let t = trunc(y);
    if (abs(y - t) >= 0.5) {
        return t + sign(y);
    }
    return t;
}

// The block index of this invocation in a 2-D grid of 64-wide workgroups.
fn block_of(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

// ggml's quantize_row_q8_0_ref: d = amax / 127 (f16 stored), codes
// roundf(x · (1/d)) with 1/d from the f32 d.
@compute @workgroup_size(64)
fn quantize_q8_0(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = block_of(wid, nwg, lid);
    if (k * 32u >= params.rows * params.cols) {
        return;
    }
    var amax = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        amax = max(amax, abs(load(k * 32u + j)));
    }
    let d = div_rn(amax, 127.0);
    var id = 0.0;
    if (d != 0.0) {
        id = div_rn(1.0, d);
    }
    let at = k * 34u;
    let db = f16_bits(d);
    put_byte(at, db);
    put_byte(at + 1u, db >> 8u);
    for (var j = 0u; j < 32u; j = j + 1u) {
        let y = mul_rn(load(k * 32u + j), id);
        var q = 0;
        if (y == y) {
            q = i32(clamp(round_away(y), -128.0, 127.0));
        }
        put_byte(at + 2u + j, bitcast<u32>(q));
    }
}

// ggml's quantize_row_q4_0_ref: m the first value of largest magnitude,
// d = m / −8 (f16 stored), q = min(15, trunc(x · (1/d) + 8.5)); byte j holds
// element j (low nibble) and j + 16 (high nibble).
@compute @workgroup_size(64)
fn quantize_q4_0(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = block_of(wid, nwg, lid);
    if (k * 32u >= params.rows * params.cols) {
        return;
    }
    var amax = 0.0;
    var mx = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        let v = load(k * 32u + j);
        if (amax < abs(v)) {
            amax = abs(v);
            mx = v;
        }
    }
    let d = div_rn(mx, -8.0);
    var id = 0.0;
    if (d != 0.0) {
        id = div_rn(1.0, d);
    }
    let at = k * 18u;
    let db = f16_bits(d);
    put_byte(at, db);
    put_byte(at + 1u, db >> 8u);
    for (var j = 0u; j < 16u; j = j + 1u) {
        let lo = q4_code(mul_rn(load(k * 32u + j), id));
        let hi = q4_code(mul_rn(load(k * 32u + j + 16u), id));
        put_byte(at + 2u + j, lo | (hi << 4u));
    }
}

// min(15, (p + 8.5) as i8) for a materialised product p.
fn q4_code(p: f32) -> u32 {
    let y = p + 8.5;
    if (y != y) {
        return 0u;
    }
    return u32(clamp(trunc(y), 0.0, 15.0));
}
