//! GGUF, the single-file format llama.cpp (and Ollama, LM Studio) load.
//!
//! # Layout (version 3, little-endian)
//!
//! `"GGUF"`, version u32, tensor count u64, metadata count u64; the
//! metadata as (key, type u32, value); one info per tensor (name, rank u32,
//! dimensions u64 innermost first, ggml type u32, offset u64 into the data
//! section); zeros up to `general.alignment` (32 unless the key says
//! otherwise); then the data, each tensor starting at a multiple of the
//! alignment. Strings are a u64 length and UTF-8 bytes, booleans one byte,
//! arrays an element type u32, a count u64 and the elements.
//!
//! Dimensions run innermost first: a PyTorch weight [out, in] is (in, out)
//! here, and its blocks run along each row of `in` values.
//!
//! [`encode_header`] writes everything before the data from a plan, so the
//! data can stream after it; [`GgufFile`] reads a file back through mmap.
//! [`llama`] says what llama.cpp expects of a Llama-family model and
//! [`vocab`] of its tokenizer.

pub mod hf;
pub mod llama;
pub mod mix;
mod reader;
pub mod vocab;
mod writer;

pub use reader::{GgufFile, GgufTensor};
pub use writer::GgufWriter;

use half::{bf16, f16};

use crate::reference::gguf::{
    dequantize_q4_0, dequantize_q4_1, dequantize_q5, dequantize_q8_0, GgufType,
};
use crate::reference::kquants::{dequantize_q4_k, dequantize_q5_k, dequantize_q6_k};
use crate::{Error, Result};

/// Data alignment shears writes (and GGUF's default).
pub const ALIGNMENT: usize = 32;

/// The tensor types shears reads (named as ggml names them); it writes all
/// but Q4_1 ([`GgmlType::written`]).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl GgmlType {
    /// Every type, for lookups.
    pub const ALL: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// ggml's number of the type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// The type of ggml number `id`, when shears knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// ggml's name (as `llama-quantize` and gguf-py print it).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
        }
    }

    /// Whether shears writes the type (Q4_1 it only reads).
    pub fn written(self) -> bool {
        self != GgmlType::Q4_1
    }

    /// The type named `name` (any case) among those shears writes.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.written() && t.name().eq_ignore_ascii_case(name))
    }

    /// The type llama-quantize gives a weight whose rows of `n` do not
    /// split into this type's blocks: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K →
    /// Q8_0 where rows split into 32s, F16 otherwise.
    pub fn fallback(self, n: usize) -> GgmlType {
        let next = match self {
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            _ => GgmlType::F16,
        };
        if next.fits(n) {
            next
        } else {
            GgmlType::F16
        }
    }

    /// The block format of a quantized type shears writes (computed by the
    /// quant family); None for the float types and Q4_1.
    pub fn blocks(self) -> Option<GgufType> {
        match self {
            GgmlType::Q8_0 => Some(GgufType::Q8_0),
            GgmlType::Q4_0 => Some(GgufType::Q4_0),
            GgmlType::Q5_0 => Some(GgufType::Q5_0),
            GgmlType::Q5_1 => Some(GgufType::Q5_1),
            GgmlType::Q4_K => Some(GgufType::Q4_K),
            GgmlType::Q5_K => Some(GgufType::Q5_K),
            GgmlType::Q6_K => Some(GgufType::Q6_K),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q4_1 => None,
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                32
            }
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
        }
    }

    /// Bytes of a row of `n` elements (`n` a multiple of the block).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }

    /// Whether rows of `n` elements split into whole blocks.
    pub fn fits(self, n: usize) -> bool {
        n.is_multiple_of(self.block_elems())
    }

    /// The values of `bytes` (whole rows of this type).
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            GgmlType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgmlType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgmlType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgmlType::Q8_0 => dequantize_q8_0(bytes),
            GgmlType::Q4_0 => dequantize_q4_0(bytes),
            GgmlType::Q4_1 => dequantize_q4_1(bytes),
            GgmlType::Q5_0 => dequantize_q5(bytes, false),
            GgmlType::Q5_1 => dequantize_q5(bytes, true),
            GgmlType::Q4_K => dequantize_q4_k(bytes),
            GgmlType::Q5_K => dequantize_q5_k(bytes),
            GgmlType::Q6_K => dequantize_q6_k(bytes),
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    /// Other scalar types read back (u8, i8, u16, i16, i64, f64), widened.
    Other(f64),
    ArrStr(Vec<String>),
    ArrI32(Vec<i32>),
    ArrF32(Vec<f32>),
    /// An array of another element type, read back: its type and length.
    ArrOther(u32, u64),
}

/// GGUF's value type numbers.
mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STR: u32 = 8;
    pub const ARR: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl Value {
    /// A short rendering for `shears inspect`.
    pub fn show(&self) -> String {
        let list = |n: usize, what: &str| format!("[{n} {what}]");
        match self {
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Str(s) if s.chars().count() > 60 => {
                format!("{:?}…", s.chars().take(60).collect::<String>())
            }
            Value::Str(s) => format!("{s:?}"),
            Value::U64(v) => v.to_string(),
            Value::Other(v) => v.to_string(),
            Value::ArrStr(v) => list(v.len(), "strings"),
            Value::ArrI32(v) => list(v.len(), "i32"),
            Value::ArrF32(v) => list(v.len(), "f32"),
            Value::ArrOther(t, n) => list(*n as usize, &format!("of type {t}")),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let u32le = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        match self {
            Value::U32(v) => {
                u32le(out, ty::U32);
                u32le(out, *v);
            }
            Value::I32(v) => {
                u32le(out, ty::I32);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F32(v) => {
                u32le(out, ty::F32);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(v) => {
                u32le(out, ty::BOOL);
                out.push(*v as u8);
            }
            Value::Str(s) => {
                u32le(out, ty::STR);
                put_str(out, s);
            }
            Value::U64(v) => {
                u32le(out, ty::U64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Other(v) => {
                u32le(out, ty::F64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::ArrStr(v) => {
                u32le(out, ty::ARR);
                u32le(out, ty::STR);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter().for_each(|s| put_str(out, s));
            }
            Value::ArrI32(v) => {
                u32le(out, ty::ARR);
                u32le(out, ty::I32);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            Value::ArrF32(v) => {
                u32le(out, ty::ARR);
                u32le(out, ty::F32);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            Value::ArrOther(..) => unreachable!("read back only, never written"),
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One tensor of a planned file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// Dimensions innermost first (a weight [out, in] is [in, out]).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl PlannedTensor {
    /// Bytes of its data.
    pub fn nbytes(&self) -> usize {
        let inner = self.dims.first().copied().unwrap_or(1) as usize;
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty.row_bytes(inner) * rows as usize
    }
}

/// Everything before the data of a file holding `tensors` in this order
/// (with `general.alignment` among `metadata` when it is not 32), and the
/// offset of each tensor's data after it, padded.
pub fn encode_header(
    metadata: &[(String, Value)],
    tensors: &[PlannedTensor],
) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        v.encode(&mut out);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut at = 0usize;
    for t in tensors {
        if !t.ty.fits(t.dims.first().copied().unwrap_or(1) as usize) {
            return Err(Error::Invalid(format!(
                "tensor '{}': rows of {} do not split into {} blocks of {}",
                t.name,
                t.dims[0],
                t.ty.name(),
                t.ty.block_elems()
            )));
        }
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims
            .iter()
            .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&(at as u64).to_le_bytes());
        offsets.push(at);
        at = (at + t.nbytes()).next_multiple_of(ALIGNMENT);
    }
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
    Ok((out, offsets))
}

#[cfg(test)]
mod tests;
