// kquant.wgsl: GGUF's K-quant super-blocks (Q4_K, Q5_K, Q6_K) and the
// 32-value Q5_0 / Q5_1 blocks, in the quant module with quant.wgsl.
// Specification: crates/core/src/reference/kquants.rs and
// reference/gguf.rs (ggml's quantize_row_*_ref); the bytes are identical.
//
// Bindings: those of quant.wgsl. 0 src (the chunk's rows), 1 params (rows,
// cols, first), 2 codes (the blocks' bytes ORed into a cleared buffer),
// 3 qp: one word per block (per super-block for the K-quants), 1 where the
// block must be recomputed on the CPU, 0 where these bytes are final.
//
// Exactness: see kexact.wgsl. A block whose arithmetic met a subnormal,
// an infinity or a NaN is flagged; the host recomputes it on the CPU.
//
// Dispatch: @workgroup_size(64) in a 2-D grid. Q4_K / Q5_K: one invocation
// per sub-block of 32 (8 super-blocks a workgroup); Q6_K: one per
// sub-block of 16 (4 super-blocks); Q5_0 / Q5_1: one per block of 32.

var<private> kx: array<f32, 32>;
var<private> kw: array<f32, 32>;
var<private> kl: array<u32, 32>;
var<private> kaux: array<u32, 32>;

var<workgroup> ks_scale: array<f32, 64>;
var<workgroup> ks_min: array<f32, 64>;
var<workgroup> ks_bad: array<atomic<u32>, 8>;
// The affine super-blocks' weight sums per sub-block, 6-bit steps of the
// scales and mins, and the f16 bits of d and dmin per super-block.
var<workgroup> ks_sw: array<f32, 64>;
var<workgroup> ks_ls: array<u32, 64>;
var<workgroup> ks_lm: array<u32, 64>;
var<workgroup> ks_d: array<u32, 8>;
var<workgroup> ks_dmin: array<u32, 8>;

// ggml's make_qkx2_quants / make_qkx3_quants over kx / kw (32 values):
// the affine grid of nmax + 1 levels with the least weighted squared error
// among the first guess and nstep + 1 rescaled ones (from rmin in steps of
// rdelta); codes in kl, returns (scale, −min).
fn make_qkx(nmax: i32, rmin: f32, rdelta: f32, nstep: i32) -> vec2<f32> {
    var mn = kx[0];
    var mx = kx[0];
    var sum_w = kw[0];
    var sum_x = kmul(sum_w, kx[0]);
    for (var i = 1u; i < 32u; i = i + 1u) {
        if (kx[i] < mn) {
            mn = kx[i];
        }
        if (kx[i] > mx) {
            mx = kx[i];
        }
        sum_w = kadd(sum_w, kw[i]);
        sum_x = kadd(sum_x, kmul(kw[i], kx[i]));
    }
    if (mn > 0.0) {
        mn = 0.0;
    }
    if (mx == mn) {
        for (var i = 0u; i < 32u; i = i + 1u) {
            kl[i] = 0u;
        }
        return vec2<f32>(0.0, -mn);
    }
    let nm = f32(nmax);
    var iscale = kdiv(nm, kadd(mx, -mn));
    var scale = kdiv(1.0, iscale);
    var best = 0.0;
    for (var i = 0u; i < 32u; i = i + 1u) {
        let q = clamp(nearest(kmul(iscale, kadd(kx[i], -mn))), 0i, nmax);
        kl[i] = u32(q);
        let diff = kadd(kadd(kmul(scale, f32(q)), mn), -kx[i]);
        best = kadd(best, kmul(kw[i], kmul(diff, diff)));
    }
    for (var is = 0i; is <= nstep; is = is + 1i) {
        // The range uses the best min so far, as ggml's does.
        iscale = kdiv(kadd(kadd(rmin, kmul(rdelta, f32(is))), nm), kadd(mx, -mn));
        var sum_l = 0.0;
        var sum_l2 = 0.0;
        var sum_xl = 0.0;
        for (var i = 0u; i < 32u; i = i + 1u) {
            let q = clamp(nearest(kmul(iscale, kadd(kx[i], -mn))), 0i, nmax);
            kaux[i] = u32(q);
            let qf = f32(q);
            let wq = kmul(kw[i], qf);
            sum_l = kadd(sum_l, wq);
            sum_l2 = kadd(sum_l2, kmul(wq, qf));
            sum_xl = kadd(sum_xl, kmul(wq, kx[i]));
        }
        let d = kadd(kmul(sum_w, sum_l2), -kmul(sum_l, sum_l));
        if (d > 0.0) {
            var this_scale = kdiv(kadd(kmul(sum_w, sum_xl), -kmul(sum_x, sum_l)), d);
            var this_min = kdiv(kadd(kmul(sum_l2, sum_x), -kmul(sum_l, sum_xl)), d);
            if (this_min > 0.0) {
                this_min = 0.0;
                this_scale = kdiv(sum_xl, sum_l2);
            }
            var cur = 0.0;
            for (var i = 0u; i < 32u; i = i + 1u) {
                let diff = kadd(kadd(kmul(this_scale, f32(kaux[i])), this_min), -kx[i]);
                cur = kadd(cur, kmul(kw[i], kmul(diff, diff)));
            }
            if (cur < best) {
                for (var i = 0u; i < 32u; i = i + 1u) {
                    kl[i] = kaux[i];
                }
                best = cur;
                scale = this_scale;
                mn = this_min;
            }
        }
    }
    return vec2<f32>(scale, -mn);
}

// ggml's 6-bit step of a sub-block's scale or min: nearest_int stored in a
// uint8, capped at 63.
fn step6(inv: f32, v: f32) -> u32 {
    return min(u32(nearest(kmul(inv, v))) & 0xffu, 63u);
}

// Clears this invocation's `bad` and, from the first 8 invocations, the
// workgroup's super-block flags: workgroup memory starts undefined (the
// context skips wgpu's zeroing), and the first barrier after this orders
// it before any atomicOr.
fn start_flags(t: u32) {
    if (t < 8u) {
        atomicStore(&ks_bad[t], 0u);
    }
    bad = false;
}

// Q4_K (bytes 144, nmax 15) and Q5_K (176, 31): sub-block j of super-block
// sb per invocation. `weighted`: with an importance matrix, as ggml's
// quantize_row_q{4,5}_K_impl (weights importance · √(σ² + x²), the
// 37-grid search, 6-bit steps by make_qp_quants, Q5_K's capped at 63).
fn affine_k(g: u32, t: u32, nmax: i32, rmin: f32, nstep: i32, size: u32, weighted: bool) {
    let sb = g / 8u;
    let j = g % 8u;
    let first = t - j;
    let live = sb < params.rows * params.cols / 256u;
    start_flags(t);
    if (live) {
        var sum_x2 = 0.0;
        for (var i = 0u; i < 32u; i = i + 1u) {
            kx[i] = kload(sb * 256u + j * 32u + i);
            sum_x2 = kadd(sum_x2, kmul(kx[i], kx[i]));
        }
        var sm: vec2<f32>;
        if (weighted) {
            // σ² over the whole super-block, summed in order.
            var all_x2 = 0.0;
            for (var i = 0u; i < 256u; i = i + 1u) {
                let v = kload(sb * 256u + i);
                all_x2 = kadd(all_x2, kmul(v, v));
            }
            let sigma2 = kdiv(kmul(2.0, all_x2), 256.0);
            let col = (sb * 256u + j * 32u) % params.cols;
            var sw = 0.0;
            for (var i = 0u; i < 32u; i = i + 1u) {
                kw[i] = kmul(kqw(col + i), sqrt_rn(kadd(sigma2, kmul(kx[i], kx[i]))));
                sw = kadd(sw, kw[i]);
            }
            ks_sw[t] = sw;
            sm = make_qkx(nmax, -0.9, 0.05, 36i);
        } else {
            let av_x = sqrt_rn(kdiv(sum_x2, 32.0));
            for (var i = 0u; i < 32u; i = i + 1u) {
                kw[i] = kadd(av_x, abs(kx[i]));
            }
            sm = make_qkx(nmax, rmin, 0.1, nstep);
        }
        ks_scale[t] = sm.x;
        ks_min[t] = sm.y;
    }
    workgroupBarrier();
    // The super-block's steps, by its first invocation.
    if (live && j == 0u) {
        var sc: array<f32, 8>;
        var mn: array<f32, 8>;
        var sw: array<f32, 8>;
        for (var k = 0u; k < 8u; k = k + 1u) {
            sc[k] = ks_scale[first + k];
            mn[k] = ks_min[first + k];
            sw[k] = ks_sw[first + k];
        }
        if (weighted) {
            let ds = make_qp(sc, sw);
            let dm = make_qp(mn, sw);
            ks_d[t / 8u] = f16_rn(ds.d);
            ks_dmin[t / 8u] = f16_rn(dm.d);
            for (var k = 0u; k < 8u; k = k + 1u) {
                ks_ls[first + k] = select(ds.l[k], min(ds.l[k], 63u), size == 176u);
                ks_lm[first + k] = select(dm.l[k], min(dm.l[k], 63u), size == 176u);
            }
        } else {
            var max_scale = 0.0;
            var max_min = 0.0;
            for (var k = 0u; k < 8u; k = k + 1u) {
                max_scale = select(max_scale, sc[k], sc[k] > max_scale);
                max_min = select(max_min, mn[k], mn[k] > max_min);
            }
            var inv_scale = 0.0;
            if (max_scale > 0.0) {
                inv_scale = kdiv(63.0, max_scale);
            }
            var inv_min = 0.0;
            if (max_min > 0.0) {
                inv_min = kdiv(63.0, max_min);
            }
            ks_d[t / 8u] = f16_rn(kdiv(max_scale, 63.0));
            ks_dmin[t / 8u] = f16_rn(kdiv(max_min, 63.0));
            for (var k = 0u; k < 8u; k = k + 1u) {
                ks_ls[first + k] = step6(inv_scale, sc[k]);
                ks_lm[first + k] = step6(inv_min, mn[k]);
            }
        }
    }
    workgroupBarrier();
    if (live) {
        let db = ks_d[t / 8u];
        let mb = ks_dmin[t / 8u];
        let at = sb * size;
        if (j == 0u) {
            put_byte(at, db);
            put_byte(at + 1u, db >> 8u);
            put_byte(at + 2u, mb);
            put_byte(at + 3u, mb >> 8u);
            for (var k = 0u; k < 8u; k = k + 1u) {
                let ls = ks_ls[first + k];
                let lm = ks_lm[first + k];
                if (k < 4u) {
                    put_byte(at + 4u + k, ls);
                    put_byte(at + 8u + k, lm);
                } else {
                    put_byte(at + 8u + k, (ls & 0xfu) | ((lm & 0xfu) << 4u));
                    put_byte(at + k, (ls >> 4u) << 6u);
                    put_byte(at + 4u + k, (lm >> 4u) << 6u);
                }
            }
        }
        // The grid the bytes hold (ggml reads 6 bits back).
        let dd = kmul(f16_val(db), f32(ks_ls[t] & 63u));
        if (dd != 0.0) {
            let dm = kmul(f16_val(mb), f32(ks_lm[t] & 63u));
            for (var i = 0u; i < 32u; i = i + 1u) {
                kl[i] = u32(clamp(nearest(kdiv(kadd(kx[i], dm), dd)), 0i, nmax));
            }
        }
        let h = j / 2u;
        let shift = 4u * (j & 1u);
        for (var i = 0u; i < 32u; i = i + 1u) {
            if (size == 144u) {
                put_byte(at + 16u + 32u * h + i, kl[i] << shift);
            } else {
                put_byte(at + 16u + i, (kl[i] >> 4u) << j);
                put_byte(at + 48u + 32u * h + i, (kl[i] & 0xfu) << shift);
            }
        }
        if (bad) {
            atomicOr(&ks_bad[t / 8u], 1u);
        }
    }
    workgroupBarrier();
    if (live && j == 0u) {
        qp[sb] = atomicLoad(&ks_bad[t / 8u]);
    }
}

@compute @workgroup_size(64)
fn quantize_q4_k(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    affine_k(invocation(wid, nwg, lid), lid.x, 15i, -1.0, 20i, 144u, false);
}

@compute @workgroup_size(64)
fn quantize_q5_k(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    affine_k(invocation(wid, nwg, lid), lid.x, 31i, -0.5, 15i, 176u, false);
}

@compute @workgroup_size(64)
fn quantize_q4_k_w(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    affine_k(invocation(wid, nwg, lid), lid.x, 15i, -1.0, 20i, 144u, true);
}

@compute @workgroup_size(64)
fn quantize_q5_k_w(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    affine_k(invocation(wid, nwg, lid), lid.x, 31i, -0.5, 15i, 176u, true);
}

// ggml's make_qx_quants (rmse_type 1) over kx[0..n], a symmetric grid of
// nmax levels each side, each value weighted by its square or, `weighted`,
// by kw: codes (offset by nmax) in kl, returns the scale. Q6_K: n 16, nmax
// 32; the weighted Q4_0 / Q5_0: n 32, nmax 8 / 16.
fn make_qx(n: u32, nmax: i32, weighted: bool) -> f32 {
    var mx = 0.0;
    var amax = 0.0;
    for (var i = 0u; i < n; i = i + 1u) {
        if (abs(kx[i]) > amax) {
            amax = abs(kx[i]);
            mx = kx[i];
        }
    }
    if (amax < 1e-15) {
        for (var i = 0u; i < n; i = i + 1u) {
            kl[i] = 0u;
        }
        return 0.0;
    }
    let nm = f32(nmax);
    var iscale = kdiv(-nm, mx);
    var sumlx = 0.0;
    var suml2 = 0.0;
    for (var i = 0u; i < n; i = i + 1u) {
        let q = clamp(nearest(kmul(iscale, kx[i])), -nmax, nmax - 1i);
        kl[i] = u32(q + nmax);
        var w = kw[i];
        if (!weighted) {
            w = kmul(kx[i], kx[i]);
        }
        sumlx = kadd(sumlx, kmul(kmul(w, kx[i]), f32(q)));
        suml2 = kadd(suml2, kmul(kmul(w, f32(q)), f32(q)));
    }
    var scale = 0.0;
    if (suml2 != 0.0) {
        scale = kdiv(sumlx, suml2);
    }
    var best = kmul(scale, sumlx);
    for (var is = -9i; is <= 9i; is = is + 1i) {
        if (is == 0i) {
            continue;
        }
        iscale = kdiv(-kadd(nm, kmul(0.1, f32(is))), mx);
        sumlx = 0.0;
        suml2 = 0.0;
        for (var i = 0u; i < n; i = i + 1u) {
            let q = f32(clamp(nearest(kmul(iscale, kx[i])), -nmax, nmax - 1i));
            var w = kw[i];
            if (!weighted) {
                w = kmul(kx[i], kx[i]);
            }
            sumlx = kadd(sumlx, kmul(kmul(w, kx[i]), q));
            suml2 = kadd(suml2, kmul(kmul(w, q), q));
        }
        if (suml2 > 0.0 && kmul(sumlx, sumlx) > kmul(best, suml2)) {
            for (var i = 0u; i < n; i = i + 1u) {
                kl[i] = u32(clamp(nearest(kmul(iscale, kx[i])), -nmax, nmax - 1i) + nmax);
            }
            scale = kdiv(sumlx, suml2);
            best = kmul(scale, sumlx);
        }
    }
    return scale;
}

// Q6_K (210 bytes): sub-block j (16 values) of super-block sb per
// invocation.
@compute @workgroup_size(64)
fn quantize_q6_k(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    q6_k(invocation(wid, nwg, lid), lid.x, false);
}

// Q6_K with an importance matrix (quantize_row_q6_K_impl: each sub-block's
// search weighted by the importances alone).
@compute @workgroup_size(64)
fn quantize_q6_k_w(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    q6_k(invocation(wid, nwg, lid), lid.x, true);
}

fn q6_k(g: u32, t: u32, weighted: bool) {
    let sb = g / 16u;
    let j = g % 16u;
    let first = t - j;
    let live = sb < params.rows * params.cols / 256u;
    start_flags(t);
    if (live) {
        for (var i = 0u; i < 16u; i = i + 1u) {
            kx[i] = kload(sb * 256u + j * 16u + i);
            if (weighted) {
                kw[i] = kqw((sb * 256u + j * 16u + i) % params.cols);
            }
        }
        ks_scale[t] = make_qx(16u, 32i, weighted);
    }
    workgroupBarrier();
    if (live) {
        var max_scale = 0.0;
        var max_abs = 0.0;
        for (var k = 0u; k < 16u; k = k + 1u) {
            let s = ks_scale[first + k];
            if (abs(s) > max_abs) {
                max_abs = abs(s);
                max_scale = s;
            }
        }
        // Below ggml's epsilon the block stays all zero bytes.
        if (max_abs >= 1e-15) {
            let iscale = kdiv(-128.0, max_scale);
            let db = f16_rn(kdiv(1.0, iscale));
            let at = sb * 210u;
            if (j == 0u) {
                put_byte(at + 208u, db);
                put_byte(at + 209u, db >> 8u);
            }
            let s = as_i8(min(nearest(kmul(iscale, ks_scale[t])), 127i));
            put_byte(at + 192u + j, u32(s));
            let dd = kmul(f16_val(db), f32(s));
            if (dd != 0.0) {
                for (var i = 0u; i < 16u; i = i + 1u) {
                    kl[i] = u32(clamp(nearest(kdiv(kx[i], dd)), -32i, 31i) + 32i);
                }
            }
            for (var i = 0u; i < 16u; i = i + 1u) {
                let e = j * 16u + i;
                let h = e / 128u;
                let k = (e % 128u) / 32u;
                let c = e % 32u;
                put_byte(at + 64u * h + 32u * (k & 1u) + c, (kl[i] & 0xfu) << (4u * (k >> 1u)));
                put_byte(at + 128u + 32u * h + c, (kl[i] >> 4u) << (2u * k));
            }
        }
        if (bad) {
            atomicOr(&ks_bad[t / 16u], 1u);
        }
    }
    workgroupBarrier();
    if (live && j == 0u) {
        qp[sb] = atomicLoad(&ks_bad[t / 16u]);
    }
}

// Code c of element i of a 32-value block: its low nibble in the 16 bytes
// at qs (elements 0–15 low, 16–31 high), its fifth bit (Q5 types) in the
// 32 bits at qh.
fn put_code(qs: u32, qh: u32, i: u32, c: u32, fifth: bool) {
    put_byte(qs + (i & 15u), (c & 0xfu) << (4u * (i >> 4u)));
    if (fifth) {
        put_byte(qh + i / 8u, ((c >> 4u) & 1u) << (i % 8u));
    }
}

// Q5_0 (22 bytes) and Q5_1 (24 bytes): one block of 32 per invocation.
fn q5_block(k: u32, with_min: bool) {
    bad = false;
    for (var i = 0u; i < 32u; i = i + 1u) {
        kx[i] = kload(k * 32u + i);
    }
    var d = 0.0;
    var mn = 0.0;
    var at = k * 22u;
    if (with_min) {
        at = k * 24u;
        mn = 3.40282347e38;
        var mx = -3.40282347e38;
        for (var i = 0u; i < 32u; i = i + 1u) {
            if (kx[i] < mn) {
                mn = kx[i];
            }
            if (kx[i] > mx) {
                mx = kx[i];
            }
        }
        d = kdiv(kadd(mx, -mn), 31.0);
        let mb = f16_rn(mn);
        put_byte(at + 2u, mb);
        put_byte(at + 3u, mb >> 8u);
    } else {
        var amax = 0.0;
        var mx = 0.0;
        for (var i = 0u; i < 32u; i = i + 1u) {
            if (amax < abs(kx[i])) {
                amax = abs(kx[i]);
                mx = kx[i];
            }
        }
        d = kdiv(mx, -16.0);
    }
    var id = 0.0;
    if (d != 0.0) {
        id = kdiv(1.0, d);
    }
    let db = f16_rn(d);
    put_byte(at, db);
    put_byte(at + 1u, db >> 8u);
    let qs = select(at + 6u, at + 8u, with_min);
    let qh = qs - 4u;
    for (var i = 0u; i < 32u; i = i + 1u) {
        var c = 0u;
        if (with_min) {
            c = u32(i32(trunc(kadd(kmul(kadd(kx[i], -mn), id), 0.5)))) & 0xffu;
        } else {
            c = u32(min(as_i8(i32(trunc(kadd(kmul(kx[i], id), 16.5)))), 31i)) & 0xffu;
        }
        put_code(qs, qh, i, c, true);
    }
    qp[k] = select(0u, 1u, bad);
}

@compute @workgroup_size(64)
fn quantize_q5_0(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = invocation(wid, nwg, lid);
    if (k * 32u < params.rows * params.cols) {
        q5_block(k, false);
    }
}

@compute @workgroup_size(64)
fn quantize_q5_1(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = invocation(wid, nwg, lid);
    if (k * 32u < params.rows * params.cols) {
        q5_block(k, true);
    }
}

// The weighted 32-value blocks (ggml's quantize_row_q4_0_impl, _q5_0_impl
// and _q5_1_impl with an importance matrix): each value weighted by
// importance · √(σ² + x²), σ² the mean square of its whole row, which
// row_sigma2 left in qp[params.sig_at + row] (a NaN there: the row's sum
// met a subnormal or worse, and every block of it goes to the CPU).

// σ² of each row of the chunk: Σ x² in column order over cols, one row per
// invocation.
@compute @workgroup_size(64)
fn row_sigma2(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = invocation(wid, nwg, lid);
    if (r >= params.rows) {
        return;
    }
    bad = false;
    var sum_x2 = 0.0;
    for (var c = 0u; c < params.cols; c = c + 1u) {
        let v = kload(r * params.cols + c);
        sum_x2 = kadd(sum_x2, kmul(v, v));
    }
    let sigma2 = kdiv(sum_x2, f32(params.cols));
    qp[params.sig_at + r] = select(bitcast<u32>(sigma2), 0x7fc00000u, bad);
}

// Block k: its values in kx, their weights in kw.
fn weighted_32(k: u32) {
    let sigma2 = bitcast<f32>(qp[params.sig_at + (k * 32u) / params.cols]);
    if (sigma2 != sigma2) {
        bad = true;
    }
    let col = (k * 32u) % params.cols;
    for (var i = 0u; i < 32u; i = i + 1u) {
        kx[i] = kload(k * 32u + i);
        kw[i] = kmul(kqw(col + i), sqrt_rn(kadd(sigma2, kmul(kx[i], kx[i]))));
    }
}

// Q4_0 (18 bytes) and Q5_0 (22): the symmetric grid of make_qx_quants.
fn q_sym_w(k: u32, nmax: i32, size: u32) {
    bad = false;
    weighted_32(k);
    let d = make_qx(32u, nmax, true);
    let at = k * size;
    let db = f16_rn(d);
    put_byte(at, db);
    put_byte(at + 1u, db >> 8u);
    // Q4_0: codes from byte 2; Q5_0: fifth bits at 2, codes from 6.
    let q5 = size == 22u;
    for (var i = 0u; i < 32u; i = i + 1u) {
        put_code(select(at + 2u, at + 6u, q5), at + 2u, i, kl[i], q5);
    }
    qp[k] = select(0u, 1u, bad);
}

@compute @workgroup_size(64)
fn quantize_q4_0_w(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = invocation(wid, nwg, lid);
    if (k * 32u < params.rows * params.cols) {
        q_sym_w(k, 8i, 18u);
    }
}

@compute @workgroup_size(64)
fn quantize_q5_0_w(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = invocation(wid, nwg, lid);
    if (k * 32u < params.rows * params.cols) {
        q_sym_w(k, 16i, 22u);
    }
}

// Q5_1 (24 bytes): the affine grid of the weighted search (37 grids).
@compute @workgroup_size(64)
fn quantize_q5_1_w(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = invocation(wid, nwg, lid);
    if (k * 32u >= params.rows * params.cols) {
        return;
    }
    bad = false;
    weighted_32(k);
    let sm = make_qkx(31i, -0.9, 0.05, 36i);
    let at = k * 24u;
    let db = f16_rn(sm.x);
    let mb = f16_rn(-sm.y);
    put_byte(at, db);
    put_byte(at + 1u, db >> 8u);
    put_byte(at + 2u, mb);
    put_byte(at + 3u, mb >> 8u);
    for (var i = 0u; i < 32u; i = i + 1u) {
        put_code(at + 8u, at + 4u, i, kl[i], true);
    }
    qp[k] = select(0u, 1u, bad);
}
