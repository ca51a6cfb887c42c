// factor.wgsl: the Hessian's own linear algebra for GPTQ and SparseGPT —
// the Gram sums XᵀX over calibration rows, and the lower Cholesky factor L
// of the (reversed, damped) Hessian with its inverse L⁻¹, blocked so that
// no binding holds more than one column panel. Specification:
// crates/core/src/reference/hessian.rs (`factor`, and `RefGram` in
// reference/gram.rs); the host side is crates/kernels/src/hessian/factor.rs.
//
// Layout. The matrix is padded to N = T·NB (identity on the padding) and
// kept as T column panels: panel k holds rows k·NB … N−1 of columns
// k·NB … (k+1)·NB − 1, row-major [N − k·NB, NB]. Tile (i, k) of the lower
// triangle is then rows (i − k)·NB … of panel k, contiguous.
//
// Bindings (group 0):
//   0  a       array<f32>          read_write  the panel written (a Gram
//                                              row panel for `gram`)
//   1  b       array<f32>          read        the panel read (X for `gram`)
//   2  dinv    array<f32>          read_write  inverses of the diagonal
//                                              tiles [T, NB, NB]
//   3  status  array<atomic<u32>>  read_write  [0]: first failed pivot
//   4  params  Params              uniform     mirrors `FactorParams`
//
// Entry points (the host orders them; each is one dispatch):
//   gram         16×16: a[i − k0, j] += Σ_t X[t, i]·X[t, j] for the panel's
//                rows i and columns j ≥ its tile's diagonal (the host
//                mirrors the rest).
//   potrf_diag   one workgroup: the diagonal tile at k0 of panel `a`
//                replaced by its Cholesky factor (right-looking); a pivot
//                that is not positive and finite is recorded in status.
//   invert_diag  one workgroup: dinv[tile] = (that factor)⁻¹, a column of
//                the inverse per invocation by forward substitution.
//   trsm         one workgroup per row below the diagonal tile:
//                L_row = A_row · dinv[tile]ᵀ, in place.
//   syrk         16×16: panel `a` (columns k0 … k0+NB) −= L·L_kᵀ, L its
//                rows of panel `b` (the panel just factored).
//   inv_apply    one workgroup: tile at k0 of `a` (a column panel of L⁻¹
//                being built) ← dinv[tile] · itself, in place.
//   inv_update   16×16: rows of `a` below the tile at k0 −= L · X_t, L the
//                rows of panel `b` below its diagonal tile, X_t `a`'s tile.
//
// Invariants: f32 throughout, sums in tile order. Results agree with the
// CPU paths within the family's stated tolerances, not bytes.

override NB: u32 = 64u;

struct Params {
    n: u32,       // N (factor) or the Gram's width (gram)
    a_row0: u32,  // first global row `a` holds
    b_row0: u32,  // first global row `b` holds
    k0: u32,      // first row of the tile in question (gram: of the panel)
    rows: u32,    // gram: rows of this Gram panel
    tokens: u32,  // gram: rows of X
    tile: u32,    // index of the diagonal tile (dinv)
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> dinv: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;
var<workgroup> row: array<f32, 256>;

// Index in `a` of global row r, panel column c.
fn at(r: u32, c: u32) -> u32 {
    return (r - params.a_row0) * NB + c;
}

// Index in `dinv` of row r, column c of the current tile's inverse.
fn dv(r: u32, c: u32) -> u32 {
    return (params.tile * NB + r) * NB + c;
}

@compute @workgroup_size(16, 16)
fn gram(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>) {
    let n = params.n;
    let i_tile = params.k0 + wg.y * 16u;
    let j_tile = wg.x * 16u;
    // Tiles wholly below the diagonal are mirrored by the host.
    if (j_tile + 15u < i_tile) {
        return;
    }
    var acc = 0.0;
    for (var t0 = 0u; t0 < params.tokens; t0 += 16u) {
        let t = t0 + l.y;
        let ci = i_tile + l.x;
        var va = 0.0;
        if (t < params.tokens && ci < n && wg.y * 16u + l.x < params.rows) {
            va = b[t * n + ci];
        }
        var vb = 0.0;
        if (t < params.tokens && j_tile + l.x < n) {
            vb = b[t * n + j_tile + l.x];
        }
        ta[l.y][l.x] = va;
        tb[l.y][l.x] = vb;
        workgroupBarrier();
        for (var s = 0u; s < 16u; s++) {
            acc += ta[s][l.y] * tb[s][l.x];
        }
        workgroupBarrier();
    }
    let il = wg.y * 16u + l.y;
    let j = j_tile + l.x;
    if (il < params.rows && j < n) {
        a[il * n + j] += acc;
    }
}

@compute @workgroup_size(64)
fn potrf_diag(@builtin(local_invocation_id) l: vec3<u32>) {
    let k0 = params.k0;
    for (var j = 0u; j < NB; j++) {
        storageBarrier();
        let d = a[at(k0 + j, j)];
        let ok = d > 0.0 && d <= 3.4028235e38;
        let s = sqrt(select(1.0, d, ok));
        if (!ok && l.x == 0u) {
            atomicMin(&status[0], k0 + j);
        }
        storageBarrier();
        for (var i = l.x; i < NB; i += 64u) {
            if (i == j) {
                a[at(k0 + j, j)] = s;
            } else if (i > j) {
                a[at(k0 + i, j)] = a[at(k0 + i, j)] / s;
            }
        }
        storageBarrier();
        for (var i = l.x; i < NB; i += 64u) {
            if (i > j) {
                let lij = a[at(k0 + i, j)];
                for (var c = j + 1u; c <= i; c++) {
                    a[at(k0 + i, c)] -= lij * a[at(k0 + c, j)];
                }
            }
        }
    }
}

@compute @workgroup_size(64)
fn invert_diag(@builtin(local_invocation_id) l: vec3<u32>) {
    let k0 = params.k0;
    for (var j = l.x; j < NB; j += 64u) {
        for (var i = 0u; i < j; i++) {
            dinv[dv(i, j)] = 0.0;
        }
        dinv[dv(j, j)] = 1.0 / a[at(k0 + j, j)];
        for (var i = j + 1u; i < NB; i++) {
            var s = 0.0;
            for (var t = j; t < i; t++) {
                s += a[at(k0 + i, t)] * dinv[dv(t, j)];
            }
            dinv[dv(i, j)] = -s / a[at(k0 + i, i)];
        }
    }
}

@compute @workgroup_size(64)
fn trsm(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>) {
    let r = params.k0 + NB + wg.x + wg.y * nwg.x;
    if (r >= params.n) {
        return;
    }
    for (var c = l.x; c < NB; c += 64u) {
        row[c] = a[at(r, c)];
    }
    workgroupBarrier();
    for (var c = l.x; c < NB; c += 64u) {
        var s = 0.0;
        for (var t = 0u; t <= c; t++) {
            s += row[t] * dinv[dv(c, t)];
        }
        a[at(r, c)] = s;
    }
}

@compute @workgroup_size(16, 16)
fn syrk(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>) {
    let j0 = params.k0;
    let r0 = j0 + wg.y * 16u;
    let c0 = wg.x * 16u;
    var acc = 0.0;
    for (var t0 = 0u; t0 < NB; t0 += 16u) {
        ta[l.y][l.x] = b[(r0 + l.y - params.b_row0) * NB + t0 + l.x];
        tb[l.y][l.x] = b[(j0 + c0 + l.y - params.b_row0) * NB + t0 + l.x];
        workgroupBarrier();
        for (var s = 0u; s < 16u; s++) {
            acc += ta[l.y][s] * tb[l.x][s];
        }
        workgroupBarrier();
    }
    let i = at(r0 + l.y, c0 + l.x);
    a[i] = a[i] - acc;
}

@compute @workgroup_size(64)
fn inv_apply(@builtin(local_invocation_id) l: vec3<u32>) {
    let t0 = params.k0;
    for (var c = l.x; c < NB; c += 64u) {
        for (var r = NB; r > 0u; r--) {
            let rr = r - 1u;
            var s = 0.0;
            for (var q = 0u; q <= rr; q++) {
                s += dinv[dv(rr, q)] * a[at(t0 + q, c)];
            }
            a[at(t0 + rr, c)] = s;
        }
    }
}

@compute @workgroup_size(16, 16)
fn inv_update(@builtin(workgroup_id) wg: vec3<u32>,
              @builtin(local_invocation_id) l: vec3<u32>) {
    let t0 = params.k0;
    let r0 = t0 + NB + wg.y * 16u;
    let c0 = wg.x * 16u;
    var acc = 0.0;
    for (var s0 = 0u; s0 < NB; s0 += 16u) {
        ta[l.y][l.x] = b[(r0 + l.y - params.b_row0) * NB + s0 + l.x];
        tb[l.y][l.x] = a[at(t0 + s0 + l.y, c0 + l.x)];
        workgroupBarrier();
        for (var q = 0u; q < 16u; q++) {
            acc += ta[l.y][q] * tb[q][l.x];
        }
        workgroupBarrier();
    }
    let i = at(r0 + l.y, c0 + l.x);
    a[i] = a[i] - acc;
}
