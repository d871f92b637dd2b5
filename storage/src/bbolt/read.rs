//! Reading a bbolt file: pick the meta page, walk a bucket's B+tree in key order.
//!
//! The pages come from memory ([`BboltFile::from_bytes`]) or are read from an open file
//! one at a time as the walk reaches them ([`BboltFile::from_file`]: memory stays at a
//! page, its overflow pages and one bit per page of the file, whatever the file's size).
//! Every offset is checked before use, so a corrupt file gives a [`BboltError`], never a
//! panic or an endless walk:
//! * a page number must lie between the meta pages and the meta's high-water mark, and
//!   the page (with its overflow pages) inside the file; its header must carry its own id;
//! * one load never visits a page twice (a valid file references each page once), so a
//!   cycle or a shared subtree is refused and the work is bounded by the file's size;
//!   tree and bucket nesting depth is bounded too;
//! * keys must come out strictly ascending.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::layout::{
    u32_at, u64_at, BucketHeader, Meta, PageHeader, BRANCH_PAGE, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, ELEMENT_SIZE,
    FREELIST_PAGE, LEAF_PAGE, META_SIZE, NO_FREELIST, PAGE_HEADER_SIZE,
};
use super::{BboltError, BucketData, Item};

/// Deepest nesting of pages plus buckets a walk follows (a real file is a few levels deep).
const MAX_DEPTH: usize = 128;

/// Page sizes tried for the second meta page when the first one is unreadable.
const PAGE_SIZE_GUESSES: [usize; 7] = [4096, 8192, 16384, 32768, 65536, 2048, 1024];

/// An open bbolt file (read-only).
pub struct BboltFile {
    source: Source,
    page_size: usize,
    meta: Meta,
}

/// Where the pages are.
enum Source {
    /// The whole file in memory.
    Memory(Vec<u8>),
    /// An open file, of which the first `len` bytes are the db (a snapshot's SHA-256
    /// trailer follows them).
    File { file: File, len: u64 },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(d) => d.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// The bytes `at..at + n`, or as many of them as the source holds (possibly none).
    fn read(&self, at: u64, n: usize) -> Result<Cow<'_, [u8]>, BboltError> {
        let end = at.saturating_add(n as u64).min(self.len());
        let n = end.saturating_sub(at) as usize;
        match self {
            Source::Memory(d) => Ok(Cow::Borrowed(d.get(at as usize..at as usize + n).unwrap_or(&[]))),
            Source::File { file, .. } => {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, at)?;
                Ok(Cow::Owned(buf))
            }
        }
    }
}

/// A bucket of an open file: the root bucket or a nested one.
#[derive(Clone)]
pub struct BucketRef<'f> {
    file: &'f BboltFile,
    root: Root,
    sequence: u64,
}

#[derive(Clone)]
enum Root {
    /// The bucket's root page.
    Page(u64),
    /// An inline bucket: its leaf page, copied out of the parent's value (a fraction of
    /// a page).
    Inline(Vec<u8>),
}

/// A value in a bucket, as a walk hands it out: a value borrowed from the page being
/// visited (`'p`), or a nested bucket of the file (`'f`).
pub enum Entry<'p, 'f> {
    /// A plain value.
    Value(&'p [u8]),
    /// A nested bucket.
    Bucket(BucketRef<'f>),
}

/// The visitor of [`BucketRef::for_each`]: gets each key and entry (valid for the call
/// only: the page they lie in may be dropped after it), returns whether to go on.
pub type VisitFn<'v, 'f> = dyn for<'p> FnMut(&'p [u8], Entry<'p, 'f>) -> Result<bool, BboltError> + 'v;

/// One walk's state (see the module docs): the pages it has seen, one bit per page of
/// the file, and the last key visited.
struct Walk {
    seen: Vec<u64>,
    last: Option<Vec<u8>>,
}

impl Walk {
    fn new(pages: u64) -> Walk {
        Walk { seen: vec![0; pages.div_ceil(64) as usize], last: None }
    }

    /// Marks `pgid` seen; false if it was already (`pgid` is below the high-water mark).
    fn first_visit(&mut self, pgid: u64) -> bool {
        let (word, bit) = ((pgid / 64) as usize, 1u64 << (pgid % 64));
        match self.seen.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }

    /// Checks that `key` comes after the last key visited and makes it the last one.
    fn next_key(&mut self, key: &[u8], pgid: u64) -> Result<(), BboltError> {
        match &mut self.last {
            Some(l) if l.as_slice() >= key => Err(BboltError::KeysOutOfOrder { pgid }),
            Some(l) => {
                l.clear();
                l.extend_from_slice(key);
                Ok(())
            }
            None => {
                self.last = Some(key.to_vec());
                Ok(())
            }
        }
    }
}

impl BboltFile {
    /// Opens the file at `path`, reading its pages as they are walked.
    pub fn open(path: &Path) -> Result<BboltFile, BboltError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Self::from_file(file, len)
    }

    /// Opens a file's bytes: validates both meta pages and keeps the newest valid one.
    pub fn from_bytes(data: Vec<u8>) -> Result<BboltFile, BboltError> {
        Self::from_source(Source::Memory(data))
    }

    /// Opens the db in the first `len` bytes of `file` (a snapshot file's db, before its
    /// SHA-256 trailer): validates both meta pages and keeps the newest valid one; the
    /// other pages are read when a walk reaches them.
    pub fn from_file(file: File, len: u64) -> Result<BboltFile, BboltError> {
        Self::from_source(Source::File { file, len })
    }

    fn from_source(source: Source) -> Result<BboltFile, BboltError> {
        let meta_at = |at: usize| -> Result<Result<Meta, BboltError>, BboltError> {
            Ok(Meta::decode(&source.read((at + PAGE_HEADER_SIZE) as u64, META_SIZE)?))
        };
        let meta0 = meta_at(0)?;
        let guesses: Vec<usize> = match &meta0 {
            Ok(m) => vec![m.page_size as usize],
            Err(_) => PAGE_SIZE_GUESSES.to_vec(),
        };
        let mut meta1 = Err(BboltError::BadMeta("file too short"));
        for (i, size) in guesses.into_iter().enumerate() {
            match meta_at(size)? {
                Ok(m) if m.page_size as usize == size => {
                    meta1 = Ok(m);
                    break;
                }
                Ok(_) => meta1 = Err(BboltError::BadMeta("page size differs from the page's place")),
                Err(e) if i == 0 => meta1 = Err(e),
                Err(_) => {}
            }
        }
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(BboltError::BadMeta(m0)), Err(BboltError::BadMeta(m1))) => {
                return Err(BboltError::NoValidMeta { meta0: m0, meta1: m1 })
            }
            (Err(e), _) => return Err(e),
        };
        let page_size = meta.page_size as usize;
        if !page_size.is_power_of_two() || !(1024..=1 << 20).contains(&page_size) {
            return Err(BboltError::BadMeta("page size is not a power of two between 1 KiB and 1 MiB"));
        }
        let needed = meta.pgid.checked_mul(page_size as u64).ok_or(BboltError::BadMeta("high-water mark overflows"))?;
        if source.len() < needed {
            return Err(BboltError::Truncated { len: source.len(), needed });
        }
        if meta.pgid < 3 || meta.root.root < 2 || meta.root.root >= meta.pgid {
            return Err(BboltError::BadMeta("root page outside the file"));
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(BboltError::BadMeta("freelist page outside the file"));
        }
        Ok(BboltFile { source, page_size, meta })
    }

    /// The file's page size.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The transaction id of the meta in use.
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// Pages in use (the meta's high-water mark).
    pub fn page_count(&self) -> u64 {
        self.meta.pgid
    }

    /// The root bucket (its entries are the top-level buckets).
    pub fn root(&self) -> BucketRef<'_> {
        BucketRef { file: self, root: Root::Page(self.meta.root.root), sequence: self.meta.root.sequence }
    }

    /// The free page ids the freelist page records (empty when it is not persisted).
    pub fn free_pages(&self) -> Result<Vec<u64>, BboltError> {
        if self.meta.freelist == NO_FREELIST {
            return Ok(Vec::new());
        }
        let pgid = self.meta.freelist;
        let (h, page) = self.page(pgid)?;
        if h.flags != FREELIST_PAGE {
            return Err(BboltError::BadPage { pgid, detail: "freelist page without the freelist flag" });
        }
        let (count, start) = if h.count == 0xFFFF {
            let n = u64_at(&page, PAGE_HEADER_SIZE).ok_or(BboltError::BadPage { pgid, detail: "freelist count" })?;
            (n, PAGE_HEADER_SIZE + 8)
        } else {
            (u64::from(h.count), PAGE_HEADER_SIZE)
        };
        let bytes = count.checked_mul(8).and_then(|n| usize::try_from(n).ok());
        let ids = bytes
            .and_then(|n| page.get(start..start.checked_add(n)?))
            .ok_or(BboltError::BadPage { pgid, detail: "freelist ids past the page" })?;
        let ids: Vec<u64> = ids.chunks_exact(8).filter_map(|c| c.try_into().ok().map(u64::from_le_bytes)).collect();
        if ids.iter().any(|&id| id < 2 || id >= self.meta.pgid) || ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(BboltError::BadPage { pgid, detail: "freelist ids unsorted or outside the file" });
        }
        Ok(ids)
    }

    /// The page `pgid` with its overflow pages, and its header.
    fn page(&self, pgid: u64) -> Result<(PageHeader, Cow<'_, [u8]>), BboltError> {
        if pgid < 2 || pgid >= self.meta.pgid {
            return Err(BboltError::PageOutOfRange { pgid, high_water: self.meta.pgid });
        }
        let start = pgid * self.page_size as u64;
        let first = self.source.read(start, self.page_size)?;
        if first.len() < self.page_size {
            return Err(BboltError::PageOutOfRange { pgid, high_water: self.meta.pgid });
        }
        let h = PageHeader::decode(&first).ok_or(BboltError::BadPage { pgid, detail: "short header" })?;
        if h.id != pgid {
            return Err(BboltError::BadPage { pgid, detail: "header carries another page id" });
        }
        let span = u64::from(h.overflow) + 1;
        if pgid + span > self.meta.pgid {
            return Err(BboltError::BadPage { pgid, detail: "overflow past the high-water mark" });
        }
        if span == 1 {
            return Ok((h, first));
        }
        // below the high-water mark, which the source's length was checked against
        let len = usize::try_from(span * self.page_size as u64).map_err(|_| BboltError::BadPage { pgid, detail: "overflow too large" })?;
        let page = self.source.read(start, len)?;
        if page.len() < len {
            return Err(BboltError::BadPage { pgid, detail: "overflow past the end of the file" });
        }
        Ok((h, page))
    }
}

/// One element of a page: its flags, key and value (leaf) or child page (branch).
struct Element<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
    child: u64,
}

/// The `i`th element of `page` (a leaf or branch page's bytes, inline or not).
fn element(page: &[u8], pgid: u64, branch: bool, i: usize) -> Result<Element<'_>, BboltError> {
    let bad = |detail| BboltError::BadPage { pgid, detail };
    let at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
    let field = |off| u32_at(page, at + off).ok_or(bad("element past the page"));
    let (flags, pos, ksize, vsize, child) = if branch {
        (0, field(0)?, field(4)?, 0, u64_at(page, at + 8).ok_or(bad("element past the page"))?)
    } else {
        (field(0)?, field(4)?, field(8)?, field(12)?, 0)
    };
    let kstart = at.checked_add(pos as usize).ok_or(bad("key offset overflows"))?;
    let kend = kstart.checked_add(ksize as usize).ok_or(bad("key size overflows"))?;
    let vend = kend.checked_add(vsize as usize).ok_or(bad("value size overflows"))?;
    let key = page.get(kstart..kend).ok_or(bad("key past the page"))?;
    let value = page.get(kend..vend).ok_or(bad("value past the page"))?;
    Ok(Element { flags, key, value, child })
}

impl<'f> BucketRef<'f> {
    /// The bucket's sequence (bbolt's `NextSequence` counter).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Visits every entry in key order until `visit` returns `false`.
    pub fn for_each(&self, visit: &mut VisitFn<'_, 'f>) -> Result<(), BboltError> {
        let mut walk = Walk::new(self.file.meta.pgid);
        self.walk(&mut walk, 0, visit).map(|_| ())
    }

    /// The nested bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<BucketRef<'f>>, BboltError> {
        let mut found = None;
        self.for_each(&mut |k, e| {
            if k == name {
                if let Entry::Bucket(b) = e {
                    found = Some(b);
                }
                return Ok(false);
            }
            Ok(k < name)
        })?;
        Ok(found)
    }

    /// The whole bucket, nested buckets included, in memory.
    pub fn load(&self) -> Result<BucketData, BboltError> {
        let mut walk = Walk::new(self.file.meta.pgid);
        self.load_in(&mut walk, 0)
    }

    fn load_in(&self, walk: &mut Walk, depth: usize) -> Result<BucketData, BboltError> {
        let mut out = BucketData { sequence: self.sequence, ..BucketData::default() };
        let mut nested = Vec::new();
        walk.last = None;
        self.walk(walk, depth, &mut |k, e| {
            match e {
                Entry::Value(v) => {
                    out.items.insert(k.to_vec(), Item::Value(v.to_vec()));
                }
                Entry::Bucket(b) => nested.push((k.to_vec(), b)),
            }
            Ok(true)
        })?;
        for (k, b) in nested {
            out.items.insert(k, Item::Bucket(b.load_in(walk, depth + 1)?));
        }
        Ok(out)
    }

    /// Walks this bucket's tree; returns `false` once the visitor asked to stop.
    fn walk(&self, walk: &mut Walk, depth: usize, visit: &mut VisitFn<'_, 'f>) -> Result<bool, BboltError> {
        match &self.root {
            Root::Page(pgid) => self.walk_page(walk, *pgid, depth, visit),
            Root::Inline(page) => {
                let h = PageHeader::decode(page).ok_or(BboltError::BadPage { pgid: 0, detail: "inline bucket too short" })?;
                if h.flags != LEAF_PAGE {
                    return Err(BboltError::BadPage { pgid: 0, detail: "inline bucket is not a leaf" });
                }
                self.visit_leaf(walk, page, 0, h.count, depth, visit)
            }
        }
    }

    fn walk_page(&self, walk: &mut Walk, pgid: u64, depth: usize, visit: &mut VisitFn<'_, 'f>) -> Result<bool, BboltError> {
        if depth > MAX_DEPTH {
            return Err(BboltError::TooDeep { pgid });
        }
        if pgid >= 2 && pgid < self.file.meta.pgid && !walk.first_visit(pgid) {
            return Err(BboltError::PageReferencedTwice { pgid });
        }
        let (h, page) = self.file.page(pgid)?;
        match h.flags {
            LEAF_PAGE => self.visit_leaf(walk, &page, pgid, h.count, depth, visit),
            BRANCH_PAGE => {
                if h.count == 0 {
                    return Err(BboltError::BadPage { pgid, detail: "empty branch page" });
                }
                for i in 0..h.count as usize {
                    let e = element(&page, pgid, true, i)?;
                    if !self.walk_page(walk, e.child, depth + 1, visit)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            _ => Err(BboltError::BadPage { pgid, detail: "neither a branch nor a leaf page" }),
        }
    }

    fn visit_leaf(&self, walk: &mut Walk, page: &[u8], pgid: u64, count: u16, depth: usize, visit: &mut VisitFn<'_, 'f>) -> Result<bool, BboltError> {
        for i in 0..count as usize {
            let e = element(page, pgid, false, i)?;
            walk.next_key(e.key, pgid)?;
            let entry = if e.flags & BUCKET_LEAF_FLAG == 0 {
                Entry::Value(e.value)
            } else {
                Entry::Bucket(self.nested(e.value, pgid, depth)?)
            };
            if !visit(e.key, entry)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The bucket whose header (and inline page) is `value`.
    fn nested(&self, value: &[u8], pgid: u64, depth: usize) -> Result<BucketRef<'f>, BboltError> {
        if depth >= MAX_DEPTH {
            return Err(BboltError::TooDeep { pgid });
        }
        let h = BucketHeader::decode(value).ok_or(BboltError::BadPage { pgid, detail: "bucket value too short" })?;
        let root = if h.root == 0 { Root::Inline(value[BUCKET_HEADER_SIZE..].to_vec()) } else { Root::Page(h.root) };
        Ok(BucketRef { file: self.file, root, sequence: h.sequence })
    }
}
