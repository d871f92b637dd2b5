//! Streaming a fresh bbolt file of flat buckets (values only, no nested buckets: etcd's
//! schema) without holding it in memory: the data are read twice, as a consistent read
//! view allows. The first pass ([`plan`]) cuts each bucket's entries into leaf pages and
//! lays out every page; the second ([`write_planned`]) emits the pages in file order.
//! The first needs only each entry's key and value length ([`BucketSink::entry_len`]), so
//! a source can feed it without reading or checking the values.
//!
//! # Layout
//! ```text
//! page 0, 1      meta pages (txid 0 and 1, identical but for the txid and checksum)
//! page 2         the freelist: empty (every page of the file is in use)
//! page 3..       the root bucket's single leaf node (one element per bucket: its name
//!                and its 16-byte bucket header); more than one page only when the names
//!                need it (overflow pages)
//! then, bucket after bucket in name order:
//!   its leaves   entries in key order, packed as full as a page allows; an element
//!                bigger than a page gets a leaf of its own with overflow pages
//!   its branches bottom-up, level after level, each node over at least two children
//!                (bbolt's `minKeysPerPage`) until one root node is left (a bucket of
//!                one leaf has no branch: the leaf is its root)
//! ```
//! Every bucket has a root page (none is inline, empty ones included: bbolt reads an
//! empty leaf page as an empty bucket). The file ends at the high-water mark, so its
//! length is known after the first pass: `pages × page_size` ([`Plan::file_len`]).
//!
//! # Memory
//! The plan keeps, per leaf, its element and page counts and its first key (the branch
//! levels are made of those keys): about 40 bytes per 4 KiB leaf for etcd's 17-byte
//! revision keys, 1% of the data. The second pass holds one leaf (one page, or one
//! element with its overflow pages) at a time.
//!
//! # Consistency
//! The two passes must see the same data. The second checks every leaf against the plan
//! (element count, first key, pages) and refuses with [`BboltError::Stream`] rather than
//! writing a file whose branches would not match its leaves.

use std::io::Write;

use super::layout::{
    encode_node, node_size, BucketHeader, Elem, Meta, PageHeader, BRANCH_PAGE, BUCKET_LEAF_FLAG, ELEMENT_SIZE,
    FREELIST_PAGE, LEAF_PAGE, META_PAGE, META_SIZE, MIN_KEYS_PER_PAGE, PAGE_HEADER_SIZE,
};
use super::{BboltError, MAX_KEY_SIZE, MAX_VALUE_SIZE};

/// The freelist's page.
const FREELIST_PGID: u64 = 2;
/// The root bucket's page.
const ROOT_PGID: u64 = 3;

/// Receives a file's contents: `bucket(name)`, then that bucket's entries in strictly
/// ascending key order; buckets in strictly ascending name order.
pub trait BucketSink {
    /// Starts the bucket `name`.
    fn bucket(&mut self, name: &[u8]) -> Result<(), BboltError>;
    /// Adds an entry to the current bucket.
    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), BboltError>;
    /// Adds an entry of which only the value's length is given: enough for the layout
    /// ([`plan`]), refused by the pass that writes the pages.
    fn entry_len(&mut self, key: &[u8], value_len: usize) -> Result<(), BboltError> {
        let _ = (key, value_len);
        Err(BboltError::Stream("an entry without its value where the pages are written"))
    }
}

/// A node of the plan: how many elements (entries or children) and pages it has, and
/// the leaf whose first key is its own.
#[derive(Clone, Copy, Debug)]
struct Node {
    elems: u32,
    pages: u32,
    first_leaf: usize,
}

/// One bucket's pages.
#[derive(Debug)]
struct BucketPlan {
    name: Vec<u8>,
    leaves: Vec<Node>,
    /// The leaves' first keys, end to end; leaf `i`'s ends at `key_ends[i]`.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    /// Branch levels, bottom-up.
    levels: Vec<Vec<Node>>,
    first_pgid: u64,
}

impl BucketPlan {
    fn leaf_key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        &self.keys[start..self.key_ends[i]]
    }

    fn pages(&self) -> u64 {
        self.leaves.iter().chain(self.levels.iter().flatten()).map(|n| u64::from(n.pages)).sum()
    }

    /// The root page: the last node written.
    fn root(&self) -> u64 {
        let last = self.levels.last().and_then(|l| l.last()).or(self.leaves.last()).map_or(1, |n| u64::from(n.pages));
        self.first_pgid + self.pages() - last
    }

    /// Cuts the leaves into branch levels until one node is left.
    fn build_levels(&mut self, page_size: usize) {
        let mut below: Vec<Node> = self.leaves.clone();
        while below.len() > 1 {
            let mut level = Vec::new();
            let mut start = 0;
            let mut size = PAGE_HEADER_SIZE;
            for (i, child) in below.iter().enumerate() {
                let esize = ELEMENT_SIZE + self.leaf_key(child.first_leaf).len();
                if i >= start + MIN_KEYS_PER_PAGE && size + esize > page_size {
                    level.push(node(i - start, size, page_size, below[start].first_leaf));
                    start = i;
                    size = PAGE_HEADER_SIZE;
                }
                size += esize;
            }
            level.push(node(below.len() - start, size, page_size, below[start].first_leaf));
            self.levels.push(level.clone());
            below = level;
        }
    }
}

fn node(elems: usize, size: usize, page_size: usize, first_leaf: usize) -> Node {
    Node { elems: elems as u32, pages: size.div_ceil(page_size).max(1) as u32, first_leaf }
}

/// Where every page of a file goes (see the module docs); made by [`plan`].
#[derive(Debug)]
pub struct Plan {
    page_size: usize,
    buckets: Vec<BucketPlan>,
    root_pages: u64,
    pages: u64,
}

impl Plan {
    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.pages * self.page_size as u64
    }

    /// The root bucket's node: each bucket's name and header.
    fn root_elems(&self) -> (Vec<[u8; 16]>, usize) {
        let headers: Vec<[u8; 16]> = self
            .buckets
            .iter()
            .map(|b| {
                let mut h = Vec::with_capacity(16);
                BucketHeader { root: b.root(), sequence: 0 }.encode(&mut h);
                h.try_into().unwrap_or([0; 16])
            })
            .collect();
        let size = PAGE_HEADER_SIZE + self.buckets.iter().map(|b| ELEMENT_SIZE + b.name.len() + 16).sum::<usize>();
        (headers, size)
    }
}

/// The first pass: records the leaf partition.
struct Planner {
    page_size: usize,
    buckets: Vec<BucketPlan>,
    /// The open leaf: elements and bytes so far.
    count: u32,
    size: usize,
    last_key: Option<Vec<u8>>,
}

impl Planner {
    fn close_leaf(&mut self) {
        if let Some(b) = self.buckets.last_mut() {
            let i = b.leaves.len();
            if self.count > 0 || i == 0 {
                if self.count == 0 {
                    b.key_ends.push(b.keys.len());
                }
                b.leaves.push(node(self.count as usize, self.size, self.page_size, i));
            }
        }
        self.count = 0;
        self.size = PAGE_HEADER_SIZE;
    }
}

fn check_entry(key: &[u8], value_len: usize) -> Result<(), BboltError> {
    if key.is_empty() || key.len() > MAX_KEY_SIZE {
        return Err(BboltError::KeySize(key.len()));
    }
    if value_len > MAX_VALUE_SIZE {
        return Err(BboltError::ValueSize(value_len));
    }
    Ok(())
}

impl BucketSink for Planner {
    fn bucket(&mut self, name: &[u8]) -> Result<(), BboltError> {
        if name.is_empty() || name.len() > MAX_KEY_SIZE {
            return Err(BboltError::KeySize(name.len()));
        }
        if self.buckets.last().is_some_and(|b| b.name.as_slice() >= name) {
            return Err(BboltError::Stream("bucket names not in ascending order"));
        }
        self.close_leaf();
        self.buckets.push(BucketPlan {
            name: name.to_vec(),
            leaves: Vec::new(),
            keys: Vec::new(),
            key_ends: Vec::new(),
            levels: Vec::new(),
            first_pgid: 0,
        });
        self.last_key = None;
        Ok(())
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), BboltError> {
        self.entry_len(key, value.len())
    }

    fn entry_len(&mut self, key: &[u8], value_len: usize) -> Result<(), BboltError> {
        check_entry(key, value_len)?;
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(BboltError::Stream("keys not in ascending order"));
        }
        let esize = ELEMENT_SIZE + key.len() + value_len;
        if self.count >= 1 && self.size + esize > self.page_size {
            self.close_leaf();
        }
        let b = self.buckets.last_mut().ok_or(BboltError::Stream("an entry before any bucket"))?;
        if self.count == 0 {
            b.keys.extend_from_slice(key);
            b.key_ends.push(b.keys.len());
        }
        self.count += 1;
        self.size += esize;
        let last = self.last_key.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(key);
        Ok(())
    }
}

/// The first pass: runs `feed` once and lays out the file on `page_size`-byte pages.
pub fn plan<E: From<BboltError>>(page_size: usize, feed: &mut dyn FnMut(&mut dyn BucketSink) -> Result<(), E>) -> Result<Plan, E> {
    if !page_size.is_power_of_two() || !(1024..=1 << 20).contains(&page_size) {
        return Err(BboltError::PageSize(page_size).into());
    }
    let mut p = Planner { page_size, buckets: Vec::new(), count: 0, size: PAGE_HEADER_SIZE, last_key: None };
    feed(&mut p)?;
    p.close_leaf();
    let mut plan = Plan { page_size, buckets: p.buckets, root_pages: 0, pages: 0 };
    let (_, root_size) = plan.root_elems();
    plan.root_pages = root_size.div_ceil(page_size) as u64;
    let mut next = ROOT_PGID + plan.root_pages;
    for b in &mut plan.buckets {
        b.build_levels(page_size);
        b.first_pgid = next;
        next += b.pages();
    }
    plan.pages = next;
    Ok(plan)
}

/// The second pass: emits the pages as the entries arrive.
struct Emitter<'a> {
    plan: &'a Plan,
    out: &'a mut dyn Write,
    /// The bucket being written (index into the plan), its next leaf, and the entries of
    /// that leaf so far (key and value ends in `arena`).
    bucket: Option<usize>,
    leaf: usize,
    arena: Vec<u8>,
    spans: Vec<(usize, usize)>,
    page: Vec<u8>,
    pgid: u64,
}

const CHANGED: BboltError = BboltError::Stream("the data changed between the two passes");

impl Emitter<'_> {
    fn write_node(&mut self, flags: u16, elems: &[Elem<'_>], pages: u32) -> Result<(), BboltError> {
        let size = node_size(elems);
        if size.div_ceil(self.plan.page_size).max(1) != pages as usize {
            return Err(CHANGED);
        }
        self.page.clear();
        self.page.resize(pages as usize * self.plan.page_size, 0);
        encode_node(&mut self.page, self.pgid, flags, pages - 1, elems);
        self.out.write_all(&self.page)?;
        self.pgid += u64::from(pages);
        Ok(())
    }

    /// Writes the leaf whose entries are buffered.
    fn flush_leaf(&mut self, b: usize) -> Result<(), BboltError> {
        let bp = &self.plan.buckets[b];
        let want = bp.leaves.get(self.leaf).ok_or(CHANGED)?;
        let mut elems = Vec::with_capacity(self.spans.len());
        let mut at = 0;
        for &(kend, vend) in &self.spans {
            elems.push(Elem { flags: 0, key: &self.arena[at..kend], value: &self.arena[kend..vend], child: 0 });
            at = vend;
        }
        if elems.len() != want.elems as usize || elems.first().map_or(&[][..], |e| e.key) != bp.leaf_key(self.leaf) {
            return Err(CHANGED);
        }
        // as `write_node`, inline: the elements borrow the arena, not the page buffer
        let (pages, page_size) = (want.pages, self.plan.page_size);
        let size = node_size(&elems);
        if size.div_ceil(page_size).max(1) != pages as usize {
            return Err(CHANGED);
        }
        self.page.clear();
        self.page.resize(pages as usize * page_size, 0);
        encode_node(&mut self.page, self.pgid, LEAF_PAGE, pages - 1, &elems);
        self.out.write_all(&self.page)?;
        self.pgid += u64::from(pages);
        self.arena.clear();
        self.spans.clear();
        self.leaf += 1;
        Ok(())
    }

    /// Ends the open bucket: its last leaf, then its branch levels.
    fn finish_bucket(&mut self) -> Result<(), BboltError> {
        let Some(b) = self.bucket else { return Ok(()) };
        let bp = &self.plan.buckets[b];
        if !self.spans.is_empty() || (self.leaf == 0 && bp.leaves.first().is_some_and(|l| l.elems == 0)) {
            self.flush_leaf(b)?;
        }
        if self.leaf != bp.leaves.len() {
            return Err(CHANGED);
        }
        let mut below: &[Node] = &bp.leaves;
        let mut below_pgid = bp.first_pgid;
        for level in &bp.levels {
            let level_pgid = self.pgid;
            let mut child = 0;
            let mut child_pgid = below_pgid;
            for n in level {
                let mut elems = Vec::with_capacity(n.elems as usize);
                for c in &below[child..child + n.elems as usize] {
                    elems.push(Elem { flags: 0, key: bp.leaf_key(c.first_leaf), value: &[], child: child_pgid });
                    child_pgid += u64::from(c.pages);
                }
                child += n.elems as usize;
                self.write_node(BRANCH_PAGE, &elems, n.pages)?;
            }
            below = level;
            below_pgid = level_pgid;
        }
        if self.pgid != bp.first_pgid + bp.pages() {
            return Err(CHANGED);
        }
        Ok(())
    }
}

impl BucketSink for Emitter<'_> {
    fn bucket(&mut self, name: &[u8]) -> Result<(), BboltError> {
        self.finish_bucket()?;
        let next = self.bucket.map_or(0, |b| b + 1);
        let bp = self.plan.buckets.get(next).ok_or(CHANGED)?;
        if bp.name != name || bp.first_pgid != self.pgid {
            return Err(CHANGED);
        }
        self.bucket = Some(next);
        self.leaf = 0;
        Ok(())
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), BboltError> {
        let b = self.bucket.ok_or(BboltError::Stream("an entry before any bucket"))?;
        check_entry(key, value.len())?;
        self.arena.extend_from_slice(key);
        let kend = self.arena.len();
        self.arena.extend_from_slice(value);
        self.spans.push((kend, self.arena.len()));
        let want = self.plan.buckets[b].leaves.get(self.leaf).ok_or(CHANGED)?;
        if self.spans.len() == want.elems as usize {
            self.flush_leaf(b)?;
        }
        Ok(())
    }
}

/// The second pass: runs `feed` again (it must give the same data as for [`plan`]) and
/// writes the whole file to `out`, page after page.
pub fn write_planned<E: From<BboltError>>(
    plan: &Plan,
    feed: &mut dyn FnMut(&mut dyn BucketSink) -> Result<(), E>,
    out: &mut dyn Write,
) -> Result<(), E> {
    let ps = plan.page_size;
    let mut page = vec![0u8; ps];
    for txid in 0..2u64 {
        page.fill(0);
        PageHeader { id: txid, flags: META_PAGE, count: 0, overflow: 0 }.encode(&mut page);
        let meta = Meta {
            page_size: ps as u32,
            flags: 0,
            root: BucketHeader { root: ROOT_PGID, sequence: 0 },
            freelist: FREELIST_PGID,
            pgid: plan.pages,
            txid,
        };
        page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE].copy_from_slice(&meta.encode());
        out.write_all(&page).map_err(BboltError::from)?;
    }
    page.fill(0);
    PageHeader { id: FREELIST_PGID, flags: FREELIST_PAGE, count: 0, overflow: 0 }.encode(&mut page);
    out.write_all(&page).map_err(BboltError::from)?;

    let (headers, _) = plan.root_elems();
    let root: Vec<Elem<'_>> = plan
        .buckets
        .iter()
        .zip(&headers)
        .map(|(b, h)| Elem { flags: BUCKET_LEAF_FLAG, key: &b.name, value: h, child: 0 })
        .collect();
    let mut e = Emitter { plan, out, bucket: None, leaf: 0, arena: Vec::new(), spans: Vec::new(), page, pgid: ROOT_PGID };
    e.write_node(LEAF_PAGE, &root, plan.root_pages as u32)?;
    feed(&mut e)?;
    e.finish_bucket()?;
    if e.bucket.map_or(0, |b| b + 1) != plan.buckets.len() || e.pgid != plan.pages {
        return Err(CHANGED.into());
    }
    e.out.flush().map_err(BboltError::from)?;
    Ok(())
}
