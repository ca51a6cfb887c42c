//! A GGUF file written in one pass: the header from the plan, then each
//! tensor's data as it is computed, under a temporary name renamed into
//! place by [`GgufWriter::finish`]; dropped unfinished, it leaves nothing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{encode_header, PlannedTensor, Value};
use crate::checkpoint::check_single_file;
use crate::checkpoint::partials::Partial;
use crate::{Error, Result};

pub struct GgufWriter {
    path: PathBuf,
    force: bool,
    partial: Option<Partial>,
    file: Option<std::io::BufWriter<File>>,
    planned: Vec<PlannedTensor>,
    offsets: Vec<usize>,
    /// Data bytes written so far.
    at: usize,
    next: usize,
}

impl GgufWriter {
    /// Checks `path` (not an input, replaceable only with `force` and only
    /// when it is an earlier GGUF or safetensors output) and writes the
    /// header of `tensors`.
    pub fn create(
        path: &Path,
        metadata: &[(String, Value)],
        tensors: Vec<PlannedTensor>,
        force: bool,
        protected: &[PathBuf],
    ) -> Result<Self> {
        check_single_file(path, force, protected)?;
        let (head, offsets) = encode_header(metadata, &tensors)?;
        let partial = Partial::file(path)?;
        let file = File::create(&partial.path).map_err(|e| Error::io(path, e))?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(&head).map_err(|e| Error::io(path, e))?;
        Ok(GgufWriter {
            path: path.to_path_buf(),
            force,
            partial: Some(partial),
            file: Some(file),
            planned: tensors,
            offsets,
            at: 0,
            next: 0,
        })
    }

    /// Writes the next planned tensor's data.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.planned.get(self.next) {
            Some(t) if t.name == name && t.nbytes() == bytes.len() => {}
            other => {
                return Err(Error::Invalid(format!(
                    "{}: tensor '{name}' ({} bytes) written where {:?} was planned",
                    self.path.display(),
                    bytes.len(),
                    other.map(|t| (&t.name, t.nbytes()))
                )))
            }
        }
        let file = self.file.as_mut().expect("open until finished");
        let pad = self.offsets[self.next] - self.at;
        file.write_all(&vec![0u8; pad])
            .and_then(|()| file.write_all(bytes))
            .map_err(|e| Error::io(&self.path, e))?;
        self.at += pad + bytes.len();
        self.next += 1;
        Ok(())
    }

    /// Checks every planned tensor was written and renames the file into
    /// place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(t) = self.planned.get(self.next) {
            return Err(Error::Invalid(format!(
                "{}: tensor '{}' was never written",
                self.path.display(),
                t.name
            )));
        }
        let file = self.file.take().expect("open until finished");
        file.into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        let partial = self.partial.take().expect("unfinished");
        partial.commit(&self.path, self.force)
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        // Close the file before its partial is removed.
        self.file = None;
        self.partial = None;
    }
}
