// quant.wgsl: int8 / int4 quantization per channel or group with
// compressed-tensors' arithmetic. Specification:
// crates/core/src/reference/quant.rs; results are byte-identical to it.
//
// Bindings (group 0):
//   0  src     array<u32>          read        weight chunk (whole rows), packed (DTYPE)
//   1  params  Params              uniform     mirrors `QuantParams` (32 bytes)
//   2  codes   array<atomic<u32>>  read_write  one byte per element (two's
//                                              complement), four to a word
//   3  qp      array<u32>          read_write  per group: scale bits, zero point
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
// every quotient goes through div_rn (the prelude shaders/div_rn.wgsl). Rounding to bf16 / f16 goes through
// ldexp and round (exact). round() is half to even in WGSL.

struct Params {
    rows: u32,   // rows in this chunk
    cols: u32,
    group: u32,  // inputs per group
    groups: u32, // groups per row
    first: u32,  // offset of element 0 inside the first word
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override DTYPE: u32 = 0u;
override BITS: u32 = 8u;
override SYMMETRIC: u32 = 1u;
override CT_ROUNDING: u32 = 0u;

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> codes: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> qp: array<u32>;
@group(0) @binding(4) var<storage, read> dq_scale: array<f32>;
@group(0) @binding(5) var<storage, read> dq_zp: array<i32>;
@group(0) @binding(6) var<storage, read_write> dq_out: array<u32>;

const F32_EPS: f32 = 1.1920929e-7;

var<workgroup> wg_lo: array<f32, 256>;
var<workgroup> wg_hi: array<f32, 256>;
var<workgroup> wg_scale: f32;
var<workgroup> wg_zp: i32;

fn load(i: u32) -> f32 {
    let k = i + params.first;
    if (DTYPE == 0u) {
        return bitcast<f32>(src[k]);
    }
    let w = src[k >> 1u];
    let odd = (k & 1u) == 1u;
    if (DTYPE == 1u) {
        let v = unpack2x16float(w);
        return select(v.x, v.y, odd);
    }
    return bitcast<f32>(select(w << 16u, w & 0xffff0000u, odd));
}

// x rounded to nearest even at `mant` explicit mantissa bits, normal
// exponents down to `emin` (bf16: 7, -126; f16: 10, -14).
fn round_bits(x: f32, mant: i32, emin: i32) -> f32 {
    if (x == 0.0) {
        return x;
    }
    let e = max(i32((bitcast<u32>(x) >> 23u) & 0xffu) - 127, emin);
    return ldexp(round(ldexp(x, mant - e)), e - mant);
}

// x rounded to the weight's dtype.
fn to_dtype(x: f32) -> f32 {
    if (DTYPE == 2u) {
        return round_bits(x, 7, -126);
    }
    if (DTYPE == 1u) {
        return round_bits(x, 10, -14);
    }
    return x;
}

@compute @workgroup_size(256)
fn quantize_groups(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    let qmin = -f32(1u << (BITS - 1u));
    let qmax = f32((1u << (BITS - 1u)) - 1u);
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
            let l = wg_lo[0];
            let h = wg_hi[0];
            var scale = 0.0;
            var zp = 0;
            if (SYMMETRIC == 1u) {
                scale = div_rn(max(abs(l), abs(h)), (qmax - qmin) / 2.0);
            } else {
                scale = div_rn(h - l, qmax - qmin);
                if (scale != 0.0) {
                    zp = i32(round(clamp(qmin - div_rn(l, scale), qmin, qmax)));
                }
            }
            scale = to_dtype(max(scale, F32_EPS));
            wg_scale = scale;
            wg_zp = zp;
            qp[2u * rg] = bitcast<u32>(scale);
            qp[2u * rg + 1u] = bitcast<u32>(zp);
        }
        workgroupBarrier();
        let scale = wg_scale;
        let zpf = f32(wg_zp);
        for (var i = t; i < len; i = i + 256u) {
            let e = start + i;
            var y = 0.0;
            if (CT_ROUNDING == 1u) {
                y = to_dtype(to_dtype(div_rn(load(e), scale)) + zpf);
            } else {
                y = div_rn(load(e), scale) + zpf;
            }
            let q = i32(round(clamp(y, qmin, qmax)));
            atomicOr(&codes[e >> 2u], (bitcast<u32>(q) & 0xffu) << ((e & 3u) * 8u));
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
