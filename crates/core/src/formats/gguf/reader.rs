//! Reading a GGUF file back: metadata, tensor infos and each tensor's bytes
//! through mmap. Every length and offset is checked against the file, so a
//! truncated or corrupt file is one error naming it, never a panic.

use std::path::{Path, PathBuf};

use super::{ty, GgmlType, Value, ALIGNMENT};
use crate::{Error, Result};

/// One tensor's info.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// Dimensions innermost first.
    pub dims: Vec<u64>,
    /// ggml's type number.
    pub type_id: u32,
    /// The type, when shears reads it.
    pub ty: Option<GgmlType>,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensor {
    /// The PyTorch-order shape (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<GgufTensor>,
    data_start: usize,
    map: memmap2::Mmap,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(Error::format(
                self.path,
                format!("GGUF ends at byte {} inside its header", self.b.len()),
            ));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn count(&mut self, what: &str) -> Result<usize> {
        let n = self.u64()?;
        // Every counted item takes at least one byte.
        if n > (self.b.len() - self.at) as u64 {
            return Err(Error::format(
                self.path,
                format!("GGUF {what} count {n} exceeds the file"),
            ));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<String> {
        let n = self.count("string length")?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::format(self.path, "GGUF string is not UTF-8"))
    }

    fn scalar(&mut self, t: u32) -> Result<Value> {
        let size = match t {
            ty::U8 | ty::I8 | ty::BOOL => 1,
            ty::U16 | ty::I16 => 2,
            ty::U32 | ty::I32 | ty::F32 => 4,
            ty::U64 | ty::I64 | ty::F64 => 8,
            ty::STR => return Ok(Value::Str(self.str()?)),
            _ => {
                return Err(Error::format(
                    self.path,
                    format!("GGUF metadata value type {t} is unknown"),
                ))
            }
        };
        let b = self.take(size)?;
        let mut w = [0u8; 8];
        w[..size].copy_from_slice(b);
        let raw = u64::from_le_bytes(w);
        Ok(match t {
            ty::U32 => Value::U32(raw as u32),
            ty::I32 => Value::I32(raw as u32 as i32),
            ty::F32 => Value::F32(f32::from_bits(raw as u32)),
            ty::BOOL => Value::Bool(raw != 0),
            ty::U64 => Value::U64(raw),
            ty::U8 => Value::Other(raw as u8 as f64),
            ty::I8 => Value::Other(raw as u8 as i8 as f64),
            ty::U16 => Value::Other(raw as u16 as f64),
            ty::I16 => Value::Other(raw as u16 as i16 as f64),
            ty::I64 => Value::Other(raw as i64 as f64),
            _ => Value::Other(f64::from_bits(raw)),
        })
    }

    fn value(&mut self) -> Result<Value> {
        let t = self.u32()?;
        if t != ty::ARR {
            return self.scalar(t);
        }
        let et = self.u32()?;
        let n = self.count("array")?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.scalar(et)?);
        }
        Ok(match et {
            ty::STR => Value::ArrStr(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::Str(s) => s,
                        _ => unreachable!("strings"),
                    })
                    .collect(),
            ),
            ty::I32 => Value::ArrI32(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::I32(x) => x,
                        _ => unreachable!("i32"),
                    })
                    .collect(),
            ),
            ty::F32 => Value::ArrF32(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::F32(x) => x,
                        _ => unreachable!("f32"),
                    })
                    .collect(),
            ),
            _ => Value::ArrOther(et, n as u64),
        })
    }
}

impl GgufFile {
    /// Opens and checks `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read only; a file changed underneath is the
        // caller's to avoid, as for every mmap reader here.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut c = Cursor {
            b: &map,
            at: 0,
            path,
        };
        if c.take(4).ok() != Some(b"GGUF".as_slice()) {
            return Err(Error::format(path, "not a GGUF file (no GGUF magic)"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::format(
                path,
                format!("GGUF version {version}; shears reads 2 and 3"),
            ));
        }
        let n_tensors = c.count("tensor")?;
        let n_kv = c.count("metadata")?;
        let mut metadata = Vec::with_capacity(n_kv);
        for _ in 0..n_kv {
            let k = c.str()?;
            let v = c.value()?;
            metadata.push((k, v));
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.str()?;
            let rank = c.u32()?;
            if rank > 8 {
                return Err(Error::format(
                    path,
                    format!("tensor '{name}' has {rank} dimensions"),
                ));
            }
            let dims = (0..rank).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let type_id = c.u32()?;
            let offset = c.u64()?;
            tensors.push(GgufTensor {
                name,
                dims,
                type_id,
                ty: GgmlType::from_id(type_id),
                offset,
            });
        }
        let align = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .map(|(_, v)| match v {
                Value::U32(a) => *a as usize,
                _ => 0,
            })
            .unwrap_or(ALIGNMENT);
        if align == 0 || !align.is_power_of_two() {
            return Err(Error::format(
                path,
                "general.alignment is not a power of two",
            ));
        }
        let data_start = c.at.next_multiple_of(align);
        let f = GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_start,
            map,
        };
        for t in &f.tensors {
            if let Some(ty) = t.ty {
                let inner = t.dims.first().copied().unwrap_or(1) as usize;
                if !ty.fits(inner) {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor '{}': rows of {inner} in {} blocks",
                            t.name,
                            ty.name()
                        ),
                    ));
                }
                f.range(t)?;
            }
        }
        Ok(f)
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn range(&self, t: &GgufTensor) -> Result<std::ops::Range<usize>> {
        let ty = t.ty.ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "tensor '{}' has ggml type {}, which shears does not read",
                    t.name, t.type_id
                ),
            )
        })?;
        let inner = t.dims.first().copied().unwrap_or(1) as usize;
        let rows: usize = t.dims.iter().skip(1).product::<u64>() as usize;
        let len = ty.row_bytes(inner) * rows;
        let start = self.data_start + t.offset as usize;
        if start + len > self.map.len() {
            return Err(Error::format(
                &self.path,
                format!("tensor '{}' runs past the end of the file", t.name),
            ));
        }
        Ok(start..start + len)
    }

    /// The stored bytes of `t`.
    pub fn bytes(&self, t: &GgufTensor) -> Result<&[u8]> {
        Ok(&self.map[self.range(t)?])
    }

    /// The values of `t`, dequantized.
    pub fn to_f32(&self, t: &GgufTensor) -> Result<Vec<f32>> {
        let ty = t.ty.expect("checked by bytes");
        Ok(ty.dequantize(self.bytes(t)?))
    }
}
