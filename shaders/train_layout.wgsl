// train_layout.wgsl: the bind layout, parameters and invocation index
// shared by train.wgsl and block.wgsl (prepended to each; GpuTrain's
// layout in crates/kernels/src/train.rs).
//
// Bindings (group 0), the same layout for every entry point:
//   0  in0     array<f32>  read        first input
//   1  in1     array<f32>  read        second input (or a dummy)
//   2  in2     array<f32>  read        third input (or a dummy)
//   3  out0    array<f32>  read_write  first output (or updated in place)
//   4  out1    array<f32>  read_write  second output (or a dummy)
//   5  out2    array<f32>  read_write  third output (or a dummy)
//   6  params  Params      uniform     mirrors `TrainParams` (48 bytes)
//
// Elementwise entry points use @workgroup_size(256) over a 2-D grid of
// workgroups (x fastest) so more than 65535·256 elements fit one dispatch.

struct Params {
    m: u32,      // rows (or elements for elementwise ops)
    k: u32,      // unused
    n: u32,      // columns
    flags: u32,  // 1 = the optional input is present
    f0: f32,
    f1: f32,
    f2: f32,
    f3: f32,
    f4: f32,
    f5: f32,
    u4: u32,
    u5: u32,
}

@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> out1: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

// The flat index of this invocation in a 2-D grid of 256-wide workgroups.
fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

