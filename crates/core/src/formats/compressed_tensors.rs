//! The compressed-tensors checkpoint format (what llm-compressor writes and
//! vLLM, SGLang and transformers load): tensor names, shapes and encodings
//! per quantized Linear, and the `quantization_config` block of
//! config.json. Matches the files compressed-tensors 0.20.0 writes
//! (tests/golden).

use serde_json::{json, Value};

use crate::checkpoint::OutputTensor;
use crate::reference::quant::{pack_cols, QuantSpec, Quantized};
use crate::{encode_f32, DType, Error, Result};

/// The version of compressed-tensors whose format this writes.
pub const VERSION: &str = "0.20.0";

/// A weight quantization preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// int8 per channel, symmetric, `pack-quantized`.
    W8A16,
    /// int4 per group (128), symmetric, `pack-quantized`.
    W4A16,
    /// int4 per group (128), asymmetric (packed zero points).
    W4A16Asym,
    /// int8 per channel weights + dynamic per-token int8 activations,
    /// `int-quantized`.
    W8A8,
    /// FP8 E4M3 weights with one scale per output channel, dynamic
    /// per-token FP8 activations, `float-quantized` (FP8_DYNAMIC).
    Fp8,
    /// FP8 E4M3 weights with one scale per 128×128 block, dynamic
    /// per-group-of-128 activations, `float-quantized` (FP8_BLOCK).
    Fp8Block,
    /// FP4 E2M1 weights two per byte, an E4M3 scale per 16 inputs under an
    /// f32 global scale, `nvfp4-pack-quantized` (NVFP4A16).
    Nvfp4A16,
    /// FP4 E2M1 weights two per byte, a power-of-two scale per 32 inputs
    /// stored as its exponent (uint8), `mxfp4-pack-quantized` (MXFP4A16).
    Mxfp4A16,
}

impl Scheme {
    /// Parses the CLI spelling.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "w8a16" => Scheme::W8A16,
            "w4a16" => Scheme::W4A16,
            "w4a16-asym" => Scheme::W4A16Asym,
            "w8a8" => Scheme::W8A8,
            "fp8" => Scheme::Fp8,
            "fp8-block" => Scheme::Fp8Block,
            "nvfp4a16" => Scheme::Nvfp4A16,
            "mxfp4a16" => Scheme::Mxfp4A16,
            other => {
                return Err(Error::Invalid(format!(
                "unknown scheme '{other}' (use w8a16, w4a16, w4a16-asym, w8a8, fp8, fp8-block, nvfp4a16 or mxfp4a16)"
            )))
            }
        })
    }

    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::W8A16 => "w8a16",
            Scheme::W4A16 => "w4a16",
            Scheme::W4A16Asym => "w4a16-asym",
            Scheme::W8A8 => "w8a8",
            Scheme::Fp8 => "fp8",
            Scheme::Fp8Block => "fp8-block",
            Scheme::Nvfp4A16 => "nvfp4a16",
            Scheme::Mxfp4A16 => "mxfp4a16",
        }
    }

    /// Whether the codes are floats (FP8, FP4) rather than integers.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Scheme::Fp8 | Scheme::Fp8Block | Scheme::Nvfp4A16 | Scheme::Mxfp4A16
        )
    }

    /// The inputs per scale of an FP4 scheme.
    pub fn fp4_group(self) -> Option<usize> {
        match self {
            Scheme::Nvfp4A16 => Some(16),
            Scheme::Mxfp4A16 => Some(32),
            _ => None,
        }
    }

    /// The block edge of a block-scaled scheme.
    pub fn block(self) -> Option<usize> {
        match self {
            Scheme::Fp8Block => Some(128),
            _ => None,
        }
    }

    /// The quantization of weights, with the group size overridden when
    /// `group` is given (grouped schemes only).
    pub fn spec(self, group: Option<usize>) -> QuantSpec {
        match self {
            Scheme::Nvfp4A16 | Scheme::Mxfp4A16 => QuantSpec {
                bits: 4,
                group: self.fp4_group(),
                symmetric: true,
            },
            Scheme::W8A16 | Scheme::W8A8 | Scheme::Fp8 | Scheme::Fp8Block => QuantSpec {
                bits: 8,
                group: None,
                symmetric: true,
            },
            Scheme::W4A16 => QuantSpec {
                bits: 4,
                group: Some(group.unwrap_or(128)),
                symmetric: true,
            },
            Scheme::W4A16Asym => QuantSpec {
                bits: 4,
                group: Some(group.unwrap_or(128)),
                symmetric: false,
            },
        }
    }

    /// The compressed-tensors format name.
    pub fn format(self) -> &'static str {
        match self {
            Scheme::W8A8 => "int-quantized",
            Scheme::Fp8 | Scheme::Fp8Block => "float-quantized",
            Scheme::Nvfp4A16 => "nvfp4-pack-quantized",
            Scheme::Mxfp4A16 => "mxfp4-pack-quantized",
            _ => "pack-quantized",
        }
    }
}

/// The tensors that replace `<prefix>.weight` ([out, in] of `dtype`).
pub fn layer_tensors(
    prefix: &str,
    out: usize,
    inn: usize,
    dtype: DType,
    scheme: Scheme,
    spec: &QuantSpec,
) -> Vec<OutputTensor> {
    let groups = inn.div_ceil(spec.group_len(inn));
    let t = |suffix: &str, dtype, shape: Vec<usize>| OutputTensor {
        name: format!("{prefix}.{suffix}"),
        dtype,
        shape,
    };
    match scheme {
        Scheme::W8A8 => vec![
            t("weight", DType::I8, vec![out, inn]),
            t("weight_scale", dtype, vec![out, groups]),
        ],
        Scheme::Fp8 => vec![
            t("weight", DType::F8E4M3, vec![out, inn]),
            t("weight_scale", dtype, vec![out, 1]),
        ],
        Scheme::Fp8Block => vec![
            t("weight", DType::F8E4M3, vec![out, inn]),
            t(
                "weight_scale",
                dtype,
                vec![out.div_ceil(128), inn.div_ceil(128)],
            ),
        ],
        Scheme::Nvfp4A16 => vec![
            t("weight_packed", DType::U8, vec![out, inn.div_ceil(2)]),
            t("weight_scale", DType::F8E4M3, vec![out, inn.div_ceil(16)]),
            t("weight_global_scale", DType::F32, vec![1]),
        ],
        Scheme::Mxfp4A16 => vec![
            t("weight_packed", DType::U8, vec![out, inn.div_ceil(2)]),
            t("weight_scale", DType::U8, vec![out, inn.div_ceil(32)]),
        ],
        _ => {
            let per = (32 / spec.bits) as usize;
            let mut v = vec![
                t("weight_packed", DType::I32, vec![out, inn.div_ceil(per)]),
                t("weight_scale", dtype, vec![out, groups]),
                t("weight_shape", DType::I64, vec![2]),
            ];
            if !spec.symmetric {
                v.push(t(
                    "weight_zero_point",
                    DType::I32,
                    vec![out.div_ceil(per), groups],
                ));
            }
            v
        }
    }
}

/// The bytes of [`layer_tensors`], in the same order.
pub fn layer_bytes(q: &Quantized, dtype: DType, scheme: Scheme, spec: &QuantSpec) -> Vec<Vec<u8>> {
    let scales: Vec<f32> = q.params.iter().map(|p| p.scale).collect();
    let mut scale_bytes = vec![0u8; scales.len() * dtype.bits() / 8];
    encode_f32(dtype, &scales, &mut scale_bytes);
    let words = |w: Vec<i32>| -> Vec<u8> { w.iter().flat_map(|x| x.to_le_bytes()).collect() };
    match scheme {
        Scheme::W8A8 => vec![q.codes.iter().map(|&c| c as u8).collect(), scale_bytes],
        _ => {
            let mut v = vec![
                crate::fast::quant::pack_rows_le(&q.codes, q.rows, q.cols, spec.bits),
                scale_bytes,
                [q.rows as i64, q.cols as i64]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ];
            if !spec.symmetric {
                let zps: Vec<i32> = q.params.iter().map(|p| p.zero_point).collect();
                v.push(words(pack_cols(&zps, q.rows, q.groups(), spec.bits)));
            }
            v
        }
    }
}

/// The `quantization_config` block for a checkpoint quantized with
/// `scheme`; `ignore` names every module left dense.
pub fn quantization_config(scheme: Scheme, spec: &QuantSpec, mut ignore: Vec<String>) -> Value {
    ignore.sort();
    if scheme.is_float() {
        return float_config(scheme, ignore);
    }
    let weights = json!({
        "dynamic": false,
        "group_size": spec.group,
        "num_bits": spec.bits,
        "strategy": if spec.group.is_some() { "group" } else { "channel" },
        "symmetric": spec.symmetric,
        "type": "int",
    });
    let input = match scheme {
        Scheme::W8A8 => json!({
            "dynamic": true,
            "group_size": null,
            "num_bits": 8,
            "strategy": "token",
            "symmetric": true,
            "type": "int",
        }),
        _ => Value::Null,
    };
    json!({
        "config_groups": {
            "group_0": {
                "format": scheme.format(),
                "input_activations": input,
                "output_activations": null,
                "targets": ["Linear"],
                "weights": weights,
            }
        },
        "format": scheme.format(),
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "moe_sparsity_config": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": VERSION,
    })
}

/// The `quantization_config` of the FP8 presets, as llm-compressor 0.14
/// (compressed-tensors 0.20.1) writes them.
fn float_config(scheme: Scheme, ignore: Vec<String>) -> Value {
    let fp4 = |name: &str, group: usize, scale_dtype: &str, strategy: &str| {
        (
            name.to_string(),
            json!({
                "dynamic": false, "group_size": group, "num_bits": 4,
                "scale_dtype": scale_dtype, "strategy": strategy,
                "symmetric": true, "type": "float",
            }),
            Value::Null,
        )
    };
    let (name, weights, input) = match scheme {
        Scheme::Nvfp4A16 => fp4("NVFP4A16", 16, "torch.float8_e4m3fn", "tensor_group"),
        Scheme::Mxfp4A16 => fp4("MXFP4A16", 32, "torch.uint8", "group"),
        Scheme::Fp8Block => (
            "FP8_BLOCK".to_string(),
            json!({
                "block_structure": [128, 128], "dynamic": false, "group_size": null,
                "num_bits": 8, "strategy": "block", "symmetric": true, "type": "float",
            }),
            json!({
                "dynamic": true, "group_size": 128, "num_bits": 8,
                "strategy": "group", "symmetric": true, "type": "float",
            }),
        ),
        _ => (
            "FP8_DYNAMIC".to_string(),
            json!({
                "dynamic": false, "group_size": null, "num_bits": 8,
                "strategy": "channel", "symmetric": true, "type": "float",
            }),
            json!({
                "dynamic": true, "group_size": null, "num_bits": 8,
                "strategy": "token", "symmetric": true, "type": "float",
            }),
        ),
    };
    json!({
        "config_groups": {
            name.as_str(): {
                "format": scheme.format(),
                "input_activations": input,
                "output_activations": null,
                "targets": ["Linear"],
                "weights": weights,
            }
        },
        "format": scheme.format(),
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "moe_sparsity_config": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "transform_config": {},
        "version": "0.20.1",
    })
}

/// What a compressed-tensors checkpoint's config says about its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadScheme {
    pub spec: QuantSpec,
    /// `pack-quantized` (true) or `int-quantized` / `float-quantized`.
    pub packed: bool,
    /// Float weights (FP8 or FP4), when the format is one of theirs.
    pub float: Option<FloatRead>,
    /// The dtype dense weights are written in (config.json's `dtype` /
    /// `torch_dtype`; bf16 when it names none): FP4 scales are not in it.
    pub dense_dtype: DType,
}

impl ReadScheme {
    /// The dtype a layer whose scales are `scale` decodes to: the scales'
    /// own (int, FP8: stored in the weight's dtype) or, for FP4 (whose
    /// scales are FP8 or exponent bytes), the model's.
    pub fn dense_dtype_for(&self, scale: DType) -> DType {
        match self.float {
            Some(FloatRead::Nvfp4 | FloatRead::Mxfp4) => self.dense_dtype,
            _ => scale,
        }
    }
}

/// The float formats `decompress` and the forward pass read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatRead {
    /// `float-quantized` FP8 E4M3: one scale per channel, or per b×b block.
    Fp8 { block: Option<usize> },
    /// `nvfp4-pack-quantized`.
    Nvfp4,
    /// `mxfp4-pack-quantized`.
    Mxfp4,
}

/// The dtype config.json says the model is in (bf16 when it says none).
fn config_dtype(config: &Value) -> DType {
    let name = config
        .get("dtype")
        .or_else(|| config.get("torch_dtype"))
        .and_then(Value::as_str)
        .unwrap_or("bfloat16");
    match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        _ => DType::BF16,
    }
}

/// Reads the weight scheme from `quantization_config` (the first config
/// group; shears writes one).
pub fn read_config(config: &Value, path: &std::path::Path) -> Result<ReadScheme> {
    let bad = |why: &str| Error::format(path, format!("quantization_config: {why}"));
    let qc = config
        .get("quantization_config")
        .ok_or_else(|| bad("missing (not a compressed-tensors checkpoint)"))?;
    let format = qc.get("format").and_then(Value::as_str).unwrap_or("");
    let dense_dtype = config_dtype(config);
    let fp4 = |float| ReadScheme {
        spec: QuantSpec {
            bits: 4,
            group: None,
            symmetric: true,
        },
        packed: false,
        float: Some(float),
        dense_dtype,
    };
    let packed = match format {
        "pack-quantized" => true,
        "int-quantized" | "float-quantized" => false,
        "nvfp4-pack-quantized" => return Ok(fp4(FloatRead::Nvfp4)),
        "mxfp4-pack-quantized" => return Ok(fp4(FloatRead::Mxfp4)),
        other => {
            return Err(bad(&format!(
                "format '{other}' is not one shears reads (pack-quantized, int-quantized, \
                 float-quantized, nvfp4-pack-quantized, mxfp4-pack-quantized)"
            )))
        }
    };
    let groups = qc
        .get("config_groups")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no config_groups"))?;
    if groups.len() != 1 {
        return Err(bad(&format!(
            "{} config groups; shears reads one",
            groups.len()
        )));
    }
    let w = groups
        .values()
        .next()
        .and_then(|g| g.get("weights"))
        .ok_or_else(|| bad("no weights scheme"))?;
    let bits = w
        .get("num_bits")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no num_bits"))? as u32;
    if bits != 4 && bits != 8 {
        return Err(bad(&format!("num_bits {bits}; shears reads 4 and 8")));
    }
    let kind = w.get("type").and_then(Value::as_str);
    if format == "float-quantized" {
        if kind != Some("float") || bits != 8 {
            return Err(bad("float-quantized weights that are not 8-bit floats"));
        }
        let float = match w.get("strategy").and_then(Value::as_str) {
            Some("channel") => None,
            Some("block") => {
                let b: Vec<u64> = w
                    .get("block_structure")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                match b.as_slice() {
                    [r, c] if r == c && *r > 0 => Some(*r as usize),
                    _ => return Err(bad("block strategy without a square block_structure")),
                }
            }
            other => {
                return Err(bad(&format!(
                    "FP8 strategy {other:?}; shears reads channel and block"
                )))
            }
        };
        return Ok(ReadScheme {
            spec: QuantSpec {
                bits: 8,
                group: None,
                symmetric: true,
            },
            packed: false,
            float: Some(FloatRead::Fp8 { block: float }),
            dense_dtype,
        });
    }
    if kind != Some("int") {
        return Err(bad("weights type is not int"));
    }
    let group = match w.get("strategy").and_then(Value::as_str) {
        Some("channel") => None,
        Some("group") => Some(
            w.get("group_size")
                .and_then(Value::as_u64)
                .filter(|&g| g > 0)
                .ok_or_else(|| bad("group strategy without a group_size"))? as usize,
        ),
        other => {
            return Err(bad(&format!(
                "strategy {other:?}; shears reads channel and group"
            )))
        }
    };
    let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
    Ok(ReadScheme {
        spec: QuantSpec {
            bits,
            group,
            symmetric,
        },
        packed,
        float: None,
        dense_dtype,
    })
}
