//! `shears decompress DIR -o OUT`: a compressed-tensors checkpoint back to
//! dense safetensors in the original dtype, values (q − zp)·scale, on the
//! fast CPU path or the GPU (`--backend`). Every
//! quantized layer is checked against the config before anything is
//! written.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Result;
use shears_core::checkpoint::{CheckpointWriter, OutputTensor};
use shears_core::formats::compressed_tensors::{read_config, ReadScheme};
use shears_core::ops::quant::Quant;
use shears_core::reference::matmul::PackedWeight;
use shears_core::reference::quant::{unpack_cols, unpack_rows, QParams, Quantized};
use shears_core::{encode_f32, Checkpoint, DType, Error, TensorInfo};

use crate::args::{BackendChoice, DecompressArgs};
use crate::backend::Backend;
use crate::output::{human_bytes, Out};
use crate::pipeline::{self, Piece};
use crate::progress::Progress;
use crate::select;

/// One quantized layer found in a compressed-tensors checkpoint: its
/// tensors (checked against the config) and the weight's shape.
pub struct Layer<'c> {
    /// The Linear's name: its weight was `<prefix>.weight`.
    pub prefix: String,
    /// `<prefix>.weight_packed` (I32) or, int-quantized, `<prefix>.weight` (I8).
    pub codes: &'c TensorInfo,
    pub scale: &'c TensorInfo,
    pub zero_point: Option<&'c TensorInfo>,
    pub out: usize,
    pub inn: usize,
}

impl Layer<'_> {
    /// The names of every tensor the layer is stored as.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = [Some(self.codes), Some(self.scale), self.zero_point]
            .into_iter()
            .flatten()
            .map(|t| t.name.clone())
            .collect();
        let shape = format!("{}.weight_shape", self.prefix);
        if self.codes.name.ends_with("_packed") {
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
    ) -> Result<(Vec<f32>, Option<Vec<i32>>), Error> {
        let scales = ckpt.view(self.scale).to_f32()?;
        let groups = self.scale.shape[1];
        let zps = self
            .zero_point
            .map(|z| unpack_cols(&i32s(ckpt.view(z).bytes()), self.out, groups, rs.spec.bits));
        Ok((scales, zps))
    }

    /// The codes and parameters as stored.
    pub fn read(&self, ckpt: &Checkpoint, rs: &ReadScheme) -> Result<Quantized, Error> {
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

/// The parsed `config.json` of a checkpoint folder (a JSON object, read
/// with a size limit and the link policy) and its path, for messages.
pub fn read_json_config(ckpt: &Checkpoint) -> Result<(serde_json::Value, PathBuf)> {
    let config_path = ckpt.root.join("config.json");
    match ckpt.config()? {
        Some(map) => Ok((serde_json::Value::Object(map), config_path)),
        None => Err(Error::format(
            &config_path,
            "missing: a compressed-tensors checkpoint describes its quantization there",
        )
        .into()),
    }
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
fn dense_bytes(
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
        return Ok(quant.dequantize_packed(&packed, dtype)?);
    }
    let values = l.read(ckpt, rs)?.dequantized();
    let mut bytes = vec![0u8; values.len() * dtype.bits() / 8];
    encode_f32(dtype, &values, &mut bytes);
    Ok(bytes)
}

/// Finds and checks every quantized layer against the scheme.
pub fn layers<'c>(ckpt: &'c Checkpoint, rs: &ReadScheme) -> Result<Vec<Layer<'c>>, Error> {
    let mut found = Vec::new();
    for t in &ckpt.tensors {
        let Some(prefix) = t.name.strip_suffix(".weight_scale") else {
            continue;
        };
        let path = ckpt.path_of(t);
        let bad = |name: &str, why: String| Error::tensor(path, name, why);
        let codes_name = if rs.packed {
            format!("{prefix}.weight_packed")
        } else {
            format!("{prefix}.weight")
        };
        let codes = ckpt
            .get(&codes_name)
            .ok_or_else(|| bad(&codes_name, "missing beside its weight_scale".into()))?;
        let (out, inn) = if rs.packed {
            let shape_name = format!("{prefix}.weight_shape");
            let st = ckpt
                .get(&shape_name)
                .ok_or_else(|| bad(&shape_name, "missing".into()))?;
            if st.dtype != DType::I64 || st.shape != [2] {
                return Err(bad(
                    &shape_name,
                    format!("{} {:?}, expected I64 [2]", st.dtype, st.shape),
                ));
            }
            let b = ckpt.view(st).bytes();
            let dim = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
            let (o, i) = (dim(0), dim(1));
            if o < 0 || i < 0 {
                return Err(bad(
                    &shape_name,
                    format!("[{o}, {i}] is not a shape (negative dimension)"),
                ));
            }
            // Bounded below by the codes' own shape, checked next.
            (o as usize, i as usize)
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
        found.push(Layer {
            prefix: prefix.to_string(),
            codes,
            scale: t,
            zero_point,
            out,
            inn,
        });
    }
    if found.is_empty() {
        return Err(Error::format(
            &ckpt.root,
            "no quantized layer (no *.weight_scale tensor) to decompress",
        ));
    }
    Ok(found)
}

pub fn run(a: &DecompressArgs, choice: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let ckpt = Checkpoint::open(&a.model)?;
    let (mut config, config_path) = read_json_config(&ckpt)?;
    let rs = read_config(&config, &config_path)?;
    let layers = layers(&ckpt, &rs)?;

    // Output: each layer's tensors become one dense `<prefix>.weight`.
    let mut consumed = HashSet::new();
    for l in &layers {
        for t in [Some(l.codes), Some(l.scale), l.zero_point]
            .into_iter()
            .flatten()
        {
            consumed.insert(t.name.clone());
        }
        consumed.insert(format!("{}.weight_shape", l.prefix));
    }
    let mut shards = select::empty_shards(&ckpt);
    let mut order = Vec::new();
    for t in &ckpt.tensors {
        if let Some(l) = layers.iter().find(|l| std::ptr::eq(l.scale, t)) {
            shards[t.shard].tensors.push(OutputTensor {
                name: format!("{}.weight", l.prefix),
                dtype: t.dtype,
                shape: vec![l.out, l.inn],
            });
            order.push((t, Some(l)));
        } else if !consumed.contains(&t.name) {
            shards[t.shard].tensors.push(OutputTensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            });
            order.push((t, None));
        }
    }
    let opts = select::writer_options(&ckpt, &a.model, a.force);
    let writer = CheckpointWriter::create(&a.output, shards, opts)?;
    let backend = Backend::open(choice)?;
    let quant = backend.quant();
    let mut progress = Progress::bytes(ckpt.total_bytes(), "decompress", quiet);
    let mut written = 0u64;
    // Streamed like every command: decoding overlaps the writer thread.
    let ((), mut writer) = pipeline::streamed(writer, |sink| {
        let mut done = 0u64;
        for (ti, (t, layer)) in order.iter().enumerate() {
            if let Some((next, _)) = order.get(ti + 1) {
                ckpt.view(next).prefetch();
            }
            match layer {
                None => {
                    sink.send(Piece::View(t.name.clone(), ckpt.view(t)))?;
                    written += t.nbytes() as u64;
                }
                Some(l) => {
                    let bytes = dense_bytes(&ckpt, &rs, l, quant.as_ref())?;
                    written += bytes.len() as u64;
                    sink.send(Piece::Bytes(format!("{}.weight", l.prefix), bytes))?;
                }
            }
            done += t.nbytes() as u64;
            progress.set(done);
        }
        Ok(())
    })?;
    progress.finish();
    if let Some(obj) = config.as_object_mut() {
        obj.remove("quantization_config");
    }
    writer.add_file("config.json", &serde_json::to_vec_pretty(&config)?)?;
    for f in &ckpt.extra_files {
        if f.name != "config.json" {
            writer.copy_file(f)?;
        }
    }
    let dest = writer.finish()?;
    out.line(&format!(
        "wrote {}: {} layers decompressed, {} -> {}",
        dest.display(),
        layers.len(),
        human_bytes(ckpt.total_bytes()),
        human_bytes(written)
    ));
    Ok(())
}
