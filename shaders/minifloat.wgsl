// minifloat.wgsl: the FP8 E4M3 and FP4 E2M1 codes of f32 values and the
// values of codes, as crates/core/src/reference/{fp8,fp4}.rs compute them.
// A prelude without bindings, shared by float.wgsl (the float schemes'
// quantizers) and train.wgsl (fake quantization on a fixed float grid).

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// The E4M3 byte of x clamped to ±448 (nearest, ties to even; NaN 0x7f with
// x's sign): with e the exponent of |x| (at least −6) and steps = |x|/2^(e−3)
// rounded to even, the code is 8·(e+7) + steps − 8, which covers the
// subnormals (e = −6) and a carry into the next exponent (steps = 16).
fn e4m3(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let sign = (bits >> 24u) & 0x80u;
    if (is_nan(x)) {
        return sign | 0x7fu;
    }
    let a = min(bitcast<f32>(bits & 0x7fffffffu), 448.0);
    let e = max(i32((bitcast<u32>(a) >> 23u) & 0xffu) - 127, -6);
    let steps = i32(round(ldexp(a, 3 - e)));
    return sign | u32(min(((e + 7) << 3u) + steps - 8, 0x7e));
}

// The value of an E4M3 byte (b & 0x7f below 0x7f).
fn e4m3_value(b: u32) -> f32 {
    let e = i32((b >> 3u) & 0xfu);
    let m = f32(b & 7u);
    var v = ldexp(m, -9);
    if (e != 0) {
        v = ldexp(8.0 + m, e - 10);
    }
    return select(v, -v, (b & 0x80u) != 0u);
}

// The E2M1 code of x (nearest, ties to even, saturating at ±6; a negative
// value rounding to zero keeps its sign, NaN is 7): the number of rounding
// thresholds |x| passes, and the sign bit.
fn e2m1(x: f32) -> u32 {
    if (is_nan(x)) {
        return 7u;
    }
    let a = abs(x);
    let m = u32(a > 0.25) + u32(a >= 0.75) + u32(a > 1.25) + u32(a >= 1.75)
          + u32(a > 2.5) + u32(a >= 3.5) + u32(a > 5.0);
    return m | (u32(x < 0.0) << 3u);
}

// The value of an E2M1 code (a sign bit over the magnitudes 0, 0.5, 1,
// 1.5, 2, 3, 4, 6).
fn e2m1_value(code: u32) -> f32 {
    let m = code & 7u;
    // 0.5·m up to 2, then 3, 4, 6.
    var v = 0.5 * f32(m);
    if (m >= 5u) {
        v = select(f32(m - 2u), 6.0, m == 7u);
    }
    return select(v, -v, (code & 8u) != 0u);
}
