//! The reference freelist: free spans in a vector sorted by start page. Allocation scans
//! every span (O(n)); a free inserts and merges by shifting (O(n)). It is what bbolt's
//! array freelist costs, and the model the segregated freelist is tested against.

use super::FreeSpans;

/// Free spans as a sorted vector of `(start, pages)`, always merged.
#[derive(Default)]
pub struct LinearSpans {
    spans: Vec<(u64, u64)>,
    free: u64,
}

impl FreeSpans for LinearSpans {
    fn allocate(&mut self, n: u64) -> Option<u64> {
        // best fit, lowest start among equals: the first strictly better one wins
        let mut best: Option<usize> = None;
        for (i, &(_, len)) in self.spans.iter().enumerate() {
            if len >= n && best.is_none_or(|b| len < self.spans[b].1) {
                best = Some(i);
            }
        }
        let i = best?;
        let (start, len) = self.spans[i];
        if len == n {
            self.spans.remove(i);
        } else {
            self.spans[i] = (start + n, len - n);
        }
        self.free -= n;
        Some(start)
    }

    fn free(&mut self, start: u64, n: u64) {
        let i = self.spans.partition_point(|&(s, _)| s < start);
        let merge_left = i > 0 && self.spans[i - 1].0 + self.spans[i - 1].1 == start;
        let merge_right = i < self.spans.len() && start + n == self.spans[i].0;
        match (merge_left, merge_right) {
            (true, true) => {
                self.spans[i - 1].1 += n + self.spans[i].1;
                self.spans.remove(i);
            }
            (true, false) => self.spans[i - 1].1 += n,
            (false, true) => self.spans[i] = (start, n + self.spans[i].1),
            (false, false) => self.spans.insert(i, (start, n)),
        }
        self.free += n;
    }

    fn free_pages(&self) -> u64 {
        self.free
    }

    #[cfg(test)]
    fn spans(&self) -> Vec<(u64, u64)> {
        self.spans.clone()
    }
}
