// qparams.wgsl: the prelude of the families that quantize to integers
// (quant, hessian), after div_rn.wgsl: the override constants, rounding to
// the weight's dtype, a group's scale and zero point with compressed-tensors'
// arithmetic, and a value's code. Specification:
// crates/core/src/reference/quant.rs (`qparams_of_range`, `quantize`).
//
// Override constants: DTYPE (0 f32, 1 f16, 2 bf16), BITS (4 or 8),
// SYMMETRIC (0 or 1), CT_ROUNDING (0 nearest, 1 compressed-tensors).
//
// Rounding to bf16 / f16 goes through ldexp and round (exact); round() is
// half to even in WGSL; every quotient goes through div_rn.

override DTYPE: u32 = 0u;
override BITS: u32 = 8u;
override SYMMETRIC: u32 = 1u;
override CT_ROUNDING: u32 = 0u;

const F32_EPS: f32 = 1.1920929e-7;

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

fn qmin_f() -> f32 {
    return -f32(1u << (BITS - 1u));
}

fn qmax_f() -> f32 {
    return f32((1u << (BITS - 1u)) - 1u);
}

// The scale (rounded to DTYPE) and zero point (as f32) of a group whose
// values span l..h, 0 included.
fn group_params(l: f32, h: f32) -> vec2<f32> {
    let qmin = qmin_f();
    let qmax = qmax_f();
    var scale = 0.0;
    var zp = 0;
    if (SYMMETRIC == 1u) {
        scale = div_rn(max(abs(l), abs(h)), (qmax - qmin) / 2.0);
    } else {
        // As the reference: halved from 2^126 on, so h − l cannot overflow.
        if (max(abs(l), abs(h)) >= 0x1p126f) {
            scale = div_rn(h * 0.5 - l * 0.5, (qmax - qmin) * 0.5);
        } else {
            scale = div_rn(h - l, qmax - qmin);
        }
        if (scale != 0.0) {
            zp = i32(round(clamp(qmin - div_rn(l, scale), qmin, qmax)));
        }
    }
    return vec2<f32>(to_dtype(max(scale, F32_EPS)), f32(zp));
}

// The code of x under (scale, zero point).
fn code_of(x: f32, scale: f32, zpf: f32) -> i32 {
    var y = 0.0;
    if (CT_ROUNDING == 1u) {
        y = to_dtype(to_dtype(div_rn(x, scale)) + zpf);
    } else {
        y = div_rn(x, scale) + zpf;
    }
    return i32(round(clamp(y, qmin_f(), qmax_f())));
}
