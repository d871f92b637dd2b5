//! The I/O layer under the page store: a file addressed by byte offset.
//!
//! Everything the page store does to its file goes through [`PageIo`], so tests can put
//! a simulated disk under it (`sim_io.rs`) that loses unsynced writes, tears pages and
//! fails on command. The real one is [`FileIo`]: `pread`/`pwrite` on one file,
//! `fdatasync` for durability, and growth preallocated in chunks (`posix_fallocate`) so
//! a full disk shows up as ENOSPC when the file grows, not later as a failed write into
//! a hole of a sparse file.
//!
//! Defragmentation also creates, renames and removes files in the store's directory: it
//! does so through [`PageDir`], real in [`FileDir`], simulated in `sim_io.rs` (entries
//! that are lost on power failure until the directory is synced).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file of bytes as the page store sees it. Implementations are shared between the
/// writer and readers of views, so every method takes `&self`.
pub(crate) trait PageIo: Send + Sync {
    /// Fills `buf` from `offset`; a read past the end is `UnexpectedEof`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset` (not durable until [`PageIo::sync`]).
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Makes the file at least `len` bytes long with the space allocated (durable after
    /// the next `sync`).
    fn grow(&self, len: u64) -> io::Result<()>;
}

/// A real file.
pub(crate) struct FileIo {
    file: File,
}

impl FileIo {
    /// Opens (creating when `create`) the file at `path` and takes an exclusive advisory
    /// lock on it, so two stores never write one file. The lock goes with the handle.
    pub(crate) fn open(path: &Path, create: bool) -> io::Result<FileIo> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("could not acquire lock on {}: {e}", path.display())));
        }
        Ok(FileIo { file })
    }
}

impl PageIo for FileIo {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn grow(&self, len: u64) -> io::Result<()> {
        let cur = self.len()?;
        if len <= cur {
            return Ok(());
        }
        let (off, add) = (cur as libc::off_t, (len - cur) as libc::off_t);
        // SAFETY: posix_fallocate on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), off, add) };
        match rc {
            0 => Ok(()),
            // file systems without fallocate: extend (sparse) instead
            libc::EOPNOTSUPP | libc::EINVAL => self.file.set_len(len),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The store's directory as defragmentation uses it (file names are relative to it).
pub(crate) trait PageDir: Send + Sync {
    /// Creates the file `name` (or opens it, kept as it is, if it exists) and locks it.
    fn create(&self, name: &str) -> io::Result<Arc<dyn PageIo>>;
    /// Renames `from` over `to` atomically (durable after [`PageDir::sync`]).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name` (durable after [`PageDir::sync`]).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes every change to the directory's entries durable (fsync of the directory).
    fn sync(&self) -> io::Result<()>;
}

/// A real directory.
pub(crate) struct FileDir(pub(crate) PathBuf);

impl PageDir for FileDir {
    fn create(&self, name: &str) -> io::Result<Arc<dyn PageIo>> {
        Ok(Arc::new(FileIo::open(&self.0.join(name), true)?))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.0.join(from), self.0.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.0.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.0)?.sync_all()
    }
}
