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
use super::paths::{
    read_bounded, side_folder, Access, LinkPolicy, SideFile, CONFIG_LIMIT, INDEX_LIMIT,
};
use crate::tensor::MappedFile;
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
    map: MappedFile,
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
        self.map.map.len()
    }

    /// Whether the file is empty (never true for a validated shard).
    pub fn is_empty(&self) -> bool {
        self.map.map.is_empty()
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
    /// files), to be copied beside any output, in name order.
    pub extra_files: Vec<SideFile>,
    /// The index's own `metadata` object, when there is an index.
    pub index_metadata: Option<Value>,
    by_name: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens and validates the checkpoint at `path` (file or folder).
    ///
    /// In a folder, links are followed only into the folder itself or the
    /// Hugging Face cache's `blobs/` ([`LinkPolicy`]): a side file that
    /// points elsewhere is skipped with a warning, a shard or index that
    /// does is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        if meta.is_file() {
            let shard = open_shard(&root)?;
            return Checkpoint::assemble(root, Layout::File, vec![shard], Vec::new(), None);
        }
        let policy = LinkPolicy::for_folder(&root)?;
        let mut weights = Vec::new();
        let mut extra = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut index = None;
        let listing = std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| Error::io(&root, e))?;
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_weight = name == INDEX_FILE || name.ends_with(".safetensors");
            let resolved = match policy.access(&p) {
                Access::File(resolved) => resolved,
                Access::Folder(dir) => {
                    side_folder(&policy, &dir, &name, &mut extra, &mut seen)?;
                    continue;
                }
                Access::Refused(why) if is_weight => {
                    return Err(Error::format(&p, format!("refused: {why}")));
                }
                Access::Refused(why) => {
                    tracing::warn!("skipping {}: {why}", p.display());
                    continue;
                }
            };
            if name == INDEX_FILE {
                index = Some(resolved);
            } else if name.ends_with(".safetensors") {
                weights.push((name, resolved));
            } else {
                extra.push(SideFile {
                    name,
                    path: resolved,
                    is_dir: false,
                });
            }
        }
        weights.sort();
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        match index {
            Some(index_path) => Checkpoint::open_indexed(root, &index_path, &weights, extra),
            None => {
                if weights.is_empty() {
                    return Err(Error::format(
                        &root,
                        "folder holds no .safetensors files and no model.safetensors.index.json",
                    ));
                }
                let shards = weights
                    .iter()
                    .map(|(name, p)| open_shard_named(&root.join(name), p))
                    .collect::<Result<_>>()?;
                Checkpoint::assemble(root, Layout::Folder, shards, extra, None)
            }
        }
    }

    /// The parsed `config.json` beside the weights, if there is one. It is
    /// read with a size limit and must be a JSON object.
    pub fn config(&self) -> Result<Option<serde_json::Map<String, Value>>> {
        let Some(f) = self.side_file("config.json") else {
            return Ok(None);
        };
        let shown = self.root.join(&f.name);
        let text = read_bounded(&f.path, CONFIG_LIMIT).map_err(|e| relabel(e, &shown))?;
        match serde_json::from_slice(&text) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(other) => Err(Error::format(
                &shown,
                format!("is {}, not a JSON object", json_kind(&other)),
            )),
            Err(e) => Err(Error::format(&shown, format!("not valid JSON: {e}"))),
        }
    }

    /// The side file called `name`, if the folder has one.
    pub fn side_file(&self, name: &str) -> Option<&SideFile> {
        self.extra_files.iter().find(|f| f.name == name)
    }

    fn open_indexed(
        root: PathBuf,
        resolved_index: &Path,
        on_disk: &[(String, PathBuf)],
        extra: Vec<SideFile>,
    ) -> Result<Self> {
        let index_path = &root.join(INDEX_FILE);
        let text = read_bounded(resolved_index, INDEX_LIMIT).map_err(|e| relabel(e, index_path))?;
        let json: Value = serde_json::from_slice(&text)
            .map_err(|e| Error::format(index_path, format!("not valid JSON: {e}")))?;
        let Some(Value::Object(weight_map)) = json.get("weight_map") else {
            return Err(Error::format(index_path, "missing 'weight_map' object"));
        };
        if weight_map.is_empty() {
            return Err(Error::format(
                index_path,
                "'weight_map' names no tensor (an index must list every tensor of every shard)",
            ));
        }
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
        // Every shard on disk must be accounted for: one the index forgot
        // would silently drop its tensors from every output.
        for (name, _) in on_disk {
            if !wanted.contains_key(name) {
                return Err(Error::format(
                    index_path,
                    format!(
                        "shard '{name}' is in the folder but the index names none of its tensors \
                         (remove the file, or add its tensors to 'weight_map')"
                    ),
                ));
            }
        }
        let mut shards = Vec::with_capacity(wanted.len());
        for file in wanted.keys() {
            let Some((_, resolved)) = on_disk.iter().find(|(n, _)| n == file) else {
                return Err(Error::format(
                    index_path,
                    format!("index names shard '{file}', which does not exist"),
                ));
            };
            shards.push(open_shard_named(&root.join(file), resolved)?);
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
            let unnamed = ckpt
                .tensors
                .iter()
                .find(|t| !weight_map.contains_key(&t.name))
                .map(|t| t.name.clone())
                .unwrap_or_default();
            return Err(Error::tensor(
                index_path,
                unnamed,
                format!(
                    "stored in a shard but not named by the index ({} tensors are not)",
                    ckpt.tensors.len() - weight_map.len()
                ),
            ));
        }
        Ok(ckpt)
    }

    fn assemble(
        root: PathBuf,
        layout: Layout,
        shards: Vec<(Shard, Vec<header::HeaderEntry>)>,
        extra_files: Vec<SideFile>,
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

/// An error about `resolved` (a link's target) told about `shown` (the
/// name in the folder), so messages name what the user sees.
fn relabel(e: Error, shown: &Path) -> Error {
    match e {
        Error::Io { err, .. } => Error::io(shown, err),
        Error::Format { reason, .. } => Error::format(shown, reason),
        other => other,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn open_shard(path: &Path) -> Result<(Shard, Vec<header::HeaderEntry>)> {
    open_shard_named(path, path)
}

/// Opens the shard whose bytes are at `resolved` (a link's target, or
/// `path` itself), named `path` in messages.
fn open_shard_named(path: &Path, resolved: &Path) -> Result<(Shard, Vec<header::HeaderEntry>)> {
    let file = File::open(resolved).map_err(|e| Error::io(path, e))?;
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
            map: MappedFile { file, map },
        },
        header.entries,
    ))
}
