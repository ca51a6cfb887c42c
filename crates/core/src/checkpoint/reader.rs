//! Opening a checkpoint: one `.safetensors` file, a Hugging Face folder with
//! `model.safetensors.index.json` and its shards, or a folder of
//! `.safetensors` files. Every file is memory-mapped and every header
//! validated at open; no tensor byte is read until a view is asked for.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use super::header;
use crate::{DType, Error, Result, TensorView};

/// File name of the shard index Hugging Face writes beside sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One memory-mapped safetensors file.
#[derive(Debug)]
pub struct Shard {
    /// Full path of the file.
    pub path: PathBuf,
    /// The file's `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
    map: Mmap,
}

impl Shard {
    /// File name without folder.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the file is empty (never true for a validated shard).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One tensor of a checkpoint: where it lives and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::shards`].
    pub shard: usize,
    /// Byte range inside the shard file.
    pub range: Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of bytes.
    pub fn nbytes(&self) -> usize {
        self.range.len()
    }
}

/// How the checkpoint was laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A single `.safetensors` file.
    File,
    /// A folder with `model.safetensors.index.json`.
    Indexed,
    /// A folder of `.safetensors` files without an index.
    Folder,
}

/// An opened, validated checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// What the user named: a file or a folder.
    pub root: PathBuf,
    pub layout: Layout,
    /// Files in name order.
    pub shards: Vec<Shard>,
    /// Tensors in storage order (shard by shard, by offset).
    pub tensors: Vec<TensorInfo>,
    /// Files of the folder that are not weights (config.json, tokenizer
    /// files), to be copied beside any output.
    pub extra_files: Vec<PathBuf>,
    /// The index's own `metadata` object, when there is an index.
    pub index_metadata: Option<Value>,
    by_name: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens and validates the checkpoint at `path` (file or folder).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        if meta.is_file() {
            let shard = open_shard(&root)?;
            return Checkpoint::assemble(root, Layout::File, vec![shard], Vec::new(), None);
        }
        let mut weights = Vec::new();
        let mut extra = Vec::new();
        let mut index = None;
        let listing = std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| Error::io(&root, e))?;
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !p.is_file() {
                tracing::debug!("skipping {} (not a file)", p.display());
                continue;
            }
            if name == INDEX_FILE {
                index = Some(p);
            } else if name.ends_with(".safetensors") {
                weights.push(p);
            } else {
                extra.push(p);
            }
        }
        weights.sort();
        extra.sort();
        match index {
            Some(index_path) => Checkpoint::open_indexed(root, &index_path, extra),
            None => {
                if weights.is_empty() {
                    return Err(Error::format(
                        &root,
                        "folder holds no .safetensors files and no model.safetensors.index.json",
                    ));
                }
                let shards = weights
                    .iter()
                    .map(|p| open_shard(p))
                    .collect::<Result<_>>()?;
                Checkpoint::assemble(root, Layout::Folder, shards, extra, None)
            }
        }
    }

    fn open_indexed(root: PathBuf, index_path: &Path, extra: Vec<PathBuf>) -> Result<Self> {
        let text = std::fs::read(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: Value = serde_json::from_slice(&text)
            .map_err(|e| Error::format(index_path, format!("not valid JSON: {e}")))?;
        let Some(Value::Object(weight_map)) = json.get("weight_map") else {
            return Err(Error::format(index_path, "missing 'weight_map' object"));
        };
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tensor, file) in weight_map {
            let Value::String(file) = file else {
                return Err(Error::format(
                    index_path,
                    format!("weight_map entry for '{tensor}' is not a file name"),
                ));
            };
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(Error::format(
                    index_path,
                    format!("weight_map names '{file}', which is not a plain file name"),
                ));
            }
            wanted.entry(file.clone()).or_default().push(tensor.clone());
        }
        let mut shards = Vec::with_capacity(wanted.len());
        for file in wanted.keys() {
            let p = root.join(file);
            if !p.is_file() {
                return Err(Error::format(
                    index_path,
                    format!("index names shard '{file}', which does not exist"),
                ));
            }
            shards.push(open_shard(&p)?);
        }
        let ckpt = Checkpoint::assemble(
            root,
            Layout::Indexed,
            shards,
            extra,
            json.get("metadata").cloned(),
        )?;
        for (file, tensors) in &wanted {
            for t in tensors {
                let found = ckpt
                    .get(t)
                    .map(|info| ckpt.shards[info.shard].file_name() == *file);
                if found != Some(true) {
                    return Err(Error::tensor(
                        index_path,
                        t,
                        format!("index places it in '{file}', which does not hold it"),
                    ));
                }
            }
        }
        if ckpt.tensors.len() != weight_map.len() {
            tracing::warn!(
                "{}: shards hold {} tensors the index does not name",
                index_path.display(),
                ckpt.tensors.len() - weight_map.len()
            );
        }
        Ok(ckpt)
    }

    fn assemble(
        root: PathBuf,
        layout: Layout,
        shards: Vec<(Shard, Vec<header::HeaderEntry>)>,
        extra_files: Vec<PathBuf>,
        index_metadata: Option<Value>,
    ) -> Result<Self> {
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        let mut kept = Vec::with_capacity(shards.len());
        for (i, (shard, entries)) in shards.into_iter().enumerate() {
            for e in entries {
                if let Some(&prev) = by_name.get(&e.name) {
                    let prev: &TensorInfo = &tensors[prev];
                    return Err(Error::tensor(
                        &shard.path,
                        &e.name,
                        format!("also stored in {}", kept_name(&kept, prev.shard)),
                    ));
                }
                by_name.insert(e.name.clone(), tensors.len());
                tensors.push(TensorInfo {
                    name: e.name,
                    dtype: e.dtype,
                    shape: e.shape,
                    shard: i,
                    range: e.range,
                });
            }
            kept.push(shard);
        }
        Ok(Checkpoint {
            root,
            layout,
            shards: kept,
            tensors,
            extra_files,
            index_metadata,
            by_name,
        })
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A view of a tensor's bytes straight from the memory map.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        TensorView::mapped(
            info.dtype,
            &info.shape,
            &self.shards[info.shard].map,
            info.range.clone(),
        )
    }

    /// Path of the file a tensor lives in (for messages).
    pub fn path_of(&self, info: &TensorInfo) -> &Path {
        &self.shards[info.shard].path
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes() as u64).sum()
    }
}

fn kept_name(kept: &[Shard], i: usize) -> String {
    kept.get(i).map(|s| s.file_name()).unwrap_or_default()
}

fn open_shard(path: &Path) -> Result<(Shard, Vec<header::HeaderEntry>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < 8 {
        return Err(Error::format(
            path,
            format!("file is {len} bytes, too short for the 8-byte header length"),
        ));
    }
    // SAFETY: the mapping is read-only. Like every mmap-based reader, we rely
    // on the file not being truncated by another process while it is open.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let header = header::parse(path, &map)?;
    Ok((
        Shard {
            path: path.to_path_buf(),
            metadata: header.metadata,
            map,
        },
        header.entries,
    ))
}
