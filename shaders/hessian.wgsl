// hessian.wgsl: GPTQ and SparseGPT's column sweep over a run of weight
// rows, one block of columns at a time, after div_rn.wgsl and
// qparams.wgsl. Specification: crates/core/src/reference/hessian.rs (the
// `RowState::sweep_block` steps and the block update after them). The
// factor U of the damped inverse Hessian is computed on the host and handed
// over one block of rows at a time.
//
// Bindings (group 0):
//   0  w         array<f32>  read_write  the rows' weights [rows, n], in
//                                        processing order; settled columns
//                                        hold their final values
//   1  ublk      array<f32>  read        U's rows b0..b1 [b1 − b0, n]
//   2  err       array<f32>  read_write  the block's errors (w − q)/U_pp
//                                        [rows, stride]
//   3  codes     array<i32>  read_write  codes [rows, n] (quantizing)
//   4  pruned    array<u32>  read_write  1 = pruned [rows, n]
//   5  qp        array<f32>  read_write  scale, zero point per group
//                                        [rows, groups, 2]
//   6  group_of  array<u32>  read        group of each processed column [n]
//   7  params    Params      uniform     mirrors `HessianParams` (48 bytes)
//
// Entry points:
//   sweep   @workgroup_size(64), one invocation per row (2-D grid of
//           workgroups): columns b0..b1 in turn (N:M choice, group scales
//           as reached, the code, the error, the update of the block's
//           later columns).
//   update  @workgroup_size(16, 16), one invocation per (row, column ≥ b1):
//           w −= Σ_j err[row, j] · U[b0 + j, column], through 16×16 tiles
//           in workgroup memory. Grid: x over columns, y over rows.
//
// Invariants: the sums of `update` run in another order than the CPU's
// product and a driver may fuse a multiply-add, so results agree with the
// CPU within the tolerances DESIGN.md states for this family, not bytes.

struct Params {
    rows: u32,      // rows of this run
    n: u32,         // columns
    b0: u32,        // the block [b0, b1)
    b1: u32,
    stride: u32,    // err's row stride (the block size)
    group: u32,     // inputs per group
    groups: u32,    // groups per row
    keep_n: u32,    // N:M: N kept
    pattern_m: u32, // N:M: M (0: no pattern)
    quant: u32,     // 1: quantize
    as_reached: u32, // 1: group scales computed as their first column is reached
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read> ublk: array<f32>;
@group(0) @binding(2) var<storage, read_write> err: array<f32>;
@group(0) @binding(3) var<storage, read_write> codes: array<i32>;
@group(0) @binding(4) var<storage, read_write> pruned: array<u32>;
@group(0) @binding(5) var<storage, read_write> qp: array<f32>;
@group(0) @binding(6) var<storage, read> group_of: array<u32>;
@group(0) @binding(7) var<uniform> params: Params;

// U[j][k] for j in the block.
fn ub(j: u32, k: u32) -> f32 {
    return ublk[(j - params.b0) * params.n + k];
}

// The ordering key of a non-negative score (reference/score.rs `key_of`):
// its bits, subnormals as 0, NaN canonical.
fn score_key(s: f32) -> u32 {
    let b = bitcast<u32>(s) & 0x7fffffffu;
    if (b > 0x7f800000u) {
        return 0x7fc00000u;
    }
    if (b < 0x00800000u) {
        return 0u;
    }
    return b;
}

// w²/U_pp² of column p of the row at `base`.
fn obs_key(base: u32, p: u32) -> u32 {
    let x = w[base + p];
    let d = ub(p, p);
    return score_key(div_rn(x * x, d * d));
}

@compute @workgroup_size(64)
fn sweep(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (r >= params.rows) {
        return;
    }
    let n = params.n;
    let base = r * n;
    for (var p = params.b0; p < params.b1; p = p + 1u) {
        let m = params.pattern_m;
        if (m > 0u && p % m == 0u) {
            // The N largest keys of the M kept, ties to the higher index.
            for (var i = 0u; i < m; i = i + 1u) {
                let ki = obs_key(base, p + i);
                var above = 0u;
                for (var j = 0u; j < m; j = j + 1u) {
                    let kj = obs_key(base, p + j);
                    if (kj > ki || (kj == ki && j > i)) {
                        above = above + 1u;
                    }
                }
                if (above >= params.keep_n) {
                    pruned[base + p + i] = 1u;
                }
            }
        }
        if (params.quant == 1u && params.as_reached == 1u && p % params.group == 0u) {
            var lo = 0.0;
            var hi = 0.0;
            let end = min(p + params.group, n);
            for (var k = p; k < end; k = k + 1u) {
                var v = w[base + k];
                if (pruned[base + k] != 0u) {
                    v = 0.0;
                }
                lo = min(lo, v);
                hi = max(hi, v);
            }
            let sz = group_params(lo, hi);
            let gi = (r * params.groups + group_of[p]) * 2u;
            qp[gi] = sz.x;
            qp[gi + 1u] = sz.y;
        }
        let x = w[base + p];
        let is_pruned = pruned[base + p] != 0u;
        var q = x;
        if (params.quant == 1u) {
            let gi = (r * params.groups + group_of[p]) * 2u;
            let scale = qp[gi];
            let zp = i32(qp[gi + 1u]);
            var v = x;
            if (is_pruned) {
                v = 0.0;
            }
            let c = code_of(v, scale, f32(zp));
            codes[base + p] = c;
            q = f32(c - zp) * scale;
        } else if (is_pruned) {
            q = 0.0;
        }
        w[base + p] = q;
        let e = div_rn(x - q, ub(p, p));
        for (var k = p + 1u; k < params.b1; k = k + 1u) {
            w[base + k] = w[base + k] - e * ub(p, k);
        }
        err[r * params.stride + (p - params.b0)] = e;
    }
}

var<workgroup> tile_e: array<f32, 256>;
var<workgroup> tile_u: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn update(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = params.b1 + wid.x * 16u + lid.x;
    let row = wid.y * 16u + lid.y;
    let width = params.b1 - params.b0;
    var acc = 0.0;
    for (var j0 = 0u; j0 < width; j0 = j0 + 16u) {
        var e = 0.0;
        if (row < params.rows && j0 + lid.x < width) {
            e = err[row * params.stride + j0 + lid.x];
        }
        var u = 0.0;
        if (j0 + lid.y < width && col < params.n) {
            u = ublk[(j0 + lid.y) * params.n + col];
        }
        tile_e[lid.y * 16u + lid.x] = e;
        tile_u[lid.y * 16u + lid.x] = u;
        workgroupBarrier();
        for (var t = 0u; t < 16u; t = t + 1u) {
            acc = acc + tile_e[lid.y * 16u + t] * tile_u[t * 16u + lid.x];
        }
        workgroupBarrier();
    }
    if (row < params.rows && col < params.n) {
        w[row * params.n + col] = w[row * params.n + col] - acc;
    }
}
