// mask.wgsl: masks from cuts and N:M patterns. Specification:
// crates/core/src/reference/mask.rs. Prepended with score.wgsl (bindings,
// Params, score_key).
//
// out0 holds the chunk's mask, one byte per element packed four to a word
// (element i in byte i % 4 of word i / 4); the host clears it and kernels
// OR in 1 for every kept element, so words shared by two workgroups (rows
// whose length 4 does not divide) stay correct.
//
// Dispatch geometry:
//   tie_counts      @workgroup_size(256); one workgroup per segment of 4096
//                   elements; out1[seg] = elements whose key is params.lo.
//   apply_cut       @workgroup_size(256); one workgroup per segment; out1[seg]
//                   holds the ties before the segment (exclusive prefix,
//                   from the chunk start). Key < lo is pruned; a tie is
//                   pruned while its rank in index order is < params.ties.
//   apply_row_cuts  @workgroup_size(256); one workgroup per row; out1[2r],
//                   out1[2r+1] hold the row's cut (key, ties).
//   nm              @workgroup_size(256); one invocation per group of
//                   params.m elements; keeps the params.n largest by
//                   (key, index).

const SEG: u32 = 4096u;

var<workgroup> scan: array<u32, 256>;
var<workgroup> wg_run: u32;
var<workgroup> wg_ties: atomic<u32>;

fn keep(i: u32) {
    atomicOr(&out0[i >> 2u], 1u << ((i & 3u) * 8u));
}

// Inclusive prefix sum of v over the workgroup (Hillis-Steele in `scan`).
// Every invocation must call it.
fn inclusive_scan(t: u32, v: u32) -> u32 {
    scan[t] = v;
    workgroupBarrier();
    for (var off = 1u; off < 256u; off = off << 1u) {
        var add = 0u;
        if (t >= off) {
            add = scan[t - off];
        }
        workgroupBarrier();
        scan[t] = scan[t] + add;
        workgroupBarrier();
    }
    return scan[t];
}

@compute @workgroup_size(256)
fn tie_counts(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let segs = (params.count + SEG - 1u) / SEG;
    for (var seg = wid.x; seg < segs; seg = seg + nwg.x) {
        if (lid.x == 0u) {
            atomicStore(&wg_ties, 0u);
        }
        workgroupBarrier();
        var c = 0u;
        for (var s = 0u; s < SEG / 256u; s = s + 1u) {
            let e = seg * SEG + s * 256u + lid.x;
            if (e < params.count && score_key(e) == params.lo) {
                c = c + 1u;
            }
        }
        atomicAdd(&wg_ties, c);
        workgroupBarrier();
        if (lid.x == 0u) {
            out1[seg] = atomicLoad(&wg_ties);
        }
        workgroupBarrier();
    }
}

// Walks `len` elements starting at chunk element `start` in index order,
// pruning keys below `cut_key` and the ties whose rank (from `before`) is
// below `budget`; keeps the rest.
fn cut_span(t: u32, start: u32, len: u32, cut_key: u32, before: u32, budget: u32) {
    if (t == 0u) {
        wg_run = before;
    }
    workgroupBarrier();
    let steps = (len + 255u) / 256u;
    for (var s = 0u; s < steps; s = s + 1u) {
        let off = s * 256u + t;
        let valid = off < len;
        var key = 0u;
        if (valid) {
            key = score_key(start + off);
        }
        let tie = valid && key == cut_key;
        let incl = inclusive_scan(t, select(0u, 1u, tie));
        let total = scan[255];
        let rank = wg_run + incl - select(0u, 1u, tie);
        let pruned = key < cut_key || (tie && rank < budget);
        if (valid && !pruned) {
            keep(start + off);
        }
        workgroupBarrier();
        if (t == 0u) {
            wg_run = wg_run + total;
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn apply_cut(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let segs = (params.count + SEG - 1u) / SEG;
    for (var seg = wid.x; seg < segs; seg = seg + nwg.x) {
        let start = seg * SEG;
        let len = min(SEG, params.count - start);
        cut_span(lid.x, start, len, params.lo, out1[seg], params.ties);
    }
}

@compute @workgroup_size(256)
fn apply_row_cuts(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var r = wid.x; r < params.rows; r = r + nwg.x) {
        cut_span(lid.x, r * params.cols, params.cols, out1[2u * r], 0u, out1[2u * r + 1u]);
    }
}

@compute @workgroup_size(256)
fn nm(@builtin(global_invocation_id) gid: vec3<u32>,
      @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.m;
    let groups = params.count / m;
    let stride = nwg.x * 256u;
    for (var g = gid.x; g < groups; g = g + stride) {
        var keys: array<u32, 16>;
        for (var i = 0u; i < m; i = i + 1u) {
            keys[i] = score_key(g * m + i);
        }
        for (var i = 0u; i < m; i = i + 1u) {
            var above = 0u;
            for (var j = 0u; j < m; j = j + 1u) {
                if (keys[j] > keys[i] || (keys[j] == keys[i] && j > i)) {
                    above = above + 1u;
                }
            }
            if (above < params.n) {
                keep(g * m + i);
            }
        }
    }
}
