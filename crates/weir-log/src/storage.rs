//! The disk behind the log: a flat directory of files, as a trait with a real implementation
//! (`FileStorage`, here) and a simulated twin (`SimStorage`, in `sim.rs`).
//!
//! The trait is deliberately small and POSIX-shaped so that its durability semantics are the
//! ones the log is written against:
//! - `write_at` changes what later reads see, but is durable only after `sync_data` on the same
//!   file returns `Ok` (a failed `sync_data` may have lost the writes for ever).
//! - `create`, `remove` and `rename` change the directory at once, but are durable only after
//!   `sync_dir` returns `Ok`. `rename` atomically replaces the target.
//! - A file handle stays valid, and keeps naming the same file, across `rename`.
//!
//! Invariant for `FileStorage`: one process at a time owns a directory (an exclusive `flock`
//! on `LOCK_FILE_NAME`, held for the lifetime of the storage).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LogError;

/// A flat directory of files.
pub trait Storage: Send + Sync + 'static {
    type File: StorageFile;

    /// Names of all files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates an empty file, replacing any file of that name.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes all earlier `create`, `remove` and `rename` calls durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// One open file.
pub trait StorageFile: Send + Sync + 'static {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every earlier `write_at` on this file durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// A hint: start writing `len` bytes from `offset` to the device now, without waiting, so a
    /// later `sync_data` has less left to do. Changes nothing about durability (only
    /// `sync_data` makes data durable; an I/O error surfaces there). Default: nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Name of the lock file `FileStorage` holds in its directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// A real directory on disk: `write_at` is pwrite, `sync_data` is fdatasync, `sync_dir` is an
/// fsync of the directory. Cloning shares the directory handle and the lock.
#[derive(Clone, Debug)]
pub struct FileStorage {
    inner: Arc<FileStorageInner>,
}

#[derive(Debug)]
struct FileStorageInner {
    dir: PathBuf,
    dir_handle: File,
    /// Held only for its `flock`; released when the last clone is dropped.
    _lock: File,
}

impl FileStorage {
    /// Opens (creating if needed) `dir` and takes its exclusive lock.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStorage, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let shown = dir.display().to_string();
        std::fs::create_dir_all(&dir).map_err(|source| LogError::from_io("creating directory", &shown, source))?;
        let dir_handle = File::open(&dir).map_err(|source| LogError::from_io("opening directory", &shown, source))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| LogError::from_io("opening lock file", &shown, source))?;
        lock_exclusive(&lock).map_err(|source| {
            if source.kind() == io::ErrorKind::WouldBlock {
                LogError::Locked { dir: shown.clone() }
            } else {
                LogError::from_io("locking directory", &shown, source)
            }
        })?;
        Ok(FileStorage { inner: Arc::new(FileStorageInner { dir, dir_handle, _lock: lock }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    fn path_of(&self, name: &str) -> io::Result<PathBuf> {
        // The log only ever uses its own flat names; refuse anything that could escape.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad file name {name:?}")));
        }
        Ok(self.inner.dir.join(name))
    }
}

#[allow(unsafe_code)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own and keep open; no memory is passed.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Storage for FileStorage {
    type File = FileStorageFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.inner.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(name) => tracing::warn!(?name, "ignoring non-UTF-8 file name in log directory"),
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<FileStorageFile> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(self.path_of(name)?)?;
        Ok(FileStorageFile { file })
    }

    fn open(&self, name: &str) -> io::Result<FileStorageFile> {
        let file = OpenOptions::new().read(true).write(true).open(self.path_of(name)?)?;
        Ok(FileStorageFile { file })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path_of(name)?)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path_of(from)?, self.path_of(to)?)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.dir_handle.sync_all()
    }
}

/// An open file of a `FileStorage`.
#[derive(Debug)]
pub struct FileStorageFile {
    file: File,
}

impl StorageFile for FileStorageFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[allow(unsafe_code)]
    fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
            return;
        };
        // SAFETY: a plain system call on a file descriptor this struct owns; no memory is passed.
        let result = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if result != 0 {
            // Only a hint: a real write error is reported by the next fdatasync.
            tracing::debug!(error = %io::Error::last_os_error(), "sync_file_range hint failed");
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_storage_basic_operations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FileStorage::open(dir.path()).expect("open");
        let file = storage.create("a").expect("create");
        file.write_at(10, b"hello").expect("write");
        file.sync_data().expect("sync");
        assert_eq!(file.len().expect("len"), 15);
        let mut buf = [0u8; 5];
        file.read_at(10, &mut buf).expect("read");
        assert_eq!(&buf, b"hello");
        assert!(file.read_at(12, &mut buf).is_err(), "read past end must fail");
        storage.rename("a", "b").expect("rename");
        storage.sync_dir().expect("sync dir");
        let mut names = storage.list().expect("list");
        names.sort();
        assert_eq!(names, vec!["LOCK".to_string(), "b".to_string()]);
        // The handle follows the file across the rename.
        file.read_at(10, &mut buf).expect("read after rename");
        storage.remove("b").expect("remove");
        assert!(storage.open("b").is_err());
        assert!(storage.create("../escape").is_err());
    }

    #[test]
    fn file_storage_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = FileStorage::open(dir.path()).expect("open");
        match FileStorage::open(dir.path()) {
            Err(LogError::Locked { .. }) => {}
            other => panic!("second open must fail with Locked, got {other:?}"),
        }
    }
}
