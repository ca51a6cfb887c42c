//! Streaming checkpoint writer.
//!
//! Every header is computed from the list of output tensors before any data
//! exists, so tensor data can be written as it is produced, one tensor (or
//! one piece of a tensor) at a time, never holding the checkpoint in memory.
//! All files go into a hidden temporary folder beside the destination
//! ([`Partial`]), which is renamed into place only by
//! [`CheckpointWriter::finish`]; dropping an unfinished writer removes the
//! temporary folder, and so does a signal (see [`super::partials`]).
//!
//! `--force` replaces only what looks like an earlier output: a folder
//! holding a safetensors checkpoint and its side files and nothing else,
//! or, for single-file writers, a safetensors file. Anything else (a
//! folder of documents, a file where a folder goes) is refused naming what
//! it holds.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::destination::{check_destination, replaceable_folder};
use super::header;
use super::partials::Partial;
use super::paths::SideFile;
use super::reader::INDEX_FILE;
use crate::tensor::checked_numel;
use crate::{DType, Error, Result, TensorView};

/// Name, dtype and shape of one tensor to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl OutputTensor {
    /// Bytes this tensor takes on disk.
    pub fn nbytes(&self) -> Result<usize> {
        checked_numel(&self.shape)
            .and_then(|n| self.dtype.byte_len(n))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "tensor '{}': {} {:?} is not a valid size",
                    self.name, self.dtype, self.shape
                ))
            })
    }
}

/// One output file and the tensors it holds, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSpec {
    pub file_name: String,
    pub tensors: Vec<OutputTensor>,
}

/// Options of a writer.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// `__metadata__` written into every shard's header.
    pub metadata: BTreeMap<String, String>,
    /// Replace the destination when it exists.
    pub force: bool,
    /// Paths that must never be replaced or written into (the inputs).
    pub protected: Vec<PathBuf>,
    /// Names of the side files (tokenizer, configs) an earlier output of
    /// this kind holds besides its weights: with `force`, a destination
    /// folder holding only these and safetensors files may be replaced.
    pub side_files: Vec<String>,
    /// Flush every shard to stable storage (fsync) before the folder is
    /// renamed into place, so a power cut cannot leave a complete-looking
    /// folder with missing data. Without it the rename still makes the
    /// output appear only when complete to every other process.
    pub sync: bool,
}

/// Groups tensors, in order, into shards of at most `max_shard_bytes` each
/// (a tensor larger than that gets a shard of its own; 0 means one shard),
/// named as Hugging Face names them.
pub fn plan_shards(tensors: Vec<OutputTensor>, max_shard_bytes: u64) -> Result<Vec<ShardSpec>> {
    let mut groups: Vec<Vec<OutputTensor>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in tensors {
        let n = t.nbytes()? as u64;
        let current = groups.last_mut().expect("one group");
        if max_shard_bytes > 0 && !current.is_empty() && size + n > max_shard_bytes {
            groups.push(vec![t]);
            size = n;
        } else {
            current.push(t);
            size += n;
        }
    }
    let count = groups.len();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, tensors)| ShardSpec {
            file_name: if count == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", i + 1, count)
            },
            tensors,
        })
        .collect())
}

struct PlannedShard {
    file_name: String,
    header: Vec<u8>,
    /// Byte sizes of its tensors, in order.
    sizes: Vec<usize>,
    names: Vec<String>,
}

/// Writes a checkpoint folder tensor by tensor; see the module docs.
pub struct CheckpointWriter {
    dest: PathBuf,
    tmp: PathBuf,
    partial: Option<Partial>,
    force: bool,
    side_files: Vec<String>,
    sync: bool,
    shards: Vec<PlannedShard>,
    /// Position: shard, tensor inside it, bytes of it already written.
    shard: usize,
    tensor: usize,
    written: usize,
    file: Option<BufWriter<File>>,
}

impl CheckpointWriter {
    /// Prepares to write `shards` into the folder `dest`. Fails at once when
    /// `dest` exists (unless `force`) or is one of the protected inputs.
    pub fn create(
        dest: impl AsRef<Path>,
        shards: Vec<ShardSpec>,
        opts: WriterOptions,
    ) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        check_destination(&dest, &opts)?;
        let mut seen = std::collections::HashSet::new();
        let mut planned = Vec::with_capacity(shards.len());
        for spec in shards {
            let mut entries = Vec::with_capacity(spec.tensors.len());
            let mut offset = 0usize;
            let mut sizes = Vec::new();
            for t in &spec.tensors {
                if !seen.insert(t.name.clone()) {
                    return Err(Error::Invalid(format!(
                        "tensor '{}' is written twice",
                        t.name
                    )));
                }
                let n = t.nbytes()?;
                entries.push((t.name.clone(), t.dtype, t.shape.clone(), offset..offset + n));
                sizes.push(n);
                offset += n;
            }
            planned.push(PlannedShard {
                file_name: spec.file_name,
                header: header::encode(&entries, &opts.metadata),
                sizes,
                names: spec.tensors.into_iter().map(|t| t.name).collect(),
            });
        }
        let partial = Partial::folder(&dest)?;
        let mut w = CheckpointWriter {
            dest,
            tmp: partial.path.clone(),
            partial: Some(partial),
            force: opts.force,
            side_files: opts.side_files,
            sync: opts.sync,
            shards: planned,
            shard: 0,
            tensor: 0,
            written: 0,
            file: None,
        };
        if !w.shards.is_empty() {
            w.open_shard()?;
        }
        w.settle()?;
        Ok(w)
    }

    /// Name of the tensor that the next bytes belong to, if any is left.
    pub fn next_tensor(&self) -> Option<&str> {
        self.shards
            .get(self.shard)
            .and_then(|s| s.names.get(self.tensor))
            .map(String::as_str)
    }

    /// Appends bytes to the output, in the planned order. A call may cover
    /// part of a tensor or run across several.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            self.skip_empty()?;
            let Some(shard) = self.shards.get(self.shard) else {
                return Err(Error::Invalid(format!(
                    "{}: {} bytes written past the last tensor",
                    self.dest.display(),
                    bytes.len()
                )));
            };
            let size = shard.sizes[self.tensor];
            let take = bytes.len().min(size - self.written);
            let path = self.tmp.join(&shard.file_name);
            self.file
                .as_mut()
                .expect("shard open")
                .write_all(&bytes[..take])
                .map_err(|e| Error::io(&path, e))?;
            self.written += take;
            bytes = &bytes[take..];
            if self.written == size {
                self.step()?;
            }
        }
        Ok(())
    }

    /// Writes one whole tensor, which must be the next one planned.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.next_tensor() != Some(name) || self.written != 0 {
            return Err(Error::Invalid(format!(
                "tensor '{name}' written out of order (next is {:?})",
                self.next_tensor()
            )));
        }
        let size = self.shards[self.shard].sizes[self.tensor];
        if bytes.len() != size {
            return Err(Error::Invalid(format!(
                "tensor '{name}': {} bytes written, {size} planned",
                bytes.len()
            )));
        }
        if size == 0 {
            self.step()
        } else {
            self.write(bytes)
        }
    }

    /// Writes one whole tensor copied unchanged from the input. A view that
    /// came from a checkpoint file is copied file-to-file in the kernel
    /// (`copy_file_range` on Linux, through `std::io::copy`, which falls back
    /// to buffered reads and writes where the OS has no such call): its
    /// pages are never faulted into this process. Other views are written
    /// from their bytes.
    pub fn write_view(&mut self, name: &str, view: &TensorView) -> Result<()> {
        let Some((src, offset)) = view.source() else {
            return self.write_tensor(name, view.bytes());
        };
        let len = view.bytes().len();
        if self.next_tensor() != Some(name) || self.written != 0 {
            return Err(Error::Invalid(format!(
                "tensor '{name}' written out of order (next is {:?})",
                self.next_tensor()
            )));
        }
        let size = self.shards[self.shard].sizes[self.tensor];
        if len != size {
            return Err(Error::Invalid(format!(
                "tensor '{name}': {len} bytes written, {size} planned"
            )));
        }
        if size == 0 {
            return self.step();
        }
        let path = self.tmp.join(&self.shards[self.shard].file_name);
        let file = self.file.as_mut().expect("shard open");
        // The input's file position is used by this copy only (everything
        // else reads through the mapping), and one writer copies at a time.
        let mut from = src;
        from.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&path, e))?;
        let copied =
            std::io::copy(&mut from.take(len as u64), file).map_err(|e| Error::io(&path, e))?;
        if copied != len as u64 {
            return Err(Error::Invalid(format!(
                "tensor '{name}': its input file ended after {copied} of {len} bytes"
            )));
        }
        self.step()
    }

    /// Adds a non-weight file (for example config.json) to the output.
    pub fn add_file(&mut self, name: &str, contents: &[u8]) -> Result<()> {
        let path = self.tmp.join(name);
        std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))
    }

    /// Copies a side file of the input folder into the output under its
    /// own name (its bytes read from where the link policy resolved it).
    pub fn copy_file(&mut self, src: &SideFile) -> Result<()> {
        let to = self.tmp.join(&src.name);
        if src.is_dir {
            return std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e));
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::copy(&src.path, &to).map_err(|e| Error::io(&src.path, e))?;
        Ok(())
    }

    /// Completes the output: checks every planned byte was written, writes
    /// the index when there are several shards, and renames the folder into
    /// place. Returns the destination.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.skip_empty()?;
        if let Some(name) = self.next_tensor() {
            return Err(Error::Invalid(format!(
                "{}: tensor '{name}' was never written",
                self.dest.display()
            )));
        }
        if self.shards.len() > 1 {
            let mut weight_map = serde_json::Map::new();
            let mut total = 0usize;
            for s in &self.shards {
                total += s.sizes.iter().sum::<usize>();
                for n in &s.names {
                    weight_map.insert(n.clone(), s.file_name.clone().into());
                }
            }
            let index = serde_json::json!({
                "metadata": { "total_size": total },
                "weight_map": weight_map,
            });
            let text = serde_json::to_vec_pretty(&index).expect("index serialises");
            self.add_file(INDEX_FILE, &text)?;
        }
        self.file = None;
        if self.force {
            // Checked again: the destination may have changed meanwhile.
            replaceable_folder(&self.dest, &self.side_files)?;
        }
        let partial = self
            .partial
            .take()
            .expect("an unfinished writer has its partial");
        partial.commit(&self.dest, self.force)?;
        Ok(self.dest.clone())
    }

    /// Moves to the next planned tensor, closing finished shards and
    /// opening the next file.
    fn step(&mut self) -> Result<()> {
        self.tensor += 1;
        self.written = 0;
        self.settle()
    }

    /// Closes shards whose tensors are all written and opens the next file.
    fn settle(&mut self) -> Result<()> {
        while self.shard < self.shards.len() && self.tensor >= self.shards[self.shard].sizes.len() {
            self.close_shard()?;
            self.shard += 1;
            self.tensor = 0;
            self.written = 0;
            if self.shard < self.shards.len() {
                self.open_shard()?;
            }
        }
        Ok(())
    }

    /// Steps over zero-sized tensors at the current position.
    fn skip_empty(&mut self) -> Result<()> {
        while self.written == 0 && self.current_size() == Some(0) {
            self.step()?;
        }
        Ok(())
    }

    fn current_size(&self) -> Option<usize> {
        self.shards
            .get(self.shard)
            .and_then(|s| s.sizes.get(self.tensor))
            .copied()
    }

    fn open_shard(&mut self) -> Result<()> {
        let shard = &self.shards[self.shard];
        let path = self.tmp.join(&shard.file_name);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(&shard.header)
            .map_err(|e| Error::io(&path, e))?;
        self.file = Some(w);
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(w) = self.file.take() {
            let path = self.tmp.join(&self.shards[self.shard].file_name);
            let file = w
                .into_inner()
                .map_err(|e| Error::io(&path, e.into_error()))?;
            if self.sync {
                file.sync_all().map_err(|e| Error::io(&path, e))?;
                tracing::debug!("{}: flushed to disk (fsync)", path.display());
            }
        }
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        // Close the open shard before its partial folder is removed.
        self.file = None;
        self.partial = None;
    }
}
