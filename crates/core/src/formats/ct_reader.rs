//! Reading compressed-tensors checkpoints (shears' or anyone's): the
//! scheme from `config.json`, every quantized layer's tensors found and
//! checked against it, and their dense values on any quant backend. Used
//! by `shears decompress` and by `shears distill layers` for students.

use serde_json::Value;

use super::compressed_tensors::{read_config, FloatRead, ReadScheme};
use crate::ops::quant::Quant;
use crate::reference::matmul::PackedWeight;
use crate::reference::quant::{unpack_cols, unpack_rows, QParams, Quantized};
use crate::train::Levels;
use crate::{encode_f32, Checkpoint, DType, Error, Result, TensorInfo};

/// One quantized layer found in a compressed-tensors checkpoint: its
/// tensors (checked against the config) and the weight's shape.
pub struct Layer<'c> {
    /// The Linear's name: its weight was `<prefix>.weight`.
    pub prefix: String,
    /// `<prefix>.weight_packed` (I32) or, int-quantized, `<prefix>.weight` (I8).
    pub codes: &'c TensorInfo,
    pub scale: &'c TensorInfo,
    pub zero_point: Option<&'c TensorInfo>,
    /// `<prefix>.weight_g_idx` (I32 [in]): the group of each input, when
    /// GPTQ ordered the groups by activation (`actorder = "group"`).
    pub g_idx: Option<&'c TensorInfo>,
    pub out: usize,
    pub inn: usize,
}

impl Layer<'_> {
    /// Gives the mapped pages of the layer's stored tensors back to the
    /// OS once decoded, so a streaming pass holds one layer at a time.
    pub fn release(&self, ckpt: &Checkpoint) {
        for t in self.stored() {
            ckpt.view(t).release(0..t.nbytes());
        }
    }

    /// The stored tensors the layer's weight is decoded from.
    fn stored(&self) -> impl Iterator<Item = &TensorInfo> {
        [
            Some(self.codes),
            Some(self.scale),
            self.zero_point,
            self.g_idx,
        ]
        .into_iter()
        .flatten()
    }

    /// The names of every tensor the layer is stored as.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.stored().map(|t| t.name.clone()).collect();
        let shape = format!("{}.weight_shape", self.prefix);
        // Integer packed layers carry their shape; FP4 packed ones do not.
        if self.codes.name.ends_with("_packed") && self.codes.dtype == DType::I32 {
            v.push(shape);
        }
        v
    }

    /// The scales [out, groups] as f32 and, when asymmetric, the unpacked
    /// zero points.
    pub fn params(
        &self,
        ckpt: &Checkpoint,
        rs: &ReadScheme,
    ) -> Result<(Vec<f32>, Option<Vec<i32>>)> {
        let scales = ckpt.view(self.scale).to_f32()?;
        let groups = self.scale.shape[1];
        let zps = self
            .zero_point
            .map(|z| unpack_cols(&i32s(ckpt.view(z).bytes()), self.out, groups, rs.spec.bits));
        Ok((scales, zps))
    }

    /// The codes and parameters as stored (integer layers only).
    pub fn read(&self, ckpt: &Checkpoint, rs: &ReadScheme) -> Result<Quantized> {
        if rs.float.is_some() {
            return Err(Error::tensor(
                ckpt.path_of(self.codes),
                &self.codes.name,
                "a float layer has no integer grid (read it with read_float)",
            ));
        }
        let (scales, zps) = self.params(ckpt, rs)?;
        let codes: Vec<i8> = if rs.packed {
            unpack_rows(
                &i32s(ckpt.view(self.codes).bytes()),
                self.out,
                self.inn,
                rs.spec.bits,
            )
        } else {
            ckpt.view(self.codes)
                .bytes()
                .iter()
                .map(|&b| b as i8)
                .collect()
        };
        if self.g_idx.is_some() {
            return Err(Error::tensor(
                ckpt.path_of(self.codes),
                &self.codes.name,
                "groups in activation order (weight_g_idx) have no contiguous grid \
                 (layer-wise distillation of such students is not supported yet)",
            ));
        }
        let zps = zps.unwrap_or_else(|| vec![0; scales.len()]);
        Ok(Quantized {
            rows: self.out,
            cols: self.inn,
            group: rs.spec.group_len(self.inn),
            codes,
            params: scales
                .iter()
                .zip(&zps)
                .map(|(&scale, &zero_point)| QParams { scale, zero_point })
                .collect(),
        })
    }
}

/// The quantization scheme of a compressed-tensors checkpoint, from its
/// `config.json` (`None` when it has none, or no `quantization_config`:
/// not a compressed-tensors checkpoint).
pub fn scheme_of(ckpt: &Checkpoint) -> Result<Option<ReadScheme>> {
    let Some(config) = ckpt.config()? else {
        return Ok(None);
    };
    if !config.contains_key("quantization_config") {
        return Ok(None);
    }
    let path = ckpt.root.join("config.json");
    read_config(&Value::Object(config), &path).map(Some)
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The dense weight of a quantized layer, as bytes of its scales' dtype:
/// straight from the packed words on the backend's quant family (every
/// backend byte-identical to the reference), or, for int8 `int-quantized`
/// layers, from the codes.
pub fn dense_bytes(
    ckpt: &Checkpoint,
    rs: &ReadScheme,
    l: &Layer,
    quant: &dyn Quant,
) -> Result<Vec<u8>> {
    let dtype = l.scale.dtype;
    let float_out = matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
    if l.out == 0 || l.inn == 0 {
        return Ok(Vec::new()); // an empty weight: nothing to decode
    }
    if let Some(kind) = rs.float {
        let values = float_values(ckpt, l, kind)?;
        let dtype = rs.dense_dtype_for(dtype);
        let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
        encode_f32(dtype, &values, &mut bytes);
        return Ok(bytes);
    }
    if let Some(g) = l.g_idx {
        // Each input's scale is its group's, by weight_g_idx.
        let g_idx = i32s(ckpt.view(g).bytes());
        let (scales, zps) = l.params(ckpt, rs)?;
        let groups = l.scale.shape[1];
        let codes = unpack_rows(
            &i32s(ckpt.view(l.codes).bytes()),
            l.out,
            l.inn,
            rs.spec.bits,
        );
        let values: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let (r, c) = (i / l.inn, i % l.inn);
                let k = r * groups + g_idx[c] as usize;
                let p = QParams {
                    scale: scales[k],
                    zero_point: zps.as_ref().map_or(0, |z| z[k]),
                };
                crate::reference::quant::dequantize(q as i32, p)
            })
            .collect();
        let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
        encode_f32(dtype, &values, &mut bytes);
        return Ok(bytes);
    }
    if rs.packed && float_out {
        let words = i32s(ckpt.view(l.codes).bytes());
        let (scales, zps) = l.params(ckpt, rs)?;
        let packed = PackedWeight {
            rows: l.out,
            cols: l.inn,
            bits: rs.spec.bits,
            group: rs.spec.group_len(l.inn),
            words: &words,
            scales: &scales,
            zero_points: zps.as_deref(),
        };
        return quant.dequantize_packed(&packed, dtype);
    }
    let values = l.read(ckpt, rs)?.dequantized();
    let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
    encode_f32(dtype, &values, &mut bytes);
    Ok(bytes)
}

/// Finds and checks every quantized layer against the scheme.
pub fn layers<'c>(ckpt: &'c Checkpoint, rs: &ReadScheme) -> Result<Vec<Layer<'c>>> {
    let mut found = Vec::new();
    for t in &ckpt.tensors {
        if let Some(prefix) = t.name.strip_suffix(".weight_scale") {
            found.push(layer(ckpt, rs, prefix, t)?);
        }
    }
    if found.is_empty() {
        return Err(Error::format(
            &ckpt.root,
            "no quantized layer (no *.weight_scale tensor) to decompress",
        ));
    }
    Ok(found)
}

/// The shape a packed layer's `<prefix>.weight_shape` gives (I64 [2], no
/// negative dimension).
fn stored_shape(ckpt: &Checkpoint, prefix: &str, path: &std::path::Path) -> Result<(usize, usize)> {
    let shape_name = format!("{prefix}.weight_shape");
    let bad = |why: String| Error::tensor(path, &shape_name, why);
    let st = ckpt.get(&shape_name).ok_or_else(|| bad("missing".into()))?;
    if st.dtype != DType::I64 || st.shape != [2] {
        return Err(bad(format!(
            "{} {:?}, expected I64 [2]",
            st.dtype, st.shape
        )));
    }
    let b = ckpt.view(st).bytes();
    let dim = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let (o, i) = (dim(0), dim(1));
    if o < 0 || i < 0 {
        return Err(bad(format!(
            "[{o}, {i}] is not a shape (negative dimension)"
        )));
    }
    // Bounded by the codes' own shape, which the caller checks next.
    Ok((o as usize, i as usize))
}

/// A float layer as stored: FP8 codes and scales, or FP4 ones.
enum Stored {
    Fp8(crate::reference::fp8::Fp8),
    Fp4(crate::reference::fp4::Fp4),
}

impl Stored {
    fn dequantized(&self) -> Vec<f32> {
        match self {
            Stored::Fp8(q) => q.dequantized(),
            Stored::Fp4(q) => q.dequantized(),
        }
    }
}

/// A float layer's codes and scales, unpacked.
fn float_stored(ckpt: &Checkpoint, l: &Layer, kind: FloatRead) -> Result<Stored> {
    use crate::reference::fp4::Fp4;
    let codes = ckpt.view(l.codes).bytes();
    Ok(match kind {
        FloatRead::Fp8 { block } => Stored::Fp8(crate::reference::fp8::Fp8 {
            rows: l.out,
            cols: l.inn,
            block,
            codes: codes.to_vec(),
            scales: ckpt.view(l.scale).to_f32()?,
        }),
        FloatRead::Nvfp4 | FloatRead::Mxfp4 => {
            let global_scale = l.zero_point.map(|g| {
                f32::from_le_bytes(
                    ckpt.view(g).bytes()[..4]
                        .try_into()
                        .expect("checked: F32 [1]"),
                )
            });
            let row_bytes = l.inn.div_ceil(2);
            let mut unpacked = Vec::with_capacity(l.out * l.inn);
            for row in codes.chunks(row_bytes) {
                for k in 0..l.inn {
                    unpacked.push((row[k / 2] >> (4 * (k % 2))) & 0xf);
                }
            }
            Stored::Fp4(Fp4 {
                rows: l.out,
                cols: l.inn,
                group: l.inn / l.scale.shape[1].max(1),
                codes: unpacked,
                scales: ckpt.view(l.scale).bytes().to_vec(),
                global_scale,
            })
        }
    })
}

/// The dense values of a float layer.
fn float_values(ckpt: &Checkpoint, l: &Layer, kind: FloatRead) -> Result<Vec<f32>> {
    Ok(float_stored(ckpt, l, kind)?.dequantized())
}

/// A float layer's fixed grid, for training on it: the dense values, what
/// each [row, group] of `group` inputs is divided by (the FP8 scale of
/// the row or of its block tile; the FP4 group's scale, over the global
/// scale for NVFP4), and the format's levels. Codes on these divisors
/// re-encode the layer in its own format with its scales unchanged.
pub struct FloatGrid {
    pub values: Vec<f32>,
    pub divisors: Vec<f32>,
    pub group: usize,
    pub levels: Levels,
}

impl Layer<'_> {
    /// The layer's [`FloatGrid`] (float layers only).
    pub fn read_float(&self, ckpt: &Checkpoint, rs: &ReadScheme) -> Result<FloatGrid> {
        let Some(kind) = rs.float else {
            return Err(Error::tensor(
                ckpt.path_of(self.codes),
                &self.codes.name,
                "an integer layer has no float grid",
            ));
        };
        let stored = float_stored(ckpt, self, kind)?;
        let values = stored.dequantized();
        Ok(match stored {
            Stored::Fp8(q) => {
                let group = q.block.unwrap_or(q.cols).max(1);
                let groups = q.cols.div_ceil(group);
                let divisors = (0..q.rows * groups)
                    .map(|i| q.scale_of(i / groups, (i % groups) * group))
                    .collect();
                FloatGrid {
                    values,
                    divisors,
                    group,
                    levels: Levels::E4M3,
                }
            }
            Stored::Fp4(q) => {
                let groups = q.cols.div_ceil(q.group.max(1));
                let divisors = (0..q.rows * groups)
                    .map(|i| q.scale(i / groups, i % groups))
                    .collect();
                FloatGrid {
                    values,
                    divisors,
                    group: q.group,
                    levels: Levels::E2M1,
                }
            }
        })
    }
}

/// An FP4 layer: packed codes [out, in/2] (U8), scales per group (E4M3 for
/// NVFP4, exponent bytes for MXFP4) and, for NVFP4, the global scale (kept
/// in the layer's `zero_point` slot, which FP4 has no other use for).
fn fp4_layer<'c>(
    ckpt: &'c Checkpoint,
    prefix: &str,
    t: &'c TensorInfo,
    kind: FloatRead,
) -> Result<Layer<'c>> {
    let path = ckpt.path_of(t);
    let bad = |name: &str, why: String| Error::tensor(path, name, why);
    let codes_name = format!("{prefix}.weight_packed");
    let codes = ckpt
        .get(&codes_name)
        .ok_or_else(|| bad(&codes_name, "missing beside its weight_scale".into()))?;
    let (group, scale_dtype) = match kind {
        FloatRead::Nvfp4 => (16, DType::F8E4M3),
        _ => (32, DType::U8),
    };
    if codes.dtype != DType::U8 || codes.shape.len() != 2 {
        return Err(bad(
            &codes_name,
            format!("{} {:?}, expected U8 [out, in/2]", codes.dtype, codes.shape),
        ));
    }
    let (out, inn) = (codes.shape[0], codes.shape[1] * 2);
    if t.dtype != scale_dtype || t.shape != [out, inn / group] {
        return Err(bad(
            &t.name,
            format!(
                "{} {:?}, expected {scale_dtype} [{out}, {}]",
                t.dtype,
                t.shape,
                inn / group
            ),
        ));
    }
    let global = match kind {
        FloatRead::Nvfp4 => {
            let gn = format!("{prefix}.weight_global_scale");
            let g = ckpt
                .get(&gn)
                .ok_or_else(|| bad(&gn, "missing (NVFP4 needs a global scale)".into()))?;
            if g.dtype != DType::F32 || g.shape != [1] {
                return Err(bad(
                    &gn,
                    format!("{} {:?}, expected F32 [1]", g.dtype, g.shape),
                ));
            }
            Some(g)
        }
        _ => None,
    };
    Ok(Layer {
        g_idx: None,
        prefix: prefix.to_string(),
        codes,
        scale: t,
        zero_point: global,
        out,
        inn,
    })
}

/// An FP8 layer: E4M3 codes [out, in] and scales per channel ([out, 1])
/// or per `block` tile, checked.
fn float_layer<'c>(
    ckpt: &'c Checkpoint,
    prefix: &str,
    codes: &'c TensorInfo,
    t: &'c TensorInfo,
    block: Option<usize>,
) -> Result<Layer<'c>> {
    let path = ckpt.path_of(t);
    if codes.dtype != DType::F8E4M3 || codes.shape.len() != 2 {
        return Err(Error::tensor(
            path,
            &codes.name,
            format!(
                "{} {:?}, expected F8_E4M3 [out, in]",
                codes.dtype, codes.shape
            ),
        ));
    }
    let (out, inn) = (codes.shape[0], codes.shape[1]);
    let want = match block {
        None => vec![out, 1],
        Some(b) => vec![out.div_ceil(b), inn.div_ceil(b)],
    };
    if !t.dtype.is_float_computable() || t.shape != want {
        return Err(Error::tensor(
            path,
            &t.name,
            format!("{} {:?}, expected a float {want:?}", t.dtype, t.shape),
        ));
    }
    Ok(Layer {
        g_idx: None,
        prefix: prefix.to_string(),
        codes,
        scale: t,
        zero_point: None,
        out,
        inn,
    })
}

/// The layer `<prefix>` whose scales are `t`, each tensor checked.
fn layer<'c>(
    ckpt: &'c Checkpoint,
    rs: &ReadScheme,
    prefix: &str,
    t: &'c TensorInfo,
) -> Result<Layer<'c>> {
    {
        let path = ckpt.path_of(t);
        let bad = |name: &str, why: String| Error::tensor(path, name, why);
        if let Some(kind @ (FloatRead::Nvfp4 | FloatRead::Mxfp4)) = rs.float {
            return fp4_layer(ckpt, prefix, t, kind);
        }
        let codes_name = if rs.packed {
            format!("{prefix}.weight_packed")
        } else {
            format!("{prefix}.weight")
        };
        let codes = ckpt
            .get(&codes_name)
            .ok_or_else(|| bad(&codes_name, "missing beside its weight_scale".into()))?;
        if let Some(FloatRead::Fp8 { block }) = rs.float {
            return float_layer(ckpt, prefix, codes, t, block);
        }
        let (out, inn) = if rs.packed {
            stored_shape(ckpt, prefix, path)?
        } else {
            if codes.dtype != DType::I8 || codes.shape.len() != 2 {
                return Err(bad(
                    &codes_name,
                    format!("{} {:?}, expected I8 [out, in]", codes.dtype, codes.shape),
                ));
            }
            (codes.shape[0], codes.shape[1])
        };
        let per = (32 / rs.spec.bits) as usize;
        if rs.packed && (codes.dtype != DType::I32 || codes.shape != [out, inn.div_ceil(per)]) {
            return Err(bad(
                &codes_name,
                format!(
                    "{} {:?}, but {}-bit codes of a [{out}, {inn}] weight need I32 [{out}, {}]",
                    codes.dtype,
                    codes.shape,
                    rs.spec.bits,
                    inn.div_ceil(per)
                ),
            ));
        }
        let groups = inn.div_ceil(rs.spec.group_len(inn));
        if !t.dtype.is_float_computable() || t.shape != [out, groups] {
            return Err(bad(
                &t.name,
                format!(
                    "{} {:?}, expected a float [{out}, {groups}]",
                    t.dtype, t.shape
                ),
            ));
        }
        let zero_point = if rs.spec.symmetric {
            None
        } else {
            let zn = format!("{prefix}.weight_zero_point");
            let z = ckpt
                .get(&zn)
                .ok_or_else(|| bad(&zn, "missing (the config says asymmetric)".into()))?;
            if z.dtype != DType::I32 || z.shape != [out.div_ceil(per), groups] {
                return Err(bad(
                    &zn,
                    format!(
                        "{} {:?}, expected I32 [{}, {groups}]",
                        z.dtype,
                        z.shape,
                        out.div_ceil(per)
                    ),
                ));
            }
            Some(z)
        };
        let gn = format!("{prefix}.weight_g_idx");
        let g_idx = match ckpt.get(&gn) {
            None => None,
            Some(g) => {
                if !rs.packed || g.dtype != DType::I32 || g.shape != [inn] {
                    return Err(bad(
                        &gn,
                        format!(
                            "{} {:?}, expected I32 [{inn}] of a packed layer",
                            g.dtype, g.shape
                        ),
                    ));
                }
                let v = i32s(ckpt.view(g).bytes());
                if let Some(c) = v.iter().position(|&x| x < 0 || x as usize >= groups) {
                    return Err(bad(
                        &gn,
                        format!("input {c} names group {}, of {groups}", v[c]),
                    ));
                }
                Some(g)
            }
        };
        Ok(Layer {
            prefix: prefix.to_string(),
            codes,
            scale: t,
            zero_point,
            g_idx,
            out,
            inn,
        })
    }
}
