// select.wgsl: counting passes that locate the cut of a scope, and per-row
// cuts. Specification: crates/core/src/reference/select.rs. Prepended with
// score.wgsl (bindings, Params, score_key).
//
// Dispatch geometry:
//   census     @workgroup_size(256); x covers chunk elements (grid-stride).
//              out0[0..3] += below_lo, eq_lo, eq_hi (u32 per chunk);
//              out0[3] counts inside keys, stored in out1[0..cap).
//   histogram  @workgroup_size(256); x covers chunk elements. out0[0..65536]
//              are bins; out0[65536] ORs the low halves (top-half pass).
//   row_cuts   @workgroup_size(256); one workgroup per row of the chunk.
//              Radix select of the row's k-th smallest key over digits of
//              11, 11 and 10 bits in a workgroup histogram; writes
//              out1[2r] = key, out1[2r+1] = ties (k = 0: key 0, ties 0).

var<workgroup> wg_count: array<atomic<u32>, 4>;
var<workgroup> wg_hist: array<atomic<u32>, 2048>;
var<workgroup> wg_prefix: u32;
var<workgroup> wg_need: u32;

@compute @workgroup_size(256)
fn census(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    if (lid.x < 3u) {
        atomicStore(&wg_count[lid.x], 0u);
    }
    workgroupBarrier();
    var below = 0u;
    var eq_lo = 0u;
    var eq_hi = 0u;
    let stride = nwg.x * 256u;
    for (var i = gid.x; i < params.count; i = i + stride) {
        let key = score_key(i);
        below = below + select(0u, 1u, key < params.lo);
        eq_lo = eq_lo + select(0u, 1u, key == params.lo);
        eq_hi = eq_hi + select(0u, 1u, key == params.hi && params.hi != params.lo);
        if (key > params.lo && key < params.hi) {
            let slot = atomicAdd(&out0[3], 1u);
            if (slot < params.cap) {
                out1[slot] = key;
            }
        }
    }
    atomicAdd(&wg_count[0], below);
    atomicAdd(&wg_count[1], eq_lo);
    atomicAdd(&wg_count[2], eq_hi);
    workgroupBarrier();
    if (lid.x < 3u) {
        atomicAdd(&out0[lid.x], atomicLoad(&wg_count[lid.x]));
    }
}

@compute @workgroup_size(256)
fn histogram(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    var low = 0u;
    for (var i = gid.x; i < params.count; i = i + stride) {
        let key = score_key(i);
        if (params.hi16 == 0xffffffffu) {
            atomicAdd(&out0[key >> 16u], 1u);
            low = low | (key & 0xffffu);
        } else if ((key >> 16u) == params.hi16) {
            atomicAdd(&out0[key & 0xffffu], 1u);
        }
    }
    if (low != 0u) {
        atomicOr(&out0[65536], low);
    }
}

@compute @workgroup_size(256)
fn row_cuts(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lid.x;
    let cols = params.cols;
    for (var r = wid.x; r < params.rows; r = r + nwg.x) {
        if (t == 0u) {
            wg_prefix = 0u;
            wg_need = params.k;
        }
        workgroupBarrier();
        // Digits from the top: bits 31..21, 20..10, 9..0.
        for (var step = 0u; step < 3u; step = step + 1u) {
            let shift = select(select(0u, 10u, step == 1u), 21u, step == 0u);
            let bits = select(11u, 10u, step == 2u);
            for (var b = t; b < 2048u; b = b + 256u) {
                atomicStore(&wg_hist[b], 0u);
            }
            workgroupBarrier();
            let prefix = wg_prefix;
            let need = wg_need;
            if (need > 0u) {
                for (var j = t; j < cols; j = j + 256u) {
                    let key = score_key(r * cols + j);
                    // Keys whose higher digits match the prefix found so far.
                    let above = select(key >> (shift + bits), 0u, step == 0u);
                    if (above == prefix) {
                        atomicAdd(&wg_hist[(key >> shift) & ((1u << bits) - 1u)], 1u);
                    }
                }
            }
            workgroupBarrier();
            if (t == 0u && need > 0u) {
                var acc = 0u;
                var digit = 0u;
                for (var b = 0u; b < (1u << bits); b = b + 1u) {
                    let c = atomicLoad(&wg_hist[b]);
                    if (acc + c >= need) {
                        digit = b;
                        break;
                    }
                    acc = acc + c;
                }
                wg_prefix = (prefix << bits) | digit;
                wg_need = need - acc;
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            let found = params.k > 0u;
            out1[2u * r] = select(0u, wg_prefix, found);
            out1[2u * r + 1u] = select(0u, wg_need, found);
        }
        workgroupBarrier();
    }
}
