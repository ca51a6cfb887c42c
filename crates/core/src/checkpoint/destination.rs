//! Where an output may go: never onto or inside an input, and over an
//! existing path only with `--force` and only when that path looks like
//! an earlier output of the same kind (a checkpoint folder, or a
//! safetensors file). Also the writer of small single-file checkpoints.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::header;
use super::partials::Partial;
use super::reader::INDEX_FILE;
use super::writer::{OutputTensor, WriterOptions};
use crate::{Error, Result};

pub(super) fn check_destination(dest: &Path, opts: &WriterOptions) -> Result<()> {
    let canon_dest = canonical_lenient(dest);
    for p in &opts.protected {
        let canon = canonical_lenient(p);
        if canon_dest == canon || canon.starts_with(&canon_dest) || canon_dest.starts_with(&canon) {
            return Err(Error::format(
                dest,
                format!(
                    "output would overwrite or sit inside the input {}",
                    p.display()
                ),
            ));
        }
    }
    if std::fs::symlink_metadata(dest).is_ok() {
        if !opts.force {
            return Err(Error::format(dest, "exists (use --force to replace it)"));
        }
        replaceable_folder(dest, &opts.side_files)?;
    }
    Ok(())
}

/// Whether `--force` may replace `dest` with a checkpoint folder: when it
/// is missing, or a folder of regular files holding a safetensors
/// checkpoint and otherwise only JSON files and the `side_files` names.
pub(super) fn replaceable_folder(dest: &Path, side_files: &[String]) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let refuse = |why: String| {
        Err(Error::format(
            dest,
            format!(
                "{why}; --force replaces only an earlier output (a checkpoint folder), \
                 so remove it yourself or choose another output"
            ),
        ))
    };
    if !meta.is_dir() {
        return refuse("is a file, not a checkpoint folder".into());
    }
    let listing = std::fs::read_dir(dest).map_err(|e| Error::io(dest, e))?;
    let mut weights = 0usize;
    let mut other = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(dest, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_file && (name.ends_with(".safetensors") || name == INDEX_FILE) {
            weights += 1;
        } else if !((is_file && name.ends_with(".json"))
            || (is_file || is_dir) && side_files.contains(&name))
        {
            other.push(name);
        }
    }
    if !other.is_empty() {
        other.sort();
        let more = if other.len() > 3 { " …" } else { "" };
        other.truncate(3);
        return refuse(format!(
            "holds files that are not part of a checkpoint ({}{more})",
            other.join(", ")
        ));
    }
    if weights == 0 {
        return refuse("holds no safetensors checkpoint".into());
    }
    Ok(())
}

/// Whether `--force` may replace `dest` with a single safetensors file:
/// when it is missing, or a safetensors file (by name and first bytes).
fn replaceable_file(dest: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    let head = |n: usize| -> Vec<u8> {
        let mut buf = vec![0u8; n];
        std::fs::File::open(dest)
            .and_then(|mut f| {
                use std::io::Read;
                f.read_exact(&mut buf)
            })
            .map(|()| buf)
            .unwrap_or_default()
    };
    let ext = |e: &str| meta.is_file() && dest.extension().is_some_and(|x| x == e);
    let looks_like_safetensors = ext("safetensors") && head(9).get(8) == Some(&b'{');
    let looks_like_gguf = ext("gguf") && head(4) == b"GGUF";
    if looks_like_safetensors || looks_like_gguf {
        Ok(())
    } else {
        Err(Error::format(
            dest,
            "is not a safetensors or GGUF file; --force replaces only an earlier output of \
             this kind, so remove it yourself or choose another output",
        ))
    }
}

/// Canonical form of a path that may not exist yet: its nearest existing
/// ancestor canonicalised, the rest appended.
fn canonical_lenient(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut tail = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// Writes a small single-file checkpoint held in memory at `path`, through
/// a temporary name renamed into place (removed on any error). `path` must
/// not be, or sit inside, any of `protected` (the run's inputs); `force`
/// replaces only an earlier safetensors file.
pub fn write_file(
    path: &Path,
    tensors: &[(String, crate::TensorBuf)],
    force: bool,
    protected: &[PathBuf],
) -> Result<()> {
    write_file_with(path, tensors, &BTreeMap::new(), force, protected)
}

/// [`write_file`] with a `__metadata__` map.
pub fn write_file_with(
    path: &Path,
    tensors: &[(String, crate::TensorBuf)],
    metadata: &BTreeMap<String, String>,
    force: bool,
    protected: &[PathBuf],
) -> Result<()> {
    let planned: Vec<OutputTensor> = tensors
        .iter()
        .map(|(name, t)| OutputTensor {
            name: name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        })
        .collect();
    let mut w = FileWriter::create(path, &planned, metadata, force, protected)?;
    for (name, t) in tensors {
        w.write_tensor(name, &t.data)?;
    }
    w.finish()
}

/// A single-file checkpoint written tensor by tensor in a planned order
/// (the header first, from the plan), under a temporary name renamed into
/// place by [`FileWriter::finish`]; dropped unfinished, it leaves nothing.
pub struct FileWriter {
    path: PathBuf,
    force: bool,
    partial: Option<Partial>,
    file: Option<std::io::BufWriter<File>>,
    planned: Vec<(String, usize)>,
    next: usize,
}

impl FileWriter {
    /// Checks `path` like [`write_file`] and writes the header of `tensors`.
    pub fn create(
        path: &Path,
        tensors: &[OutputTensor],
        metadata: &BTreeMap<String, String>,
        force: bool,
        protected: &[PathBuf],
    ) -> Result<Self> {
        check_single_file(path, force, protected)?;
        let mut entries = Vec::with_capacity(tensors.len());
        let mut planned = Vec::with_capacity(tensors.len());
        let mut offset = 0;
        for t in tensors {
            let n = t.nbytes()?;
            entries.push((t.name.clone(), t.dtype, t.shape.clone(), offset..offset + n));
            planned.push((t.name.clone(), n));
            offset += n;
        }
        let partial = Partial::file(path)?;
        let file = File::create(&partial.path).map_err(|e| Error::io(path, e))?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(&header::encode(&entries, metadata))
            .map_err(|e| Error::io(path, e))?;
        Ok(FileWriter {
            path: path.to_path_buf(),
            force,
            partial: Some(partial),
            file: Some(file),
            planned,
            next: 0,
        })
    }

    /// Writes the next planned tensor.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.planned.get(self.next) {
            Some((n, size)) if n == name && *size == bytes.len() => {}
            other => {
                return Err(Error::Invalid(format!(
                    "{}: tensor '{name}' ({} bytes) written where {other:?} was planned",
                    self.path.display(),
                    bytes.len()
                )))
            }
        }
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks every planned tensor was written and renames the file into
    /// place.
    pub fn finish(mut self) -> Result<()> {
        if let Some((name, _)) = self.planned.get(self.next) {
            return Err(Error::Invalid(format!(
                "{}: tensor '{name}' was never written",
                self.path.display()
            )));
        }
        let file = self.file.take().expect("open until finished");
        file.into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        let partial = self.partial.take().expect("unfinished");
        partial.commit(&self.path, self.force)
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Close the file before its partial is removed.
        self.file = None;
        self.partial = None;
    }
}

/// The checks of a single-file output before any work: not an input,
/// not inside one, and replaceable when it exists (with `force`).
pub fn check_single_file(path: &Path, force: bool, protected: &[PathBuf]) -> Result<()> {
    let canon_dest = canonical_lenient(path);
    for p in protected {
        let canon = canonical_lenient(p);
        if canon_dest == canon || canon_dest.starts_with(&canon) {
            return Err(Error::format(
                path,
                format!(
                    "output would overwrite or sit inside the input {}",
                    p.display()
                ),
            ));
        }
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if !force {
            return Err(Error::format(path, "exists (use --force to replace it)"));
        }
        replaceable_file(path)?;
    }
    Ok(())
}
