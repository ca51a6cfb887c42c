// train.wgsl: the operations of training besides the products (which are
// the matmul family's `product_f32`, shaders/matmul.wgsl): bias, ReLU,
// GELU, softmax, classification and MSE losses with their gradients, masked
// Adam, fake quantization. Specification: the `Device` trait and its CPU
// reference, crates/core/src/train/{device,cpu}.rs. Elementwise results
// follow the same formulas; sums run in the same order (products:
// increasing k through 16-wide tiles; bias gradient: increasing row; row
// losses: increasing column), so only FMA contraction and the accuracy of
// exp/log/tanh/sqrt separate GPU from CPU.
//
// Bindings, `Params` and `flat`: train_layout.wgsl, prepended.

// out0[r, j] += in0[j]; m rows, n columns.
@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m * params.n) {
        out0[e] = out0[e] + in0[e % params.n];
    }
}

// out0[j] = Σ_r in0[r, j], increasing r; one invocation per column.
@compute @workgroup_size(256)
fn bias_grad(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = flat(wid, nwg, lid);
    if (j < params.n) {
        var s = 0.0;
        for (var r = 0u; r < params.m; r = r + 1u) {
            s = s + in0[r * params.n + j];
        }
        out0[j] = s;
    }
}

// out0 = max(in0, 0) over m elements.
@compute @workgroup_size(256)
fn relu(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        out0[e] = max(in0[e], 0.0);
    }
}

// out0 = in1 where in0 > 0, else 0.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        out0[e] = select(0.0, in1[e], in0[e] > 0.0);
    }
}

const GELU_C: f32 = 0.7978845608028654; // √(2/π)
const GELU_A: f32 = 0.044715;

// out0 = ½z(1 + tanh(√(2/π)(z + 0.044715z³))).
@compute @workgroup_size(256)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        let z = in0[e];
        let th = tanh(GELU_C * (z + GELU_A * z * z * z));
        out0[e] = 0.5 * z * (1.0 + th);
    }
}

// out0 = in1 · GELU'(in0).
@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e < params.m) {
        let z = in0[e];
        let th = tanh(GELU_C * (z + GELU_A * z * z * z));
        let d = 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th * th) * GELU_C * (1.0 + 3.0 * GELU_A * z * z);
        out0[e] = in1[e] * d;
    }
}

// out0 = softmax(in0 / f0) per row of [m, n]; one invocation per row.
@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat(wid, nwg, lid);
    if (r >= params.m) {
        return;
    }
    let base = r * params.n;
    let t = params.f0;
    var mx = -3.402823e38;
    for (var j = 0u; j < params.n; j = j + 1u) {
        mx = max(mx, in0[base + j] / t);
    }
    var s = 0.0;
    for (var j = 0u; j < params.n; j = j + 1u) {
        s = s + exp(in0[base + j] / t - mx);
    }
    for (var j = 0u; j < params.n; j = j + 1u) {
        out0[base + j] = exp(in0[base + j] / t - mx) / s;
    }
}

// Max of row `base` of in0 (from = 0) or in1 (from = 1), divided by t.
fn row_max(src: u32, base: u32, t: f32) -> f32 {
    var mx = -3.402823e38;
    for (var j = 0u; j < params.n; j = j + 1u) {
        var v = in0[base + j];
        if (src == 1u) {
            v = in1[base + j];
        }
        mx = max(mx, v / t);
    }
    return mx;
}

// Σ_j exp(x_j/t − mx) of row `base` of in0 or in1.
fn row_sum(src: u32, base: u32, t: f32, mx: f32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < params.n; j = j + 1u) {
        var v = in0[base + j];
        if (src == 1u) {
            v = in1[base + j];
        }
        s = s + exp(v / t - mx);
    }
    return s;
}

// Student logits in0 [m, n], teacher logits in1 (flags & 1), labels in2
// [m]; f0 temperature, f1 α. out0 = dz, out1[r] = the row's loss
// T²·KL(softmax(t/T) ‖ softmax(z/T)) + α·CE(softmax(z), label).
@compute @workgroup_size(256)
fn classification_loss(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat(wid, nwg, lid);
    if (r >= params.m) {
        return;
    }
    let base = r * params.n;
    let t = params.f0;
    let alpha = params.f1;
    let teacher = (params.flags & 1u) != 0u;
    let rows = f32(params.m);
    let label = u32(in2[r]);
    // Plain softmax of z for the cross-entropy.
    let mz1 = row_max(0u, base, 1.0);
    let sz1 = row_sum(0u, base, 1.0, mz1);
    let lse1 = mz1 + log(sz1);
    var loss = alpha * (lse1 - in0[base + label]);
    if (teacher) {
        let mzt = row_max(0u, base, t);
        let szt = row_sum(0u, base, t, mzt);
        let mtt = row_max(1u, base, t);
        let stt = row_sum(1u, base, t, mtt);
        var kl = 0.0;
        for (var j = 0u; j < params.n; j = j + 1u) {
            let ls = in0[base + j] / t - mzt - log(szt);
            let lt = in1[base + j] / t - mtt - log(stt);
            let pt = exp(lt);
            if (pt > 0.0) {
                kl = kl + pt * (lt - ls);
            }
            let ps = exp(ls);
            let p1 = exp(in0[base + j] - lse1);
            let onehot = select(0.0, 1.0, j == label);
            out0[base + j] = (t * (ps - pt) + alpha * (p1 - onehot)) / rows;
        }
        loss = loss + t * t * kl;
    } else {
        for (var j = 0u; j < params.n; j = j + 1u) {
            let p1 = exp(in0[base + j] - lse1);
            let onehot = select(0.0, 1.0, j == label);
            out0[base + j] = alpha * (p1 - onehot) / rows;
        }
    }
    out1[r] = loss;
}

// y in0 [m, n] against target in1: out0 = dy = fl(2/(m·n))·(y − t), out1[r] =
// Σ_j (y − t)² of the row, increasing j. One invocation per row.
@compute @workgroup_size(256)
fn mse(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat(wid, nwg, lid);
    if (r >= params.m) {
        return;
    }
    let base = r * params.n;
    let scale = div_rn(2.0, f32(params.m * params.n));
    var s = 0.0;
    for (var j = 0u; j < params.n; j = j + 1u) {
        let d = in0[base + j] - in1[base + j];
        s = s + d * d;
        out0[base + j] = scale * d;
    }
    out1[r] = s;
}

// Adam over m elements: out0 w, in0 g, out1 first moment, out2 second
// moment, in1 mask (flags & 1). f0 lr, f1 β1, f2 β2, f3 eps, f4 c1, f5 c2.
@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e >= params.m) {
        return;
    }
    if ((params.flags & 1u) != 0u && in1[e] == 0.0) {
        out0[e] = 0.0;
        out1[e] = 0.0;
        out2[e] = 0.0;
        return;
    }
    let g = in0[e];
    let m1 = params.f1 * out1[e] + (1.0 - params.f1) * g;
    let v1 = params.f2 * out2[e] + (1.0 - params.f2) * g * g;
    out1[e] = m1;
    out2[e] = v1;
    out0[e] = out0[e] - params.f0 * (m1 * params.f4) / (sqrt(v1 * params.f5) + params.f3);
}

// Fake quantization of in0 [m, n] on the grid: scales in1 [m, groups],
// zero points in2 (flags & 1); u4 bits, u5 group. out0 = (q − zp)·s with
// q = rne(clamp(div_rn(w, s) + zp, qmin, qmax)); on a float grid (flags 2:
// E4M3, 4: E2M1, the codes of minifloat.wgsl) the format's value of the
// clamped quotient times s.
@compute @workgroup_size(256)
fn fake_quant(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat(wid, nwg, lid);
    if (e >= params.m * params.n) {
        return;
    }
    let r = e / params.n;
    let c = e % params.n;
    let groups = (params.n + params.u5 - 1u) / params.u5;
    let g = r * groups + c / params.u5;
    let s = in1[g];
    var zp = 0.0;
    if ((params.flags & 1u) != 0u) {
        zp = in2[g];
    }
    let w = in0[e];
    if ((params.flags & 6u) != 0u) {
        // A float grid: the E4M3 (flag 2) or E2M1 (flag 4) value nearest
        // the clamped quotient, times s; a NaN weight gives 0.
        var v = 0.0;
        if ((params.flags & 2u) != 0u) {
            v = e4m3_value(e4m3(clamp(div_rn(w, s), -448.0, 448.0)));
        } else {
            v = e2m1_value(e2m1(clamp(div_rn(w, s), -6.0, 6.0)));
        }
        out0[e] = select(v * s, 0.0, is_nan(w));
        return;
    }
    let qmax = f32((1u << (params.u4 - 1u)) - 1u);
    let qmin = -qmax - 1.0;
    var q = round(clamp(div_rn(w, s) + zp, qmin, qmax));
    if (w != w) {
        q = 0.0;
    }
    out0[e] = (q - zp) * s;
}
