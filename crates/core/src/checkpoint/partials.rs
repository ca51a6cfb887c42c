//! Temporary outputs: where a run writes until its output is complete, and
//! how nothing of it outlives the run.
//!
//! A partial output is `.<name>.shears-partial-<random>` beside the
//! destination. The random suffix (not the PID) keeps two writers apart
//! even when they share a PID (two containers on one volume, two hosts on
//! NFS), and it is created with `create_dir`, which never reuses or removes
//! anything that exists. A partial folder holds a lock file, locked for the
//! life of its writer, so a later run can tell an abandoned folder (its
//! writer was killed: the lock is free) from a live one, and removes only
//! the abandoned ones. Every live partial is also registered here, so that
//! a signal handler ([`remove_all`]) can delete them before the process
//! exits on SIGINT, SIGTERM or SIGHUP.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::{Error, Result};

/// Name of the lock file inside a partial output folder.
pub const LOCK_FILE: &str = ".shears-lock";

/// A partial folder without a lock file (made by an older shears, or cut
/// off between its creation and its lock) counts as abandoned after this.
const UNLOCKED_GRACE: Duration = Duration::from_secs(3600);

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The marker every partial name of `dest` starts with.
fn prefix_of(dest: &Path) -> String {
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    format!(".{base}.shears-partial-")
}

/// The folder `dest` will appear in (created if missing).
pub fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A partial output: registered for signal cleanup while it lives.
#[derive(Debug)]
pub struct Partial {
    /// The temporary folder or file.
    pub path: PathBuf,
    /// The held lock (folders only).
    lock: Option<File>,
}

impl Partial {
    /// Creates a fresh, locked partial folder for `dest`, after removing
    /// the abandoned partial folders of earlier runs for the same `dest`.
    pub fn folder(dest: &Path) -> Result<Partial> {
        let parent = parent_of(dest);
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        remove_abandoned(dest);
        loop {
            let path = parent.join(format!("{}{:016x}", prefix_of(dest), rand::random::<u64>()));
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
            live().push(path.clone());
            let mut partial = Partial { path, lock: None };
            let lock_path = partial.path.join(LOCK_FILE);
            let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
            lock.try_lock().map_err(|e| {
                Error::io(
                    &lock_path,
                    std::io::Error::other(format!("cannot lock: {e}")),
                )
            })?;
            partial.lock = Some(lock);
            return Ok(partial);
        }
    }

    /// A fresh temporary file name for the single file `dest`, after
    /// removing the abandoned partial files of earlier runs for it.
    pub fn file(dest: &Path) -> Result<Partial> {
        let parent = parent_of(dest);
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        remove_abandoned(dest);
        let path = parent.join(format!("{}{:016x}", prefix_of(dest), rand::random::<u64>()));
        live().push(path.clone());
        Ok(Partial { path, lock: None })
    }

    /// Moves the partial into place at `dest` (replacing what `replace`
    /// says may be replaced), or fails leaving the partial to [`Drop`].
    /// Holds the registry while it renames, so a signal arriving now
    /// waits until the output is either complete or not there.
    pub fn commit(mut self, dest: &Path, replace: bool) -> Result<()> {
        let mut registry = live();
        if self.lock.is_some() {
            let lock_path = self.path.join(LOCK_FILE);
            std::fs::remove_file(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        }
        let raced = |e: std::io::Error| {
            Error::format(
                dest,
                format!(
                    "appeared or changed while this run wrote it (another run with the same \
                     output?); nothing of this run was kept ({e})"
                ),
            )
        };
        let exists = std::fs::symlink_metadata(dest).is_ok();
        if exists && !replace {
            return Err(Error::format(dest, "exists (use --force to replace it)"));
        }
        if exists {
            // Aside first, so the destination is never missing a complete output
            // for longer than one rename; `old` is removed afterwards.
            let old = PathBuf::from(format!("{}.old", self.path.display()));
            registry.push(old.clone());
            std::fs::rename(dest, &old).map_err(raced)?;
            std::fs::rename(&self.path, dest).map_err(raced)?;
            let removed = if old.is_dir() {
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::remove_file(&old)
            };
            registry.retain(|p| p != &old);
            removed.map_err(|e| Error::io(&old, e))?;
        } else if self.lock.is_some() {
            std::fs::rename(&self.path, dest).map_err(raced)?;
        } else {
            // A single file: hard-link into place, so an output that
            // appeared meanwhile is never silently overwritten.
            match std::fs::hard_link(&self.path, dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(raced(e)),
                // A file system without hard links: a plain rename.
                Err(_) => std::fs::rename(&self.path, dest).map_err(raced)?,
            }
        }
        registry.retain(|p| p != &self.path);
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let mut registry = live();
        remove_path(&self.path);
        registry.retain(|p| p != &self.path);
    }
}

fn remove_path(p: &Path) {
    // A writer thread may still be creating files inside: try a few times.
    for _ in 0..8 {
        let gone = match std::fs::symlink_metadata(p) {
            Err(_) => true,
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
            Ok(_) => std::fs::remove_file(p).is_ok(),
        };
        if gone {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes every partial output of this process. For signal handlers:
/// call it, then exit. It takes the registry and does not give it back,
/// so no output is committed after it.
pub fn remove_all() {
    let registry = live();
    for p in registry.iter() {
        remove_path(p);
    }
    std::mem::forget(registry);
}

/// Removes the partial outputs of earlier runs for `dest` whose writer is
/// gone: folders whose lock is free (or, without a lock file, older than
/// an hour), and single files older than an hour (a single-file writer
/// takes seconds). A live writer's partial is left alone.
pub fn remove_abandoned(dest: &Path) {
    let parent = parent_of(dest);
    let prefix = prefix_of(dest);
    let Ok(listing) = std::fs::read_dir(&parent) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = || {
            meta.modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > UNLOCKED_GRACE)
        };
        if !meta.is_dir() {
            if meta.is_file() && old() {
                tracing::info!("removing {} (left by an interrupted run)", path.display());
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let abandoned = match File::open(path.join(LOCK_FILE)) {
            Ok(f) => match f.try_lock() {
                Ok(()) => true,
                Err(TryLockError::WouldBlock) => false,
                Err(TryLockError::Error(_)) => false,
            },
            Err(_) => old(),
        };
        if abandoned {
            tracing::info!("removing {} (left by an interrupted run)", path.display());
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!("could not remove {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_partials_for_one_destination_never_share_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let a = Partial::folder(&dest).unwrap();
        let b = Partial::folder(&dest).unwrap();
        assert_ne!(a.path, b.path);
        // b's creation must not have taken a's folder as abandoned.
        assert!(a.path.join(LOCK_FILE).exists());
        drop(a);
        drop(b);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn abandoned_folders_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        // Abandoned: lock file present but nobody holds it.
        let dead = dir.path().join(".out.shears-partial-00000000deadbeef");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK_FILE), b"").unwrap();
        std::fs::write(dead.join("model.safetensors"), b"half").unwrap();
        // Another output's partial: never touched.
        let other = dir.path().join(".other.shears-partial-00000000deadbeef");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(LOCK_FILE), b"").unwrap();
        // A fresh folder without a lock (a writer between mkdir and lock).
        let young = dir.path().join(".out.shears-partial-0000000000000001");
        std::fs::create_dir(&young).unwrap();
        let live = Partial::folder(&dest).unwrap();
        assert!(!dead.exists(), "abandoned partial kept");
        assert!(other.exists() && young.exists());
        remove_abandoned(&dest);
        assert!(live.path.exists(), "a live writer's folder was removed");
    }

    #[test]
    fn an_uncommitted_single_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model.safetensors");
        let p = Partial::file(&dest).unwrap();
        // A write that fails half-way (ENOSPC) leaves a partial file; the
        // writer's error path drops the Partial.
        std::fs::write(&p.path, b"half").unwrap();
        drop(p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_moves_into_place_and_refuses_an_existing_output() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let p = Partial::folder(&dest).unwrap();
        std::fs::write(p.path.join("model.safetensors"), b"x").unwrap();
        p.commit(&dest, false).unwrap();
        assert!(dest.join("model.safetensors").exists());
        assert!(!dest.join(LOCK_FILE).exists());
        let p = Partial::folder(&dest).unwrap();
        let tmp = p.path.clone();
        assert!(p.commit(&dest, false).is_err());
        assert!(!tmp.exists());
    }
}
