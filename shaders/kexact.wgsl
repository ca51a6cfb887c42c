// kexact.wgsl: exactly rounded f32 arithmetic for the GGUF kernels of
// kquant.wgsl (in the quant module with quant.wgsl, whose mul_rn, div_rn
// and round_rn it builds on), and the bit-exact loads and f16
// conversions they need.
//
// Exactness. Every product and quotient is correctly rounded on the
// integer mantissas (mul_rn, div_rn, sqrt_rn here), so no driver can fuse
// `x * y + z`, and sums are native adds (correctly rounded in Vulkan, Metal
// and DX12). What hardware may do differently is subnormals (flushed to
// zero or not), and the integer rounding assumes finite values: every
// operation therefore records in `bad` whether it met or made a subnormal,
// an infinity or a NaN, and such a block is flagged rather than trusted.
// Real weights never reach that range (|x| below about 1e-13); the host
// recomputes the flagged blocks with the CPU reference. Native adds are
// also kept from being regrouped with constants (see `opaque`): lavapipe
// computed ggml's grid (−0.9 + 0.05·is) + 15 as 0.05·is + (−0.9 + 15),
// one ulp off, and moved a weighted Q4_K block.

var<private> bad: bool;

// Flags a result whose magnitude bits `m` are subnormal, infinite or NaN
// (zero is fine only where `zero_ok`).
fn check(m: u32, zero_ok: bool) {
    if (m >= 0x7f800000u || (m < 0x00800000u && !(m == 0u && zero_ok))) {
        bad = true;
    }
}

// x, hidden from the shader compiler's algebra: a driver may regroup
// native adds of constants ((a + c1) + c2 → a + (c1 + c2); Mesa's NIR does
// for every float op not marked exact, and WGSL cannot mark one), which
// changes their rounding. ORing the bits with a uniform that is always 0
// leaves x as it is but makes it no constant and no sum to regroup.
fn opaque(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | params.zero);
}

// a + b (a, b normal or zero): exact zero only when a = −b. The add is
// native (correctly rounded) on operands the compiler cannot regroup.
fn kadd(a: f32, b: f32) -> f32 {
    let r = opaque(a) + b;
    check(bitcast<u32>(r) & 0x7fffffffu, a == -b);
    return r;
}

fn kmul(a: f32, b: f32) -> f32 {
    let r = mul_rn(a, b);
    check(bitcast<u32>(r) & 0x7fffffffu, a == 0.0 || b == 0.0);
    return r;
}

fn kdiv(a: f32, b: f32) -> f32 {
    if (b == 0.0) {
        bad = true;
        return 0.0;
    }
    let r = div_rn(a, b);
    check(bitcast<u32>(r) & 0x7fffffffu, a == 0.0);
    return r;
}

// √x correctly rounded, x ≥ 0 normal or zero: digit by digit on the
// mantissa scaled to 2^26 (a 51-bit radicand, two bits a step).
fn sqrt_rn(x: f32) -> f32 {
    let xb = bitcast<u32>(x);
    if ((xb & 0x7fffffffu) == 0u) {
        return x;
    }
    if (xb >= 0x7f800000u || xb < 0x00800000u) {
        bad = true;
        return 0.0;
    }
    var k = i32(xb >> 23u) - 150;
    var m = (xb & 0x7fffffu) | 0x800000u;
    if ((k & 1) != 0) {
        m = m << 1u;
        k = k - 1;
    }
    // R = m · 2^26 as hi:lo.
    let hi = m >> 6u;
    let lo = (m & 63u) << 26u;
    var q = 0u;
    var r = 0u;
    for (var p = 25i; p >= 0i; p = p - 1i) {
        var two = 0u;
        if (p >= 16i) {
            two = (hi >> u32(2i * p - 32i)) & 3u;
        } else {
            two = (lo >> u32(2i * p)) & 3u;
        }
        r = (r << 2u) | two;
        let t = (q << 2u) | 1u;
        if (r >= t) {
            r = r - t;
            q = (q << 1u) | 1u;
        } else {
            q = q << 1u;
        }
    }
    let half_k = k / 2i;
    if (q >= 0x2000000u) {
        return round_rn(0u, half_k + 139i, q >> 2u, ((q >> 1u) & 1u) == 1u, (q & 1u) == 1u || r != 0u);
    }
    return round_rn(0u, half_k + 138i, q >> 1u, (q & 1u) == 1u, r != 0u);
}

// ggml's nearest_int: the f32 adder trick (halves to even).
fn nearest(v: f32) -> i32 {
    let t = kadd(v, 12582912.0);
    return i32(bitcast<u32>(t) & 0x007fffffu) - 0x00400000i;
}

// The f16 bits of x rounded to nearest even, subnormal halves included
// (as half's f16::from_f32), computed on the bits.
fn f16_rn(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        return sign | 0x7c00u | select(0u, 0x200u, a > 0x7f800000u);
    }
    let e = i32(a >> 23u) - 127i;
    if (e > 15i) {
        return sign | 0x7c00u;
    }
    if (a < 0x00800000u) {
        return sign;
    }
    let m = (a & 0x7fffffu) | 0x800000u;
    var shift = 13u;
    var h = 0u;
    if (e >= -14i) {
        h = (u32(e + 15i) << 10u) | ((m >> 13u) & 0x3ffu);
    } else {
        shift = u32(-(e + 1i));
        if (shift > 24u) {
            return sign;
        }
        h = m >> shift;
    }
    let dropped = m & ((1u << shift) - 1u);
    let halfway = 1u << (shift - 1u);
    if (dropped > halfway || (dropped == halfway && (h & 1u) == 1u)) {
        h = h + 1u;
    }
    return sign | h;
}

// The f32 value of f16 bits h (finite), exactly.
fn f16_val(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        if (m == 0u) {
            return bitcast<f32>(sign);
        }
        let p = firstLeadingBit(m);
        return bitcast<f32>(sign | ((p + 103u) << 23u) | ((m << (23u - p)) & 0x7fffffu));
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// Element i of the chunk, read from its bits (no hardware conversion that
// could flush a subnormal); a subnormal, infinite or NaN value flags.
fn kload(i: u32) -> f32 {
    let k = i + params.first;
    var b = 0u;
    if (DTYPE == 0u) {
        b = src[k];
    } else {
        let w = src[k >> 1u];
        let h = select(w & 0xffffu, w >> 16u, (k & 1u) == 1u);
        if (DTYPE == 1u) {
            b = bitcast<u32>(f16_val(h));
        } else {
            b = h << 16u;
        }
    }
    let a = b & 0x7fffffffu;
    if (a >= 0x7f800000u || (a != 0u && a < 0x00800000u)) {
        bad = true;
        return 0.0;
    }
    return bitcast<f32>(b);
}

// i8 sign extension of the low byte of v.
fn as_i8(v: i32) -> i32 {
    return (v << 24u) >> 24u;
}

// The global invocation index in a 2-D grid of 64-wide workgroups.
fn invocation(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}
