//! Which files of a model folder shears reads, and how much of each.
//!
//! A model folder is untrusted input that people upload once compressed, so
//! a side file that is a link must not smuggle another file's contents (a
//! token file, `/proc/self/environ`) into the output. An entry is read when
//! it is a regular file of the folder, or a link that resolves to a regular
//! file inside the folder or inside the Hugging Face cache's `blobs/` (the
//! cache's snapshot folders hold links to `../../blobs/<hash>`). Anything
//! else is skipped with one warning (side files) or refused (shards, the
//! index), and small text files are read with a size limit.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Largest `config.json` (or other small JSON side file) shears reads.
pub const CONFIG_LIMIT: u64 = 16 << 20;
/// Largest `model.safetensors.index.json` shears reads (a 400-shard index
/// of a very large model is a few MiB).
pub const INDEX_LIMIT: u64 = 64 << 20;

/// Reads a whole regular file of at most `limit` bytes. Devices, pipes and
/// folders are refused, and a larger file is refused naming the limit,
/// instead of growing without bound (`--recipe /dev/zero`).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    let mut buf = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(Error::format(
            path,
            format!(
                "larger than {} MiB, the most shears reads for this kind of file",
                limit >> 20
            ),
        ));
    }
    Ok(buf)
}

/// Where the folder entry at `entry` may be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A regular file, at this (resolved) path.
    File(PathBuf),
    /// A folder, at this (resolved) path.
    Folder(PathBuf),
    /// Not to be read, and why (for the one warning or error line).
    Refused(String),
}

/// The places links of a model folder may point into: the folder itself
/// and, for a Hugging Face cache snapshot, the cache's `blobs/`.
#[derive(Debug, Clone)]
pub struct LinkPolicy {
    roots: Vec<PathBuf>,
}

impl LinkPolicy {
    /// The policy for the model folder `folder`.
    pub fn for_folder(folder: &Path) -> Result<Self> {
        let canon = folder.canonicalize().map_err(|e| Error::io(folder, e))?;
        let mut roots = vec![canon.clone()];
        // <cache>/models--org--name/snapshots/<revision>/ → <cache>/models--org--name/blobs/
        if let Some(snapshots) = canon.parent() {
            if snapshots.file_name().is_some_and(|n| n == "snapshots") {
                if let Some(blobs) = snapshots.parent().map(|r| r.join("blobs")) {
                    if let Ok(b) = blobs.canonicalize() {
                        roots.push(b);
                    }
                }
            }
        }
        Ok(LinkPolicy { roots })
    }

    /// How the entry `entry` of the folder may be read.
    pub fn access(&self, entry: &Path) -> Access {
        let meta = match std::fs::symlink_metadata(entry) {
            Ok(m) => m,
            Err(e) => return Access::Refused(format!("cannot be read: {e}")),
        };
        if meta.is_dir() {
            return Access::Folder(entry.to_path_buf());
        }
        if meta.is_file() {
            return Access::File(entry.to_path_buf());
        }
        if !meta.file_type().is_symlink() {
            return Access::Refused("not a regular file".into());
        }
        let target = match entry.canonicalize() {
            Ok(t) => t,
            Err(e) => return Access::Refused(format!("a link that does not resolve ({e})")),
        };
        if !self.roots.iter().any(|r| target.starts_with(r)) {
            return Access::Refused(format!(
                "a link to {}, outside the model folder",
                target.display()
            ));
        }
        match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => Access::File(target),
            Ok(m) if m.is_dir() => Access::Folder(target),
            _ => Access::Refused(format!(
                "a link to {}, not a regular file",
                target.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_refuse_devices_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        std::fs::write(&p, vec![b' '; 2048]).unwrap();
        assert_eq!(read_bounded(&p, 2048).unwrap().len(), 2048);
        let err = read_bounded(&p, 2047).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let err = read_bounded(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn links_resolve_only_inside_the_folder_or_the_cache_blobs() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--org--m");
        let snap = repo.join("snapshots").join("abc");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs").join("h1"), b"{}").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"token").unwrap();
        std::fs::write(snap.join("plain.json"), b"{}").unwrap();
        symlink("../../blobs/h1", snap.join("config.json")).unwrap();
        symlink("plain.json", snap.join("alias.json")).unwrap();
        symlink("../../../secret.txt", snap.join("tokenizer.json")).unwrap();
        symlink("/proc/self/environ", snap.join("env.txt")).unwrap();
        symlink("missing", snap.join("dangling.txt")).unwrap();
        let policy = LinkPolicy::for_folder(&snap).unwrap();
        assert!(matches!(
            policy.access(&snap.join("plain.json")),
            Access::File(_)
        ));
        assert!(matches!(
            policy.access(&snap.join("config.json")),
            Access::File(_)
        ));
        assert!(matches!(
            policy.access(&snap.join("alias.json")),
            Access::File(_)
        ));
        for bad in ["tokenizer.json", "env.txt", "dangling.txt"] {
            assert!(
                matches!(policy.access(&snap.join(bad)), Access::Refused(_)),
                "{bad} was allowed"
            );
        }
    }
}

/// A file (or subfolder) of the model folder that is not a weight
/// (config.json, tokenizer files, a sentence-transformers `1_Pooling/`),
/// copied beside any output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideFile {
    /// Its path relative to the model folder (and to the output), `/`
    /// separated: `tokenizer.json`, `1_Pooling/config.json`.
    pub name: String,
    /// Where its bytes are read from: the file itself, or the target of a
    /// link that resolves inside the folder (or the Hugging Face cache).
    pub path: PathBuf,
    /// A subfolder (created in the output; its files are entries of their
    /// own, listed after it).
    pub is_dir: bool,
}

/// Deepest subfolder and most side entries carried over.
const SIDE_DEPTH: usize = 8;
const SIDE_ENTRIES: usize = 10_000;

/// The files and subfolders under the subfolder `dir` (named `rel`), each
/// through the link policy; a folder reached twice (a link loop) is
/// skipped.
pub(crate) fn side_folder(
    policy: &LinkPolicy,
    dir: &Path,
    rel: &str,
    out: &mut Vec<SideFile>,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let depth = rel.matches('/').count() + 1;
    let canon = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if depth > SIDE_DEPTH || out.len() >= SIDE_ENTRIES || !seen.insert(canon) {
        tracing::warn!(
            "skipping {} (too deep, too many files, or a link loop)",
            dir.display()
        );
        return Ok(());
    }
    out.push(SideFile {
        name: rel.to_string(),
        path: dir.to_path_buf(),
        is_dir: true,
    });
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
        match policy.access(&entry.path()) {
            Access::File(path) => out.push(SideFile {
                name,
                path,
                is_dir: false,
            }),
            Access::Folder(path) => side_folder(policy, &path, &name, out, seen)?,
            Access::Refused(why) => tracing::warn!("skipping {}: {why}", entry.path().display()),
        }
    }
    Ok(())
}
