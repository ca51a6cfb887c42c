// kweighted.wgsl: what kquant.wgsl's K-quant kernels need with an
// importance matrix (ggml's quantize_row_q{4,5,6}_K_impl): the importance
// of a column, read from its bits after the chunk's rows in binding 0
// (params.qw_at), and make_qp_quants, the weighted search for a
// super-block's 6-bit scale and min steps. Exact arithmetic from
// kexact.wgsl; in the quant module with quant.wgsl.

// Importance of column c (GGUF with an importance matrix), from its bits
// after the chunk's rows; a subnormal, infinite or NaN one flags.
fn kqw(c: u32) -> f32 {
    let b = src[params.qw_at + c];
    let a = b & 0x7fffffffu;
    if (a >= 0x7f800000u || (a != 0u && a < 0x00800000u)) {
        bad = true;
        return 0.0;
    }
    return bitcast<f32>(b);
}

// ggml's make_qp_quants over 8 non-negative values (a super-block's
// sub-block scales or mins) weighted by w: 6-bit steps (kept in bytes as
// ggml's uint8 keeps them) and the grid's unit.
struct Steps {
    l: array<u32, 8>,
    d: f32,
}

fn make_qp(x: array<f32, 8>, w: array<f32, 8>) -> Steps {
    var out: Steps;
    var mx = 0.0;
    for (var i = 0u; i < 8u; i = i + 1u) {
        mx = select(x[i], mx, mx > x[i]);
    }
    if (mx < 1e-15) {
        return out;
    }
    var iscale = kdiv(63.0, mx);
    let scale = kdiv(1.0, iscale);
    var best = 0.0;
    for (var i = 0u; i < 8u; i = i + 1u) {
        out.l[i] = u32(nearest(kmul(iscale, x[i]))) & 0xffu;
        let diff = kadd(x[i], -kmul(scale, f32(out.l[i])));
        best = kadd(best, kmul(kmul(w[i], diff), diff));
    }
    for (var is = -4i; is <= 4i; is = is + 1i) {
        if (is == 0i) {
            continue;
        }
        let iscale_is = kdiv(kadd(kmul(0.1, f32(is)), 63.0), mx);
        let scale_is = kdiv(1.0, iscale_is);
        var mse = 0.0;
        for (var i = 0u; i < 8u; i = i + 1u) {
            let q = min(nearest(kmul(iscale_is, x[i])), 63i);
            let diff = kadd(x[i], -kmul(scale_is, f32(q)));
            mse = kadd(mse, kmul(kmul(w[i], diff), diff));
        }
        if (mse < best) {
            best = mse;
            iscale = iscale_is;
        }
    }
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let q = min(nearest(kmul(iscale, x[i])), 63i);
        out.l[i] = u32(q) & 0xffu;
        sumlx = kadd(sumlx, kmul(kmul(w[i], x[i]), f32(q)));
        suml2 = kadd(suml2, kmul(kmul(w[i], f32(q)), f32(q)));
    }
    for (var itry = 0u; itry < 5u; itry = itry + 1u) {
        var changed = false;
        for (var i = 0u; i < 8u; i = i + 1u) {
            let li = f32(out.l[i]);
            var slx = kadd(sumlx, -kmul(kmul(w[i], x[i]), li));
            var sl2 = kadd(suml2, -kmul(kmul(w[i], li), li));
            if (slx > 0.0 && sl2 > 0.0) {
                let nl = min(nearest(kdiv(kmul(x[i], sl2), slx)), 63i);
                if (nl != i32(out.l[i])) {
                    slx = kadd(slx, kmul(kmul(w[i], x[i]), f32(nl)));
                    sl2 = kadd(sl2, kmul(kmul(w[i], f32(nl)), f32(nl)));
                    if (kmul(kmul(slx, slx), suml2) > kmul(kmul(sumlx, sumlx), sl2)) {
                        out.l[i] = u32(nl) & 0xffu;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if (!changed) {
            break;
        }
    }
    if (suml2 > 0.0) {
        out.d = kdiv(sumlx, suml2);
    }
    return out;
}
