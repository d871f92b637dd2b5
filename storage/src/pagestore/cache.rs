//! Decoded committed nodes, by first page, shared by the writer and the views of one file.
//!
//! Committed nodes never change in place, so a cached node is right for as long as its
//! pages are not reused. Pages are reused only by a commit, which [`NodeCache::forget`]s
//! every page it allocates before writing it. No reader can be reading such a page then:
//! a page is reallocated only once no open state reaches it (the freelist's pending
//! rule), so no stale node can be put back after the commit forgot it.
//!
//! Bounded by a number of nodes; when full it is emptied (cheap, and the branches that
//! matter most come back at the next reads).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::page::{DiskNode, PageId, Span};

/// Nodes kept (about 64 MiB of full one-page leaves).
const CAPACITY: usize = 16 * 1024;

/// The cache (module docs).
#[derive(Default)]
pub(crate) struct NodeCache {
    /// First page → (pages, node). A leaf lock.
    nodes: Mutex<HashMap<PageId, (u32, Arc<DiskNode>)>>,
}

impl NodeCache {
    /// The node stored in `span`, if cached.
    pub(crate) fn get(&self, span: Span) -> Option<Arc<DiskNode>> {
        match self.nodes.lock().get(&span.start) {
            Some((pages, node)) if *pages == span.pages => Some(node.clone()),
            _ => None,
        }
    }

    /// Remembers the node read from `span`.
    pub(crate) fn insert(&self, span: Span, node: Arc<DiskNode>) {
        let mut nodes = self.nodes.lock();
        if nodes.len() >= CAPACITY {
            nodes.clear();
        }
        nodes.insert(span.start, (span.pages, node));
    }

    /// Forgets whatever started at pages `start .. start + n` (they are being rewritten).
    pub(crate) fn forget(&self, start: PageId, n: u64) {
        let mut nodes = self.nodes.lock();
        if nodes.is_empty() {
            return;
        }
        for p in start..start + n {
            nodes.remove(&p);
        }
    }
}
