// float.wgsl: the float schemes with compressed-tensors' arithmetic: FP8
// E4M3 weights with a scale per row or per block tile (fp8, fp8-block),
// FP4 E2M1 weights with an E4M3 scale per 16 inputs under a global scale
// (nvfp4a16) or a power-of-two E8M0 scale per 32 (mxfp4a16).
// Specification: crates/core/src/reference/{fp8,fp4}.rs; codes and scales
// are byte-identical to it. After the preludes div_rn.wgsl (correctly
// rounded quotients), qparams.wgsl (DTYPE, CT_ROUNDING, to_dtype) and
// load.wgsl (element i of the chunk) and minifloat.wgsl (the E4M3 and
// E2M1 codes, shared with train.wgsl's fake quantization).
//
// Bindings (group 0):
//   0  src     array<u32>  read        weight chunk (whole rows, whole
//                                      bands of tiles), packed (DTYPE)
//   1  params  Params      uniform     mirrors `FloatParams` (32 bytes)
//   2  scales  array<u32>  read_write  one word per scale span: the f32
//                                      bits of an FP8 scale, or the scale
//                                      byte of an FP4 group
//   3  codes   array<u32>  read_write  one code byte per element, four to
//                                      a word (FP4 codes unpacked)
//
// Scale spans tile the chunk: `th` rows × `tw` columns (fp8: 1 × cols;
// fp8-block: 128 × 128, edge tiles ragged; FP4: 1 × group), `scols` spans
// across a row of tiles.
//
// Entry points, each dispatched over a grid rebuilt as (wid.y·nwg.x + wid.x):
//   fp8_scales  one workgroup of 64 per span: its absolute maximum, then
//               the scale (fp8_scale of the reference)
//   fp4_scales  one invocation per span (a group of 16 or 32): the scale
//               byte (nv_group / mx_group of the reference)
//   encode      one invocation per code word: four elements' codes under
//               their span's scale
//
// Override constants: FORMAT (0 FP8, 1 NVFP4, 2 MXFP4), and the prelude's
// DTYPE (0 f32, 1 f16, 2 bf16) and CT_ROUNDING (FP8: 1 rounds the quotient
// to DTYPE first, as torch divides in the weight's dtype).
//
// NaN weights are skipped by the maxima and encode as the reference does;
// the engine refuses non-finite weights before this runs, so ±inf is not
// matched here.

override FORMAT: u32 = 0u;

struct Params {
    rows: u32,     // rows in this chunk
    cols: u32,
    th: u32,       // rows per scale span
    tw: u32,       // columns per scale span
    scols: u32,    // spans across the columns
    first: u32,    // offset of element 0 inside the first word
    gs: f32,       // NVFP4 global scale
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> scales: array<u32>;
@group(0) @binding(3) var<storage, read_write> codes: array<u32>;

var<workgroup> wg_max: array<f32, 64>;

// m raised to |x| (a NaN x leaves it).
fn max_abs(m: f32, x: f32) -> f32 {
    let a = abs(x);
    return select(m, a, a > m);
}

// The FP8 scale of a span reaching `amax`: the dtype's epsilon for an
// all-zero span, else amax/448 rounded to DTYPE, at least f32 epsilon.
fn fp8_scale(amax: f32) -> f32 {
    if (amax == 0.0) {
        if (DTYPE == 2u) {
            return 0x1p-7f;
        }
        if (DTYPE == 1u) {
            return 0x1p-10f;
        }
        return F32_EPS;
    }
    return max(to_dtype(div_rn(amax, 448.0)), F32_EPS);
}

// The scale byte of an FP4 group reaching `amax`.
fn fp4_scale(amax: f32) -> u32 {
    if (FORMAT == 1u) {
        // NVFP4: e4m3(gs · (amax/6 rounded to DTYPE)); a zero becomes 0.125.
        let b = e4m3(clamp(params.gs * to_dtype(div_rn(amax, 6.0)), -448.0, 448.0));
        return select(b, e4m3(0.125), (b & 0x7fu) == 0u);
    }
    // MXFP4: amax rounded to a power of two (up from a 0.75 mantissa:
    // adding 2^21 to the bits carries exactly then), biased exponent − 2.
    let exp = ((bitcast<u32>(amax) + (1u << 21u)) >> 23u) & 0xffu;
    if (exp == 0u) {
        return 0u;
    }
    return u32(max(i32(exp) - 2, 0));
}

fn span_count() -> u32 {
    return ((params.rows + params.th - 1u) / params.th) * params.scols;
}

@compute @workgroup_size(64)
fn fp8_scales(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = wid.y * nwg.x + wid.x;
    if (s >= span_count()) {
        return;
    }
    let t = lid.x;
    let r0 = (s / params.scols) * params.th;
    let c0 = (s % params.scols) * params.tw;
    let h = min(params.th, params.rows - r0);
    let w = min(params.tw, params.cols - c0);
    var m = 0.0;
    for (var i = t; i < h * w; i = i + 64u) {
        m = max_abs(m, load((r0 + i / w) * params.cols + c0 + i % w));
    }
    wg_max[t] = m;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k = k >> 1u) {
        if (t < k) {
            wg_max[t] = max(wg_max[t], wg_max[t + k]);
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        scales[s] = bitcast<u32>(fp8_scale(wg_max[0]));
    }
}

@compute @workgroup_size(64)
fn fp4_scales(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (s >= span_count()) {
        return;
    }
    let r = s / params.scols;
    let c0 = (s % params.scols) * params.tw;
    let w = min(params.tw, params.cols - c0);
    var m = 0.0;
    for (var i = 0u; i < w; i = i + 1u) {
        m = max_abs(m, load(r * params.cols + c0 + i));
    }
    scales[s] = fp4_scale(m);
}

// The code of element e (flat in the chunk).
fn float_code(e: u32) -> u32 {
    let r = e / params.cols;
    let c = e % params.cols;
    let word = scales[(r / params.th) * params.scols + c / params.tw];
    let x = load(e);
    if (FORMAT == 0u) {
        var q = div_rn(x, bitcast<f32>(word));
        if (CT_ROUNDING == 1u) {
            q = to_dtype(q);
        }
        if (is_nan(x)) {
            q = x;
        }
        return e4m3(q);
    }
    var q = 0.0;
    if (FORMAT == 1u) {
        q = div_rn(x, div_rn(e4m3_value(word), params.gs));
    } else {
        // Division by the power of two 2^(word − 127): exact.
        q = to_dtype(ldexp(x, 127 - i32(word)));
    }
    if (is_nan(x)) {
        return 7u;
    }
    return e2m1(clamp(q, -6.0, 6.0));
}

@compute @workgroup_size(256)
fn encode(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let n = params.rows * params.cols;
    if (4u * w >= n) {
        return;
    }
    var word = 0u;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let e = 4u * w + k;
        if (e < n) {
            word = word | (float_code(e) << (8u * k));
        }
    }
    codes[w] = word;
}
