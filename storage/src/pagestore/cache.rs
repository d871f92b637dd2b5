//! Decoded committed nodes, by first page, shared by the writer and the views of one file.
//!
//! Committed nodes never change in place, so a cached node is right for as long as its
//! pages are not reused. Pages are reused only by a commit, which [`NodeCache::forget`]s
//! every page it allocates before writing it. No reader can be reading such a page then:
//! a page is reallocated only once no open state reaches it (the freelist's pending
//! rule), so no stale node can be put back after the commit forgot it.
//!
//! Bounded by the pages its nodes span (a node of a large value spans many); when full it
//! is emptied (cheap, and the branches that matter most come back at the next reads).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::page::{DiskNode, PageId, Span};

/// Pages the cached nodes may span (64 MiB of 4 KiB pages).
const CAPACITY_PAGES: u64 = 16 * 1024;

/// The cache (module docs).
#[derive(Default)]
pub(crate) struct NodeCache {
    /// The nodes and the pages they span. A leaf lock.
    nodes: Mutex<Nodes>,
}

#[derive(Default)]
struct Nodes {
    /// First page → (pages, node).
    by_start: HashMap<PageId, (u32, Arc<DiskNode>)>,
    /// The sum of the pages of `by_start`'s nodes.
    pages: u64,
}

impl NodeCache {
    /// The node stored in `span`, if cached.
    pub(crate) fn get(&self, span: Span) -> Option<Arc<DiskNode>> {
        match self.nodes.lock().by_start.get(&span.start) {
            Some((pages, node)) if *pages == span.pages => Some(node.clone()),
            _ => None,
        }
    }

    /// Remembers the node read from `span`.
    pub(crate) fn insert(&self, span: Span, node: Arc<DiskNode>) {
        let mut nodes = self.nodes.lock();
        if nodes.pages + u64::from(span.pages) > CAPACITY_PAGES {
            nodes.by_start.clear();
            nodes.pages = 0;
        }
        if let Some((old, _)) = nodes.by_start.insert(span.start, (span.pages, node)) {
            nodes.pages -= u64::from(old);
        }
        nodes.pages += u64::from(span.pages);
    }

    /// How many nodes are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.lock().by_start.len()
    }

    /// Forgets whatever started at pages `start .. start + n` (they are being rewritten).
    pub(crate) fn forget(&self, start: PageId, n: u64) {
        let mut nodes = self.nodes.lock();
        if nodes.by_start.is_empty() {
            return;
        }
        for p in start..start + n {
            if let Some((pages, _)) = nodes.by_start.remove(&p) {
                nodes.pages -= u64::from(pages);
            }
        }
    }
}
