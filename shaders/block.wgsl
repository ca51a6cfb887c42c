// block.wgsl: a decoder block's operations for block-wise distillation
// beyond the products: RMSNorm, RoPE, causal grouped-query attention,
// silu(gate)·up, each with its gradient, and the residual sum.
// Specification: the `BlockOps` trait and its CPU reference,
// crates/core/src/train/block_device.rs and reference/block_train.rs.
// Every sum runs in the reference's order, so only FMA contraction and the
// accuracy of exp and sqrt separate GPU from CPU.
//
// Bindings, `Params` and `flat`: train_layout.wgsl, prepended (the
// training family's layout). One invocation per row, pair, query or
// element, 256-wide workgroups on a 2-D grid.

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// 1/√(Σx²/cols + eps) of the row starting at `at` of in0.
fn inv_rms(at: u32, cols: u32, eps: f32) -> f32 {
    var ss = 0.0;
    for (var c = 0u; c < cols; c = c + 1u) {
        let v = in0[at + c];
        ss = ss + v * v;
    }
    return 1.0 / sqrt(ss / f32(cols) + eps);
}

// out0 = in1 ⊙ (in0 · r) per row; m rows, n columns, f0 = eps.
@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = flat(wid, nwg, lid);
    if (row >= params.m) {
        return;
    }
    let at = row * params.n;
    let r = inv_rms(at, params.n, params.f0);
    for (var c = 0u; c < params.n; c = c + 1u) {
        out0[at + c] = in1[c] * (in0[at + c] * r);
    }
}

// out0 = dx of rms_norm: x = in0, w = in1, dy = in2.
@compute @workgroup_size(256)
fn rms_norm_backward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = flat(wid, nwg, lid);
    if (row >= params.m) {
        return;
    }
    let at = row * params.n;
    let r = inv_rms(at, params.n, params.f0);
    var gx = 0.0;
    for (var c = 0u; c < params.n; c = c + 1u) {
        gx = gx + in2[at + c] * in1[c] * in0[at + c];
    }
    let k = r * r * r * gx / f32(params.n);
    for (var c = 0u; c < params.n; c = c + 1u) {
        out0[at + c] = r * (in2[at + c] * in1[c]) - in0[at + c] * k;
    }
}

// out0 = in0 rotated: m rows of n values, heads of 2·k values, u4 =
// sequence length, in1/in2 = cos/sin [u4, k], flags 1 = inverse.
@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    let pairs = params.n / 2u;
    if (e >= params.m * pairs) {
        return;
    }
    let row = e / pairs;
    let pr = e % pairs;
    let half = params.k;
    let j = pr % half;
    let ia = row * params.n + (pr / half) * 2u * half + j;
    let ib = ia + half;
    let t = (row % params.u4) * half + j;
    let c = in1[t];
    var s = in2[t];
    if (params.flags == 1u) {
        s = -s;
    }
    let a = in0[ia];
    let b = in0[ib];
    out0[ia] = a * c - b * s;
    out0[ib] = b * c + a * s;
}

// Attention shape: m sequences of n tokens, k = head_dim, u4 heads, u5 KV
// heads, f0 = 1/√d. Index of row i of head h of sequence sq in the
// triangles, and of a token's head in q-wide and kv-wide rows.
fn tri_at(sq: u32, h: u32, i: u32) -> u32 {
    let l = params.n;
    return (sq * params.u4 + h) * (l * (l + 1u) / 2u) + i * (i + 1u) / 2u;
}

fn q_at(sq: u32, tok: u32, h: u32) -> u32 {
    return (sq * params.n + tok) * params.u4 * params.k + h * params.k;
}

fn kv_at(sq: u32, tok: u32, kh: u32) -> u32 {
    return (sq * params.n + tok) * params.u5 * params.k + kh * params.k;
}

// The query of invocation e: token i of head h of sequence sq, which
// reads KV head kh.
struct Query {
    i: u32,
    h: u32,
    sq: u32,
    kh: u32,
}

fn query_of(e: u32) -> Query {
    let l = params.n;
    let h = (e / l) % params.u4;
    return Query(e % l, h, e / (l * params.u4), h / (params.u4 / params.u5));
}

// One query: q = in0, k = in1, v = in2 → p = out0 (its triangle row), a = out1.
@compute @workgroup_size(256)
fn attention(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e >= params.m * params.u4 * params.n) {
        return;
    }
    let qr = query_of(e);
    let i = qr.i;
    let h = qr.h;
    let sq = qr.sq;
    let kh = qr.kh;
    let d = params.k;
    let pr = tri_at(sq, h, i);
    let qi = q_at(sq, i, h);
    var mx = -3.40282347e38;
    for (var j = 0u; j <= i; j = j + 1u) {
        let kj = kv_at(sq, j, kh);
        var dot = 0.0;
        for (var c = 0u; c < d; c = c + 1u) {
            dot = dot + in0[qi + c] * in1[kj + c];
        }
        let sc = dot * params.f0;
        out0[pr + j] = sc;
        mx = max(mx, sc);
    }
    var sum = 0.0;
    for (var j = 0u; j <= i; j = j + 1u) {
        let x = exp(out0[pr + j] - mx);
        out0[pr + j] = x;
        sum = sum + x;
    }
    for (var c = 0u; c < d; c = c + 1u) {
        out1[qi + c] = 0.0;
    }
    for (var j = 0u; j <= i; j = j + 1u) {
        let pj = out0[pr + j] / sum;
        out0[pr + j] = pj;
        let vj = kv_at(sq, j, kh);
        for (var c = 0u; c < d; c = c + 1u) {
            out1[qi + c] = out1[qi + c] + pj * in2[vj + c];
        }
    }
}

// One query's dS row: p = in0, da = in1, v = in2 → dS = out0.
@compute @workgroup_size(256)
fn attention_ds(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e >= params.m * params.u4 * params.n) {
        return;
    }
    let qr = query_of(e);
    let i = qr.i;
    let h = qr.h;
    let sq = qr.sq;
    let kh = qr.kh;
    let pr = tri_at(sq, h, i);
    let dai = q_at(sq, i, h);
    var mean = 0.0;
    for (var j = 0u; j <= i; j = j + 1u) {
        let vj = kv_at(sq, j, kh);
        var dot = 0.0;
        for (var c = 0u; c < params.k; c = c + 1u) {
            dot = dot + in1[dai + c] * in2[vj + c];
        }
        out0[pr + j] = dot;
        mean = mean + in0[pr + j] * dot;
    }
    for (var j = 0u; j <= i; j = j + 1u) {
        out0[pr + j] = in0[pr + j] * (out0[pr + j] - mean) * params.f0;
    }
}

// One query's dq: dS = in0, k = in1 → dq = out0.
@compute @workgroup_size(256)
fn attention_dq(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e >= params.m * params.u4 * params.n) {
        return;
    }
    let qr = query_of(e);
    let i = qr.i;
    let h = qr.h;
    let sq = qr.sq;
    let kh = qr.kh;
    let pr = tri_at(sq, h, i);
    let qi = q_at(sq, i, h);
    for (var c = 0u; c < params.k; c = c + 1u) {
        out0[qi + c] = 0.0;
    }
    for (var j = 0u; j <= i; j = j + 1u) {
        let g = in0[pr + j];
        let kj = kv_at(sq, j, kh);
        for (var c = 0u; c < params.k; c = c + 1u) {
            out0[qi + c] = out0[qi + c] + g * in1[kj + c];
        }
    }
}

// One key's sum over its group's heads and the later queries:
// out0[j] = Σ_h Σ_{i ≥ j} in0[h][i, j] · in1[i, h] (dk from dS and q, dv
// from p and da).
@compute @workgroup_size(256)
fn attention_dkv(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    let l = params.n;
    if (e >= params.m * params.u5 * l) {
        return;
    }
    let j = e % l;
    let kh = (e / l) % params.u5;
    let sq = e / (l * params.u5);
    let group = params.u4 / params.u5;
    let kj = kv_at(sq, j, kh);
    for (var c = 0u; c < params.k; c = c + 1u) {
        out0[kj + c] = 0.0;
    }
    for (var h = kh * group; h < (kh + 1u) * group; h = h + 1u) {
        for (var i = j; i < l; i = i + 1u) {
            let g = in0[tri_at(sq, h, i) + j];
            let xi = q_at(sq, i, h);
            for (var c = 0u; c < params.k; c = c + 1u) {
                out0[kj + c] = out0[kj + c] + g * in1[xi + c];
            }
        }
    }
}

// out0 = silu(in0) · in1 over m values.
@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        out0[e] = silu(in0[e]) * in1[e];
    }
}

// gate = in0, up = in1, dm = in2 → dgate = out0, dup = out1.
@compute @workgroup_size(256)
fn silu_mul_backward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        let g = in0[e];
        let sg = 1.0 / (1.0 + exp(-g));
        out0[e] = in2[e] * in1[e] * (sg * (1.0 + g * (1.0 - sg)));
        out1[e] = in2[e] * silu(g);
    }
}

// out0 = in0 + in1 over m values.
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        out0[e] = in0[e] + in1[e];
    }
}
