//! cairn's page store: a [`Backend`] on one file of fixed-size pages, with a copy-on-write
//! B+tree per bucket and a segregated freelist.
//!
//! # Layers (one file each)
//! * `io.rs`: the file (`pread`/`pwrite`/`fdatasync`, preallocated growth) behind the
//!   `PageIo` trait, and the directory defragmentation creates, renames and syncs files
//!   in behind `PageDir`; `sim_io.rs` (tests) is a disk that loses unsynced writes, tears
//!   pages and fails on command, and a directory of such disks that loses entries not
//!   yet synced (the crash test runs it through defragmentation's copy and swap);
//! * `page.rs` / `meta.rs`: the on-disk layouts of nodes and of the two meta pages, byte
//!   by byte, with decoders that never panic;
//! * `freelist/`: free spans (a linear reference and the segregated one) and pending
//!   pages held back for open readers;
//! * `btree.rs`: the copy-on-write tree, its reads, writes and commit-time spill;
//!   `cache.rs`: decoded committed nodes, shared by the writer and the views;
//!   `walk.rs`: whole-bucket walks that bypass that cache (the start-up rebuild's scan,
//!   a backup's passes over a view);
//! * `db.rs`: an open file: the commit protocol, readers, sizes;
//! * this file: the [`Backend`] over it: sticky failures, views, defragmentation.
//!
//! # Write, sync, read
//! `write` applies a batch to the open transaction's memory nodes under the write side of
//! `state`: readers see it at once, and a batch is atomic on disk because only whole
//! commits reach the meta page. `sync` commits (see `db.rs`: nodes, meta, one fdatasync),
//! holding `state` only while it spills and writes the nodes, not across the fdatasync,
//! so reads and writes go on meanwhile. A range deletion (`BatchOp::DeleteRange`) copies
//! only the paths to its two ends and drops the subtrees between them unread (their
//! branches are read to free their pages, their leaves are not; `btree.rs`), so the
//! compactor's deletion of a million revisions is a few milliseconds under `state`, not
//! a million single deletes. A failed write or commit poisons the
//! store: every later call fails with [`Error::Stopped`] until it is reopened, which
//! finds the last commit.
//!
//! # Views
//! [`Backend::read_view`] commits what was written, then pins that commit: its pages are
//! not reused (pending in the freelist) until the view is dropped, so the view reads the
//! file without any lock while writes and commits go on. [`Backend::synced_view`] pins
//! the last finished commit without committing (no fdatasync).
//!
//! # Defragmentation
//! 1. under `commit` and `state` (write, held across the commit's fdatasync this once):
//!    commit, pin that commit, start logging written batches;
//! 2. without locks: copy the pinned state, in key order, into a fresh file
//!    (`pages.db.defrag`): leaves come out full and in order, a leaf of large values
//!    spanning two pages where one would stay under 7/8 full (`DEFRAG_LEAF_PAGES`);
//! 3. under `commit` and `state` (write), the only pause: replay the logged batches onto
//!    the copy, commit it, rename it over `pages.db`, fsync the directory, and swap it in.
//!    Views of the old file keep reading it (unlinked, freed when the last one drops).
//!
//! A failure in steps 2–3 before the rename leaves the store as it was; a failure of the
//! directory fsync after it poisons the store (which file a crash leaves is unknown, and
//! both are consistent).
//!
//! # Locks (in the order they may be taken)
//! 1. `defrag`: held for a whole defragmentation, so only one runs.
//! 2. `commit`: one commit at a time, from preparing it to finishing it; the fdatasync
//!    runs under it but not under `state`.
//! 3. `state`: the open file and its write transaction (module docs above); the readers
//!    table (`db.rs`) and the node cache (`cache.rs`) are leaves under it.
//!
//! # Freelist at open: measured, and the choice
//! Open rebuilds the freelist by reading every branch node (see `freelist/mod.rs`) rather
//! than reading a persisted one. Measured with `open_cost_at_a_large_file` (ignored;
//! `cargo test --release -p cairn-storage --lib open_cost -- --ignored --nocapture`):
//! 2^20 values of 1 KiB under 8-byte keys (a 1.46 GB file, 1.44 GB in use) open in
//! 147 ms with the file in the page cache (2-core VM, shared), against 15.6 s to write
//! it. Not persisting it means commits write no freelist pages and no freelist can be
//! stale or torn; at that open cost the trade is clear. (Cold-cache opens read the same
//! ~2k branch pages: 350k leaves, ~168 children per branch; not measured here.)

mod btree;
mod cache;
mod db;
pub mod freelist;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod io;
mod meta;
mod page;
#[cfg(test)]
mod sim_io;
#[cfg(test)]
mod range_tests;
#[cfg(test)]
mod tests;
mod walk;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use self::db::{Db, Growth, PinnedState};
use self::page::Leaves;
use self::io::{FileDir, FileIo, PageDir, PageIo};
use crate::backend::{write_snapshot, Backend, Bucket, LenFn, ReadView, ScanFn, WriteBatch};
use crate::error::{Error, Result};

/// The page file in a page store's directory.
pub const FILE_NAME: &str = "pages.db";
/// A new page file being initialised (renamed to [`FILE_NAME`] when complete).
const NEW_FILE_NAME: &str = "pages.db.new";
/// The copy a defragmentation writes (renamed over [`FILE_NAME`] at the swap).
const DEFRAG_FILE_NAME: &str = "pages.db.defrag";
/// Bytes copied by a defragmentation between two commits of the copy.
const DEFRAG_COMMIT_BYTES: usize = 64 << 20;
/// Pages a leaf of the defragmented copy may span: a leaf of large values that would
/// leave a page less than 7/8 full takes a second page (1 KiB values: 92% instead of
/// 79% of the file holds entries). A later write to a packed leaf copies all its entries
/// (seven instead of three) and splits them back into one-page leaves.
const DEFRAG_LEAF_PAGES: usize = 2;

struct State {
    db: Db,
    /// Batches written since a defragmentation pinned its state (replayed onto the copy
    /// at the swap); `None` while none runs.
    defrag_log: Option<Vec<WriteBatch>>,
}

/// The page store (module docs).
pub struct PageStore {
    /// The store's directory (defragmentation writes its copy there); `None` on a
    /// simulated disk without one.
    dir: Option<Arc<dyn PageDir>>,
    growth: Growth,
    /// Lock 3 (module docs): the open file, its write transaction and the defragment log.
    /// Write side: `write`, preparing and finishing a commit, pinning a view,
    /// defragmentation steps 1 and 3; read side: `get`, `scan`, the sizes.
    state: RwLock<State>,
    /// Lock 2 (module docs): one commit at a time, held from preparing it to finishing it
    /// (and by defragmentation's swap); taken before `state`.
    commit: Mutex<()>,
    /// Lock 1 (module docs): one defragmentation at a time; taken before `commit`.
    defrag: Mutex<()>,
    /// Set by the first failed write or commit (sticky until reopen).
    failed: AtomicBool,
}

impl PageStore {
    /// Opens (or creates) the page store in `dir`. Fails with "could not acquire lock"
    /// while another open store holds the file.
    pub fn open(dir: &Path) -> Result<PageStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        for leftover in [NEW_FILE_NAME, DEFRAG_FILE_NAME] {
            match std::fs::remove_file(dir.join(leftover)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        if !path.exists() {
            // initialise under another name, so a crash never leaves a half-made file
            let tmp = dir.join(NEW_FILE_NAME);
            Db::create(&FileIo::open(&tmp, true)?)?;
            std::fs::rename(&tmp, &path)?;
            FileDir(dir.to_path_buf()).sync()?;
        }
        let io: Arc<dyn PageIo> = Arc::new(FileIo::open(&path, false)?);
        Self::with_db(Some(Arc::new(FileDir(dir.to_path_buf()))), io, Growth::default())
    }

    fn with_db(dir: Option<Arc<dyn PageDir>>, io: Arc<dyn PageIo>, growth: Growth) -> Result<PageStore> {
        let db = Db::open(io, growth)?;
        Ok(PageStore {
            dir,
            growth,
            state: RwLock::new(State { db, defrag_log: None }),
            commit: Mutex::new(()),
            defrag: Mutex::new(()),
            failed: AtomicBool::new(false),
        })
    }

    /// A store on a simulated disk (tests), created empty when the disk is.
    #[cfg(test)]
    pub(crate) fn open_io(io: Arc<dyn PageIo>, growth: Growth) -> Result<PageStore> {
        if io.len()? == 0 {
            Db::create(io.as_ref())?;
        }
        Self::with_db(None, io, growth)
    }

    /// A store on a simulated disk in a simulated directory (tests of defragmentation),
    /// created empty when the disk is.
    #[cfg(test)]
    pub(crate) fn open_in(dir: Arc<dyn PageDir>, io: Arc<dyn PageIo>, growth: Growth) -> Result<PageStore> {
        if io.len()? == 0 {
            Db::create(io.as_ref())?;
        }
        Self::with_db(Some(dir), io, growth)
    }

    fn check_alive(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    fn fail<T>(&self, e: Error) -> Result<T> {
        tracing::error!(error = %e, "page store failed; it refuses everything until reopened");
        self.failed.store(true, Ordering::Release);
        Err(e)
    }

    /// Commits what was written; call with `commit` held. The write side of `state` is
    /// held to prepare the commit and to finish it, not across the fdatasync (see
    /// `db.rs`). A failure poisons the store.
    fn sync_locked(&self) -> Result<()> {
        self.check_alive()?;
        let prepared = match self.state.write().db.prepare_commit() {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return self.fail(e),
        };
        if let Err(e) = prepared.make_durable() {
            return self.fail(e);
        }
        self.state.write().db.finish_commit(prepared);
        Ok(())
    }

    /// Step 2 of a defragmentation: a fresh file in `dir` holding `pin`'s state.
    fn copy_to_new_file(&self, dir: &dyn PageDir, pin: &PinnedState) -> Result<Db> {
        let io = dir.create(DEFRAG_FILE_NAME)?;
        Db::create(io.as_ref())?;
        // grow the copy by small steps so it ends close to its data's size
        let tight = Growth { min_step: 64 * 4096, max_step: 8 << 20 };
        let mut new = Db::open(io, tight)?;
        new.set_leaf_pages(DEFRAG_LEAF_PAGES);
        let mut batch = WriteBatch::default();
        let mut bytes = 0usize;
        for bucket in Bucket::ALL {
            let mut err = None;
            pin.scan(bucket, &[], None, &mut |k, v| {
                bytes += k.len() + v.len();
                batch.put(bucket, k.to_vec(), v.to_vec());
                if bytes >= DEFRAG_COMMIT_BYTES {
                    if let Err(e) = new.apply(std::mem::take(&mut batch)).and_then(|()| new.commit()) {
                        err = Some(e);
                        return Ok(false);
                    }
                    bytes = 0;
                }
                Ok(true)
            })?;
            if let Some(e) = err {
                return Err(e);
            }
        }
        new.apply(batch)?;
        new.commit()?;
        Ok(new)
    }
}

/// A [`ReadView`] of the page store: a pinned commit.
struct PageView(PinnedState);

impl ReadView for PageView {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(bucket, key)
    }

    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
        self.0.scan(bucket, start, end, visit)
    }

    fn scan_all_uncached(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        self.0.scan_uncached(bucket, Leaves::Verified, visit)
    }

    fn scan_value_lens(&self, bucket: Bucket, visit: &mut LenFn<'_>) -> Result<()> {
        self.0.scan_uncached(bucket, Leaves::Lengths, &mut |k, v| visit(k, v.len()))
    }
}

impl Backend for PageStore {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_alive()?;
        self.state.read().db.get(bucket, key)
    }

    fn scan(&self, bucket: Bucket, start: &[u8], end: Option<&[u8]>, visit: &mut ScanFn<'_>) -> Result<()> {
        self.check_alive()?;
        self.state.read().db.scan(bucket, start, end, visit)
    }

    /// Holds the read side of `state` for the whole pass (writes wait; at start-up, the one
    /// caller, there are none).
    fn scan_bulk(&self, bucket: Bucket, visit: &mut ScanFn<'_>) -> Result<()> {
        self.check_alive()?;
        self.state.read().db.scan_uncached(bucket, visit)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.check_alive()?;
        let mut st = self.state.write();
        if let Some(log) = &mut st.defrag_log {
            log.push(batch.clone());
        }
        match st.db.apply(batch) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    fn sync(&self) -> Result<()> {
        let _commit = self.commit.lock();
        self.sync_locked()
    }

    fn size(&self) -> u64 {
        self.state.read().db.size()
    }

    fn size_in_use(&self) -> u64 {
        self.state.read().db.size_in_use()
    }

    fn size_allocated(&self) -> u64 {
        self.state.read().db.size_allocated()
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64> {
        let view = self.read_view()?;
        write_snapshot(view.as_ref(), out)
    }

    fn read_view(&self) -> Result<Box<dyn ReadView>> {
        let _commit = self.commit.lock();
        self.sync_locked()?;
        Ok(Box::new(PageView(self.state.read().db.pin())))
    }

    fn synced_view(&self) -> Result<Box<dyn ReadView>> {
        // under `commit` (not across anyone's fdatasync but a running commit's): the pin
        // is of the last finished commit, as `read_view`'s is of its own
        let _commit = self.commit.lock();
        self.check_alive()?;
        Ok(Box::new(PageView(self.state.read().db.pin())))
    }

    fn defragment(&self) -> Result<()> {
        let _one = self.defrag.lock();
        self.check_alive()?;
        let Some(dir) = self.dir.clone() else {
            return Err(Error::Backend("defragmentation needs a store in a directory".into()));
        };
        // step 1
        let pin = {
            // commit with `state` held throughout: a batch written between the commit and
            // the pin would be in neither the pinned state nor the log
            let _commit = self.commit.lock();
            let mut st = self.state.write();
            if let Err(e) = st.db.commit() {
                return self.fail(e);
            }
            st.defrag_log = Some(Vec::new());
            st.db.pin()
        };
        let before = self.size();
        // step 2
        let copied = self.copy_to_new_file(dir.as_ref(), &pin);
        drop(pin);
        let _commit = self.commit.lock();
        let mut st = self.state.write();
        let log = st.defrag_log.take().unwrap_or_default();
        // step 3
        let swapped = copied.and_then(|mut new| {
            new.set_leaf_pages(1);
            for batch in log {
                new.apply(batch)?;
            }
            new.commit()?;
            dir.rename(DEFRAG_FILE_NAME, FILE_NAME)?;
            Ok(new)
        });
        let mut new = match swapped {
            Ok(new) => new,
            Err(e) => {
                // the old file is untouched; drop the copy
                let _ = dir.remove(DEFRAG_FILE_NAME);
                return Err(e);
            }
        };
        if let Err(e) = dir.sync() {
            return self.fail(e.into());
        }
        new.set_growth(self.growth);
        st.db = new;
        tracing::info!(before, after = st.db.size(), in_use = st.db.size_in_use(), "page store defragmented");
        Ok(())
    }
}
