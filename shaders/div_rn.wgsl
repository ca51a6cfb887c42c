// div_rn.wgsl: a correctly rounded f32 quotient (and the rounding step it
// shares with quant.wgsl's mul_rn), the prelude of every module
// whose results must equal a CPU division bit for bit (quant, train). WGSL's
// `/` is only accurate to 2.5 ulp (often a reciprocal and a multiply), so
// the quotient is long division of the 24-bit mantissas, rounded to
// nearest even.

// a / b correctly rounded to nearest even, for b normal and finite; a zero
// or subnormal gives ±0, a result below the normal range gives ±0 (never
// changes a code: such quotients round to 0 either way).
fn div_rn(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a);
    let bb = bitcast<u32>(b);
    let sign = (ab ^ bb) & 0x80000000u;
    let ea = (ab >> 23u) & 0xffu;
    let eb = (bb >> 23u) & 0xffu;
    if (ea == 0u) {
        return bitcast<f32>(sign);
    }
    var ma = (ab & 0x7fffffu) | 0x800000u;
    let mb = (bb & 0x7fffffu) | 0x800000u;
    var e = i32(ea) - i32(eb) + 127;
    if (ma < mb) {
        ma = ma << 1u;
        e = e - 1;
    }
    // 25 quotient bits: 24 of mantissa (leading 1 included) and a guard.
    var q = 0u;
    var r = ma;
    for (var i = 0u; i < 25u; i = i + 1u) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    return round_rn(sign, e, q >> 1u, (q & 1u) == 1u, r != 0u);
}

// The f32 with `sign`, biased exponent `e` and 24-bit mantissa `m` (leading
// 1 included) rounded to nearest even, `half` the bit below m and `rest`
// whether anything below that is set; ±0 below the normal range, ±inf
// above it.
fn round_rn(sign: u32, e0: i32, m0: u32, half: bool, rest: bool) -> f32 {
    var e = e0;
    var m = m0;
    if (half && (rest || (m & 1u) == 1u)) {
        m = m + 1u;
    }
    if (m == 0x1000000u) {
        m = m >> 1u;
        e = e + 1;
    }
    if (e <= 0) {
        return bitcast<f32>(sign);
    }
    if (e >= 255) {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    return bitcast<f32>(sign | (u32(e) << 23u) | (m & 0x7fffffu));
}

