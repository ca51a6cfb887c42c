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
    /// Bytes of the tensor being written, between `start` and `end`.
    open: Option<usize>,
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
            open: None,
        })
    }

    /// Writes the next planned tensor's data.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.start(name)?;
        self.write(bytes)?;
        self.end()
    }

    /// Starts the next planned tensor, which must be `name`; its data
    /// follows in [`GgufWriter::write`]s, closed by [`GgufWriter::end`].
    pub fn start(&mut self, name: &str) -> Result<()> {
        match self.planned.get(self.next) {
            Some(t) if t.name == name && self.open.is_none() => {}
            other => {
                return Err(Error::Invalid(format!(
                    "{}: tensor '{name}' started where {:?} was planned",
                    self.path.display(),
                    other.map(|t| &t.name)
                )))
            }
        }
        let pad = self.offsets[self.next] - self.at;
        self.put(&vec![0u8; pad])?;
        self.open = Some(0);
        Ok(())
    }

    /// Appends to the tensor started last.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(done) = self.open else {
            return Err(Error::Invalid(format!(
                "{}: data written outside a tensor",
                self.path.display()
            )));
        };
        let t = &self.planned[self.next];
        if done + bytes.len() > t.nbytes() {
            return Err(Error::Invalid(format!(
                "{}: tensor '{}' given more than its {} bytes",
                self.path.display(),
                t.name,
                t.nbytes()
            )));
        }
        self.put(bytes)?;
        self.open = Some(done + bytes.len());
        Ok(())
    }

    /// Closes the tensor started last, checking it got all its bytes.
    pub fn end(&mut self) -> Result<()> {
        let t = &self.planned[self.next];
        if self.open != Some(t.nbytes()) {
            return Err(Error::Invalid(format!(
                "{}: tensor '{}' got {:?} of its {} bytes",
                self.path.display(),
                t.name,
                self.open,
                t.nbytes()
            )));
        }
        self.open = None;
        self.next += 1;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.at += bytes.len();
        Ok(())
    }

    /// Checks every planned tensor was written and renames the file into
    /// place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(t) = self.planned.get(self.next) {
            return Err(Error::Invalid(format!(
                "{}: tensor '{}' was never written (or not ended)",
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
