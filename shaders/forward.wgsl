// forward.wgsl: the operations of a Llama-family decoder besides the
// products (which are the matmul family's `product_f32`,
// shaders/matmul.wgsl): RMSNorm, RoPE, causal grouped-query attention,
// SiLU·mul and the next-token NLL. Specification: the `Forward` trait and
// its CPU reference, crates/core/src/reference/forward.rs. Everything is
// f32; sums run in increasing index order like the reference, so only FMA
// contraction and the accuracy of exp/log/sqrt separate GPU from CPU
// (agreement is stated as FORWARD_RTOL of the largest magnitude).
//
// Bindings (group 0), one layout for every entry point:
//   0  in0     array<f32>  read        first input
//   1  in1     array<f32>  read        second input (or a dummy)
//   2  in2     array<f32>  read        third input (or a dummy)
//   3  out0    array<f32>  read_write  output (or updated in place)
//   4  params  Params      uniform     mirrors `ForwardParams` (32 bytes)
//
// Every entry point has @workgroup_size(64) over a 2-D grid of workgroups
// (x fastest), one invocation per row, pair or element as each says.

struct Params {
    n: u32,        // invocations wanted (rows, pairs, elements, queries)
    width: u32,    // row width: norm dim, vocab, or heads·head_dim
    heads: u32,    // (rope, attention) heads of this tensor
    kv_heads: u32, // (attention) KV heads
    head_dim: u32, // (rope, attention)
    seq_len: u32,  // tokens per sequence
    f0: f32,       // eps (rms_norm) or 1/√d (attention)
    u0: u32,
}

@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

fn index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 64u;
}

// out0[row] = in0[row] / rms(in0[row]) · in1 (the weight), rows of `width`.
@compute @workgroup_size(64)
fn rms_norm(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let row = index(gid, groups);
    if (row >= p.n) { return; }
    let base = row * p.width;
    var ss = 0.0;
    for (var k = 0u; k < p.width; k++) {
        let v = in0[base + k];
        ss += v * v;
    }
    let inv = 1.0 / sqrt(ss / f32(p.width) + p.f0);
    for (var k = 0u; k < p.width; k++) {
        out0[base + k] = in1[k] * (in0[base + k] * inv);
    }
}

// Rotates out0 in place: one invocation per (token, head, j < head_dim/2);
// in0 holds cos and in1 sin, [seq_len, head_dim/2].
@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    if (i >= p.n) { return; }
    let half = p.head_dim / 2u;
    let j = i % half;
    let head = (i / half) % p.heads;
    let tok = i / (half * p.heads);
    let pos = tok % p.seq_len;
    let c = in0[pos * half + j];
    let s = in1[pos * half + j];
    let at = tok * p.heads * p.head_dim + head * p.head_dim + j;
    let a = out0[at];
    let b = out0[at + half];
    out0[at] = a * c - b * s;
    out0[at + half] = b * c + a * s;
}

// One invocation per (token, head): causal softmax(q·kᵀ/√d)·v over the
// keys of its sequence up to itself, in two passes (max, then weights),
// as the reference. in0 = q [tokens, heads·d], in1 = k, in2 = v
// [tokens, kv_heads·d]; out0 [tokens, heads·d] must start zeroed.
@compute @workgroup_size(64)
fn attention(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    if (i >= p.n) { return; }
    let d = p.head_dim;
    let h = i % p.heads;
    let tok = i / p.heads;
    let kh = h / (p.heads / p.kv_heads);
    let first = tok - tok % p.seq_len;
    let qw = p.heads * d;
    let kw = p.kv_heads * d;
    let q0 = tok * qw + h * d;
    var mx = -3.4028235e38;
    for (var t = first; t <= tok; t++) {
        var dot = 0.0;
        for (var c = 0u; c < d; c++) {
            dot += in0[q0 + c] * in1[t * kw + kh * d + c];
        }
        mx = max(mx, dot * p.f0);
    }
    var sum = 0.0;
    for (var t = first; t <= tok; t++) {
        var dot = 0.0;
        for (var c = 0u; c < d; c++) {
            dot += in0[q0 + c] * in1[t * kw + kh * d + c];
        }
        sum += exp(dot * p.f0 - mx);
    }
    for (var t = first; t <= tok; t++) {
        var dot = 0.0;
        for (var c = 0u; c < d; c++) {
            dot += in0[q0 + c] * in1[t * kw + kh * d + c];
        }
        let w = exp(dot * p.f0 - mx) / sum;
        for (var c = 0u; c < d; c++) {
            out0[q0 + c] += w * in2[t * kw + kh * d + c];
        }
    }
}

// out0 = silu(in0) · in1, elementwise over n values.
@compute @workgroup_size(64)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(gid, groups);
    if (i >= p.n) { return; }
    let g = in0[i];
    out0[i] = g / (1.0 + exp(-g)) * in1[i];
}

// out0[row] = logsumexp(in0[row]) − in0[row][target], rows of `width`
// logits; in1 holds the targets as f32 (exact below 2²⁴).
@compute @workgroup_size(64)
fn nll(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) groups: vec3<u32>) {
    let row = index(gid, groups);
    if (row >= p.n) { return; }
    let base = row * p.width;
    var mx = -3.4028235e38;
    for (var k = 0u; k < p.width; k++) {
        mx = max(mx, in0[base + k]);
    }
    var sum = 0.0;
    for (var k = 0u; k < p.width; k++) {
        sum += exp(in0[base + k] - mx);
    }
    out0[row] = mx + log(sum) - in0[base + u32(in1[row])];
}
