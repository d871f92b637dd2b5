//! A simulated disk for tests: it separates what was written from what is durable, and
//! can fail or lose power at any numbered operation.
//!
//! * Every `write_at`, `sync` and `grow` is one *operation*, numbered from 0.
//! * A [`Fault`] fires at a chosen operation: a crash (the operation and every later one
//!   fail), a torn write (a prefix of the write lands in 512-byte sectors, then the
//!   crash), or ENOSPC / EIO (that operation fails, later ones work again: the store must
//!   be the one that stays failed). An EIO on `sync` also drops the unsynced writes from
//!   what will be durable, as Linux does when writeback fails.
//! * [`SimDisk::power_loss`] gives the bytes a reboot would find: the durable bytes plus a
//!   random subset of the writes not yet synced, applied in random order, some torn.
//! * [`SimDir`] is a directory of such disks for defragmentation (create, rename, remove,
//!   sync): its operations are numbered too and it can lose power before any of them,
//!   which powers off every disk in it; a reboot finds its entries as of the last sync or
//!   as they are now ([`SimDir::power_loss`]).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::io::{PageDir, PageIo};

/// What goes wrong, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Power is lost before operation `n`.
    Crash(u64),
    /// Operation `n`, a write, lands partly; then power is lost.
    Torn(u64),
    /// Operation `n` fails with ENOSPC.
    NoSpace(u64),
    /// Operation `n` fails with EIO.
    Eio(u64),
}

impl Fault {
    fn at(self) -> u64 {
        match self {
            Fault::Crash(n) | Fault::Torn(n) | Fault::NoSpace(n) | Fault::Eio(n) => n,
        }
    }
}

/// One change not yet synced.
#[derive(Clone, Debug)]
enum Pending {
    Write(u64, Vec<u8>),
    Grow(u64),
}

struct SimState {
    /// What reads see.
    written: Vec<u8>,
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// Changes since the last successful sync, in order.
    unsynced: Vec<Pending>,
    ops: u64,
    fault: Option<Fault>,
    crashed: bool,
    rng: u64,
}

/// A simulated disk, shared by the [`SimIo`] handles over it.
pub(crate) struct SimDisk {
    /// Guards the disk state; a leaf lock.
    state: Mutex<SimState>,
}

/// splitmix64: a small seeded generator for the simulation and the tests.
pub(crate) fn next_rand(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn apply(buf: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, data) => {
            let end = *off as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*off as usize..end].copy_from_slice(data);
        }
        Pending::Grow(len) => {
            if buf.len() < *len as usize {
                buf.resize(*len as usize, 0);
            }
        }
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated power loss")
}

impl SimDisk {
    /// A disk holding `image` durably, failing as `fault` says.
    pub(crate) fn new(image: Vec<u8>, fault: Option<Fault>, seed: u64) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            state: Mutex::new(SimState {
                written: image.clone(),
                durable: image,
                unsynced: Vec::new(),
                ops: 0,
                fault,
                crashed: false,
                rng: seed,
            }),
        })
    }

    /// Operations done so far.
    pub(crate) fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// The bytes found after a power loss now (see the module docs).
    pub(crate) fn power_loss(&self) -> Vec<u8> {
        let mut st = self.state.lock();
        let mut image = st.durable.clone();
        let mut pending = st.unsynced.clone();
        // shuffle (Fisher-Yates), then keep each with probability 1/2, tearing some writes
        for i in (1..pending.len()).rev() {
            let j = (next_rand(&mut st.rng) % (i as u64 + 1)) as usize;
            pending.swap(i, j);
        }
        for p in pending {
            let r = next_rand(&mut st.rng);
            match (r % 4, p) {
                (0 | 1, _) => {}
                (2, Pending::Write(off, data)) if data.len() > 512 => {
                    let sectors = data.len().div_ceil(512);
                    let keep = (next_rand(&mut st.rng) as usize % sectors) * 512;
                    apply(&mut image, &Pending::Write(off, data[..keep].to_vec()));
                }
                (_, p) => apply(&mut image, &p),
            }
        }
        image
    }

    /// Whether power was lost (a crash fault fired, or the directory lost power).
    pub(crate) fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Loses power: every later operation fails.
    fn power_off(&self) {
        self.state.lock().crashed = true;
    }

    /// The bytes reads see now (everything written).
    pub(crate) fn written(&self) -> Vec<u8> {
        self.state.lock().written.clone()
    }

    /// Counts the operation; returns the fault that fires on it, if any.
    fn step_locked(st: &mut SimState) -> io::Result<Option<Fault>> {
        if st.crashed {
            return Err(crashed());
        }
        let n = st.ops;
        st.ops += 1;
        match st.fault {
            Some(f) if f.at() == n => Ok(Some(f)),
            _ => Ok(None),
        }
    }
}

/// A handle on a [`SimDisk`] as the page store's [`PageIo`].
pub(crate) struct SimIo(pub(crate) Arc<SimDisk>);

impl PageIo for SimIo {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.0.state.lock();
        let end = offset as usize + buf.len();
        if end > st.written.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
        }
        buf.copy_from_slice(&st.written[offset as usize..end]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.0.state.lock();
        match SimDisk::step_locked(&mut st)? {
            Some(Fault::Crash(_)) => {
                st.crashed = true;
                Err(crashed())
            }
            Some(Fault::Torn(_)) => {
                let sectors = data.len().div_ceil(512) as u64;
                let keep = ((next_rand(&mut st.rng) % sectors.max(1)) * 512) as usize;
                let p = Pending::Write(offset, data[..keep.min(data.len())].to_vec());
                apply(&mut st.written, &p);
                st.unsynced.push(p);
                st.crashed = true;
                Err(crashed())
            }
            Some(Fault::NoSpace(_)) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(Fault::Eio(_)) => Err(io::Error::from_raw_os_error(libc::EIO)),
            None => {
                let p = Pending::Write(offset, data.to_vec());
                apply(&mut st.written, &p);
                st.unsynced.push(p);
                Ok(())
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.0.state.lock();
        match SimDisk::step_locked(&mut st)? {
            Some(Fault::Crash(_) | Fault::Torn(_)) => {
                st.crashed = true;
                Err(crashed())
            }
            Some(Fault::NoSpace(_)) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(Fault::Eio(_)) => {
                // writeback failed: the pages are marked clean, their data is lost
                st.unsynced.clear();
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            None => {
                let pending = std::mem::take(&mut st.unsynced);
                for p in &pending {
                    apply(&mut st.durable, p);
                }
                Ok(())
            }
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.state.lock().written.len() as u64)
    }

    fn grow(&self, len: u64) -> io::Result<()> {
        let mut st = self.0.state.lock();
        match SimDisk::step_locked(&mut st)? {
            Some(Fault::Crash(_) | Fault::Torn(_)) => {
                st.crashed = true;
                Err(crashed())
            }
            Some(Fault::NoSpace(_)) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(Fault::Eio(_)) => Err(io::Error::from_raw_os_error(libc::EIO)),
            None => {
                let p = Pending::Grow(len);
                apply(&mut st.written, &p);
                st.unsynced.push(p);
                Ok(())
            }
        }
    }
}

/// A simulated directory of [`SimDisk`]s (module docs).
pub(crate) struct SimDir {
    /// Guards the entries and the counters; taken before a disk's lock, never after.
    state: Mutex<SimDirState>,
}

struct SimDirState {
    /// The entries as they are now.
    now: BTreeMap<String, Arc<SimDisk>>,
    /// The entries as of the last sync.
    durable: BTreeMap<String, Arc<SimDisk>>,
    /// Directory operations done so far.
    ops: u64,
    /// Power is lost before this directory operation.
    crash_at: Option<u64>,
    /// The fault of the next file created (then none).
    create_fault: Option<Fault>,
    /// Files created so far (each disk's seed is drawn from it).
    created: u64,
    rng: u64,
}

impl SimDir {
    /// A directory holding `name` (durably) on `disk`; the next file created fails as
    /// `create_fault` says, and the directory loses power before its operation `crash_at`.
    pub(crate) fn new(name: &str, disk: Arc<SimDisk>, create_fault: Option<Fault>, crash_at: Option<u64>, seed: u64) -> Arc<SimDir> {
        let entries = BTreeMap::from([(name.to_owned(), disk)]);
        Arc::new(SimDir {
            state: Mutex::new(SimDirState {
                now: entries.clone(),
                durable: entries,
                ops: 0,
                crash_at,
                create_fault,
                created: 0,
                rng: seed,
            }),
        })
    }

    /// Directory operations done so far.
    pub(crate) fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// The disk of entry `name` now.
    pub(crate) fn disk(&self, name: &str) -> Option<Arc<SimDisk>> {
        self.state.lock().now.get(name).cloned()
    }

    /// What a reboot finds: the entries as of the last sync or as they are now (one of
    /// the two, drawn at random, when they differ), each file as its disk's
    /// [`SimDisk::power_loss`] leaves it.
    pub(crate) fn power_loss(&self) -> BTreeMap<String, Vec<u8>> {
        let mut st = self.state.lock();
        let entries = if next_rand(&mut st.rng) % 2 == 0 { st.durable.clone() } else { st.now.clone() };
        entries.into_iter().map(|(name, disk)| (name, disk.power_loss())).collect()
    }

}

impl SimDirState {
    /// Counts a directory operation; fails it (and powers every disk off) at the crash
    /// point, or once any disk in the directory lost power.
    fn step(&mut self) -> io::Result<()> {
        if self.now.values().chain(self.durable.values()).any(|d| d.is_crashed()) {
            return Err(crashed());
        }
        let n = self.ops;
        self.ops += 1;
        if self.crash_at == Some(n) {
            for d in self.now.values().chain(self.durable.values()) {
                d.power_off();
            }
            return Err(crashed());
        }
        Ok(())
    }
}

impl PageDir for SimDir {
    fn create(&self, name: &str) -> io::Result<Arc<dyn PageIo>> {
        let mut st = self.state.lock();
        st.step()?;
        st.created += 1;
        let seed = st.rng ^ st.created;
        let disk = SimDisk::new(Vec::new(), st.create_fault.take(), seed);
        st.now.insert(name.to_owned(), disk.clone());
        Ok(Arc::new(SimIo(disk)))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        let disk = st.now.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.now.insert(to.to_owned(), disk);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        st.now.remove(name).map(|_| ()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        st.durable = st.now.clone();
        Ok(())
    }
}
