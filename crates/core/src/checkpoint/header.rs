//! Parsing and validation of one safetensors header.
//!
//! Layout of a safetensors file: an 8-byte little-endian header length `N`,
//! `N` bytes of JSON, then the data section. The JSON maps tensor names to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data
//! section) plus an optional `__metadata__` map of strings. Every check here
//! runs before any tensor byte is touched.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde_json::Value;

use crate::tensor::checked_numel;
use crate::{DType, Error, Result};

/// Largest header accepted (the same bound the reference implementation uses).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor as a header describes it, offsets made absolute in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range in the file (not relative to the data section).
    pub range: Range<usize>,
}

/// A validated header: entries in storage order, metadata, data start.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub entries: Vec<HeaderEntry>,
    pub metadata: BTreeMap<String, String>,
    /// Offset of the data section in the file.
    pub data_start: usize,
}

/// Parses and validates the header of `bytes`, the whole content of the file
/// at `path` (used in messages only).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let err = |reason: String| Error::format(path, reason);
    let file_len = bytes.len() as u64;
    if file_len < 8 {
        return Err(err(format!(
            "file is {file_len} bytes, too short for the 8-byte header length"
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(err(format!(
            "header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if n > file_len - 8 {
        return Err(err(format!(
            "header length {n} runs past the end of the file ({file_len} bytes): truncated file?"
        )));
    }
    let data_start = 8 + n as usize;
    let json: Value = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| err(format!("header is not valid JSON: {e}")))?;
    let Value::Object(map) = json else {
        return Err(err("header is not a JSON object".into()));
    };
    let data_len = bytes.len() - data_start;

    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            let Value::Object(m) = value else {
                return Err(err("__metadata__ is not an object of strings".into()));
            };
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(err(format!("__metadata__ value for '{k}' is not a string")));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        let entry = parse_entry(path, &name, &value, data_len)?;
        entries.push(HeaderEntry {
            range: entry.range.start + data_start..entry.range.end + data_start,
            ..entry
        });
    }

    entries.sort_by_key(|e| (e.range.start, e.range.end));
    let mut end = data_start;
    let mut prev: Option<&str> = None;
    for e in &entries {
        if e.range.start < end {
            let other = prev.unwrap_or("?");
            return Err(Error::tensor(
                path,
                &e.name,
                format!("data_offsets overlap those of tensor '{other}'"),
            ));
        }
        if e.range.start > end {
            return Err(Error::tensor(
                path,
                &e.name,
                format!(
                    "{} unused bytes before this tensor's data (offsets must cover the data section)",
                    e.range.start - end
                ),
            ));
        }
        end = e.range.end;
        prev = Some(&e.name);
    }
    if end != bytes.len() {
        return Err(err(format!(
            "data section has {} bytes after the last tensor (offsets must cover it exactly)",
            bytes.len() - end
        )));
    }
    Ok(Header {
        entries,
        metadata,
        data_start,
    })
}

fn parse_entry(path: &Path, name: &str, value: &Value, data_len: usize) -> Result<HeaderEntry> {
    let bad = |reason: String| Error::tensor(path, name, reason);
    let Value::Object(fields) = value else {
        return Err(bad("entry is not an object".into()));
    };
    let dtype = match fields.get("dtype") {
        Some(Value::String(s)) => s.parse::<DType>().map_err(bad)?,
        _ => return Err(bad("missing or non-string 'dtype'".into())),
    };
    let shape: Vec<usize> = match fields.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("'shape' must hold non-negative integers".into()))?,
        _ => return Err(bad("missing or non-array 'shape'".into())),
    };
    let offsets: Vec<usize> = match fields.get("data_offsets") {
        Some(Value::Array(o)) if o.len() == 2 => o
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("'data_offsets' must be two non-negative integers".into()))?,
        _ => return Err(bad("'data_offsets' must be [begin, end]".into())),
    };
    if let Some(extra) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(bad(format!("unknown field '{extra}'")));
    }
    let (begin, end) = (offsets[0], offsets[1]);
    if begin > end {
        return Err(bad(format!("data_offsets [{begin}, {end}] run backwards")));
    }
    if end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] lie outside the {data_len}-byte data section"
        )));
    }
    let numel = checked_numel(&shape).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let want = dtype.byte_len(numel).ok_or_else(|| {
        bad(format!(
            "{numel} elements of {dtype} are not a whole number of bytes"
        ))
    })?;
    if want != end - begin {
        return Err(bad(format!(
            "{dtype} {shape:?} needs {want} bytes but data_offsets [{begin}, {end}] give {}",
            end - begin
        )));
    }
    Ok(HeaderEntry {
        name: name.to_string(),
        dtype,
        shape,
        range: begin..end,
    })
}

/// Serialises a header for the given tensors (already in storage order,
/// offsets relative to the data section), padded with spaces so that the data
/// section starts on an 8-byte boundary. Returns the full prefix: length word
/// plus JSON.
pub fn encode(
    tensors: &[(String, DType, Vec<usize>, Range<usize>)],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if !metadata.is_empty() {
        let m = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        map.insert("__metadata__".into(), Value::Object(m));
    }
    for (name, dtype, shape, range) in tensors {
        map.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype.name(),
                "shape": shape,
                "data_offsets": [range.start, range.end],
            }),
        );
    }
    let mut json = serde_json::to_vec(&Value::Object(map)).expect("header serialises");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}
