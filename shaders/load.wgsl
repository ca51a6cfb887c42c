// load.wgsl: reading element i of a weight chunk uploaded as packed words
// (f32, or two f16 / bf16 per word), the prelude of the families that read
// raw weights (quant, float). It reads the family's own bindings `src`
// (array<u32>) and `params.first` (the offset of element 0 inside the
// first word: a chunk of a 16-bit tensor may start mid-word) and the
// prelude's DTYPE (0 f32, 1 f16, 2 bf16).

fn load(i: u32) -> f32 {
    let k = i + params.first;
    if (DTYPE == 0u) {
        return bitcast<f32>(src[k]);
    }
    let w = src[k >> 1u];
    let odd = (k & 1u) == 1u;
    if (DTYPE == 1u) {
        let v = unpack2x16float(w);
        return select(v.x, v.y, odd);
    }
    return bitcast<f32>(select(w << 16u, w & 0xffff0000u, odd));
}
