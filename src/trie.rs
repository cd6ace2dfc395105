//! A compact, path-compressed decimal trie for longest-prefix matching.
//!
//! Each node is 16 bytes: a 10-bit child bitmap, the index of its first child (children of a
//! node are contiguous, so the n-th present digit is `first_child + popcount(lower bits)`),
//! a value, and up to [`MAX_SKIP`] digits of a folded chain. Real decks end in long
//! single-child chains (number blocks down to 15 digits); folding them into the node that
//! ends them cuts the node count (and the cache misses of a lookup) by about half. Child
//! blocks are laid out depth-first, so a node's children follow closely after it. Built once
//! from sorted keys, never mutated: a change builds a new index.

/// Marks a node that ends no key.
pub const NO_VALUE: u32 = u32::MAX;

/// How many walks [`PrefixIndex::longest_many`] interleaves.
pub const LANES: usize = 16;

/// The longest chain of digits folded into one node.
pub const MAX_SKIP: usize = 10;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    first_child: u32,
    value: u32,
    children: u16,
    /// Digits (packed two per byte) that follow the edge into this node and must match
    /// before its value or children apply; no key ends inside them.
    skip_len: u8,
    skip: [u8; MAX_SKIP / 2],
}

impl Node {
    const EMPTY: Node = Node {
        first_child: 0,
        value: NO_VALUE,
        children: 0,
        skip_len: 0,
        skip: [0; MAX_SKIP / 2],
    };

    fn with_skip(digits: &[u8]) -> Node {
        let mut node = Node::EMPTY;
        node.skip_len = digits.len() as u8;
        for (k, d) in digits.iter().enumerate() {
            node.skip[k / 2] |= (d - b'0') << ((k % 2) * 4);
        }
        node
    }

    #[inline]
    fn skip_digit(&self, k: usize) -> u8 {
        b'0' + ((self.skip[k / 2] >> ((k % 2) * 4)) & 0xF)
    }

    /// Whether `digits[at..]` starts with this node's folded chain.
    #[inline]
    fn skip_matches(&self, digits: &[u8], at: usize) -> bool {
        let len = self.skip_len as usize;
        if len == 0 {
            return true;
        }
        match digits.get(at..at + len) {
            Some(part) => part
                .iter()
                .enumerate()
                .all(|(k, &d)| d == self.skip_digit(k)),
            None => false,
        }
    }
}

/// Asks the processor to start loading `node` into the cache; a hint, never a fault.
#[inline(always)]
fn prefetch(node: &Node) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `node` is a valid reference; a prefetch reads nothing architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch(
            std::ptr::from_ref(node).cast::<i8>(),
            std::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = node;
}

/// Moves a large node array onto 2 MiB pages where the kernel allows it.
///
/// A lookup touches a handful of nodes scattered over tens of megabytes; with 4 KiB pages
/// nearly each of them also misses the TLB. Linux only hands out huge pages to regions that
/// ask (`madvise`), and only when they are first touched, so the array is copied into a
/// fresh, advised allocation. Elsewhere, or if the kernel says no, nothing changes.
fn on_huge_pages(nodes: Vec<Node>) -> Vec<Node> {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = nodes.len() * std::mem::size_of::<Node>();
        if bytes < 2 * HUGE {
            return nodes;
        }
        let mut moved: Vec<Node> = Vec::with_capacity(nodes.len());
        let begin = moved.as_mut_ptr() as usize;
        let start = (begin + HUGE - 1) & !(HUGE - 1);
        let end = (begin + bytes) & !(HUGE - 1);
        if end > start {
            // SAFETY: the range lies inside `moved`'s allocation, which we own; MADV_HUGEPAGE
            // is advice on how to back it and changes no contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
        moved.extend_from_slice(&nodes);
        moved
    }
    #[cfg(not(target_os = "linux"))]
    {
        nodes
    }
}

/// An immutable prefix index from digit strings to `u32` values.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    nodes: Vec<Node>,
}

impl PrefixIndex {
    /// Builds from keys (ASCII digit strings) sorted ascending and unique, with their values.
    pub fn build(keys: &[&[u8]], values: &[u32]) -> Self {
        debug_assert_eq!(keys.len(), values.len());
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let mut nodes = vec![Node::EMPTY];
        // Depth-first (a stack): (node, key range, depth after the node's chain).
        let mut stack = vec![(0_usize, 0_usize, keys.len(), 0_usize)];
        let mut block = Vec::new();
        while let Some((node, mut lo, hi, depth)) = stack.pop() {
            if lo < hi && keys[lo].len() == depth {
                nodes[node].value = values[lo];
                lo += 1;
            }
            let first = nodes.len();
            let mut children = 0_u16;
            let mut i = lo;
            while i < hi {
                let digit = keys[i][depth];
                let mut j = i + 1;
                while j < hi && keys[j][depth] == digit {
                    j += 1;
                }
                children |= 1 << (digit - b'0');
                // Fold the chain below the edge while no key ends in it and it does not
                // branch (sorted keys: the first and last of the range agree on the digit).
                let mut end = depth + 1;
                while end - depth - 1 < MAX_SKIP
                    && keys[i].len() > end
                    && keys[i][end] == keys[j - 1][end]
                {
                    end += 1;
                }
                nodes.push(Node::with_skip(&keys[i][depth + 1..end]));
                block.push((nodes.len() - 1, i, j, end));
                i = j;
            }
            // The first child is expanded next, so its block lands right after this one.
            stack.extend(block.drain(..).rev());
            nodes[node].children = children;
            nodes[node].first_child = u32::try_from(first).expect("more than 4G trie nodes");
        }
        Self {
            nodes: on_huge_pages(nodes),
        }
    }

    /// The child of `node` for the digit at `digits[depth]` whose chain matches, with the
    /// depth after it.
    #[inline]
    fn step(&self, node: &Node, digits: &[u8], depth: usize) -> Option<(u32, usize)> {
        let c = *digits.get(depth)?;
        let bit = 1_u16 << (c - b'0');
        if node.children & bit == 0 {
            return None;
        }
        let index = node.first_child + (node.children & (bit - 1)).count_ones();
        let child = &self.nodes[index as usize];
        if !child.skip_matches(digits, depth + 1) {
            return None;
        }
        Some((index, depth + 1 + child.skip_len as usize))
    }

    /// The longest key that prefixes `digits` and whose value `accept` maps to `Some`, as
    /// (length, mapped value). `accept` lets the caller skip keys that exist but do not apply
    /// (a rate not in force), so a shorter key can match instead.
    #[inline]
    pub fn longest<F: Fn(u32) -> Option<u32>>(
        &self,
        digits: &[u8],
        accept: F,
    ) -> Option<(usize, u32)> {
        let mut node = &self.nodes[0];
        let mut depth = 0;
        let mut best = None;
        loop {
            if node.value != NO_VALUE {
                if let Some(found) = accept(node.value) {
                    best = Some((depth, found));
                }
            }
            match self.step(node, digits, depth) {
                Some((index, next)) => {
                    node = &self.nodes[index as usize];
                    depth = next;
                }
                None => return best,
            }
        }
    }

    /// [`Self::longest`] for many inputs at once, written into `out` (cleared first).
    ///
    /// The walks of [`LANES`] inputs advance in lock-step, one node each per round, so the
    /// processor overlaps their cache misses instead of waiting for each in turn: on a deck
    /// larger than the cache this is several times faster than one walk after another.
    pub fn longest_many<'a, G, F>(
        &self,
        count: usize,
        get: G,
        accept: F,
        out: &mut Vec<Option<(usize, u32)>>,
    ) where
        G: Fn(usize) -> &'a [u8],
        F: Fn(usize, u32) -> Option<u32>,
    {
        out.clear();
        out.resize(count, None);
        let mut start = 0;
        while start < count {
            let lanes = LANES.min(count - start);
            // Each lane holds the node it will examine next round (its chain not yet checked)
            // and the position just past the edge digit that led to it. A round examines
            // the node, then only *prefetches* the child, so the misses of all lanes are in
            // flight together instead of one after another.
            let mut node = [0_u32; LANES];
            let mut depth = [0_usize; LANES];
            let mut digits: [&[u8]; LANES] = [&[]; LANES];
            let mut alive = [false; LANES];
            for lane in 0..lanes {
                digits[lane] = get(start + lane);
                alive[lane] = true;
            }
            loop {
                let mut moved = false;
                for lane in 0..lanes {
                    if !alive[lane] {
                        continue;
                    }
                    let current = &self.nodes[node[lane] as usize];
                    let d = digits[lane];
                    if !current.skip_matches(d, depth[lane]) {
                        alive[lane] = false;
                        continue;
                    }
                    let here = depth[lane] + current.skip_len as usize;
                    if current.value != NO_VALUE {
                        if let Some(found) = accept(start + lane, current.value) {
                            out[start + lane] = Some((here, found));
                        }
                    }
                    let next = d.get(here).and_then(|&c| {
                        let bit = 1_u16 << (c - b'0');
                        (current.children & bit != 0).then(|| {
                            current.first_child + (current.children & (bit - 1)).count_ones()
                        })
                    });
                    match next {
                        Some(index) => {
                            prefetch(&self.nodes[index as usize]);
                            node[lane] = index;
                            depth[lane] = here + 1;
                            moved = true;
                        }
                        None => alive[lane] = false,
                    }
                }
                if !moved {
                    break;
                }
            }
            start += lanes;
        }
    }

    /// Every key that prefixes `digits`, longest first, as (length, value).
    pub fn all_prefixes(&self, digits: &[u8]) -> Vec<(usize, u32)> {
        let mut found = Vec::new();
        let mut node = &self.nodes[0];
        let mut depth = 0;
        loop {
            if node.value != NO_VALUE {
                found.push((depth, node.value));
            }
            match self.step(node, digits, depth) {
                Some((index, next)) => {
                    node = &self.nodes[index as usize];
                    depth = next;
                }
                None => break,
            }
        }
        found.reverse();
        found
    }

    /// Every (key, value) pair, keys ascending.
    pub fn entries(&self) -> Vec<(Vec<u8>, u32)> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.collect(0, &mut path, &mut out);
        out
    }

    fn collect(&self, index: usize, path: &mut Vec<u8>, out: &mut Vec<(Vec<u8>, u32)>) {
        let node = self.nodes[index];
        let before = path.len();
        path.extend((0..node.skip_len as usize).map(|k| node.skip_digit(k)));
        if node.value != NO_VALUE {
            out.push((path.clone(), node.value));
        }
        let mut child = node.first_child as usize;
        for digit in 0..10_u8 {
            if node.children & (1 << digit) != 0 {
                path.push(b'0' + digit);
                self.collect(child, path, out);
                path.pop();
                child += 1;
            }
        }
        path.truncate(before);
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(keys: &[&str]) -> PrefixIndex {
        let mut sorted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        sorted.sort();
        let values: Vec<u32> = sorted
            .iter()
            .map(|k| keys.iter().position(|x| x.as_bytes() == *k).unwrap() as u32)
            .collect();
        PrefixIndex::build(&sorted, &values)
    }

    #[test]
    fn longest_prefix_wins() {
        let idx = index(&["44", "447", "4479", "1", ""]);
        assert_eq!(idx.longest(b"447912", Some), Some((4, 2)));
        assert_eq!(idx.longest(b"4470", Some), Some((3, 1)));
        assert_eq!(idx.longest(b"4412", Some), Some((2, 0)));
        assert_eq!(idx.longest(b"33", Some), Some((0, 4)));
        assert_eq!(idx.longest(b"", Some), Some((0, 4)));
        let keys: Vec<Vec<u8>> = idx.entries().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                b"".to_vec(),
                b"1".to_vec(),
                b"44".to_vec(),
                b"447".to_vec(),
                b"4479".to_vec()
            ]
        );
    }

    #[test]
    fn rejected_values_fall_back_to_shorter_keys() {
        let idx = index(&["44", "447", "4479"]);
        assert_eq!(
            idx.longest(b"447912", |v| (v != 2).then_some(v)),
            Some((3, 1))
        );
        assert_eq!(
            idx.longest(b"447912", |v| (v == 0).then_some(v + 7)),
            Some((2, 7))
        );
        assert_eq!(idx.longest(b"33", Some), None);
    }

    #[test]
    fn all_prefixes_longest_first() {
        let idx = index(&["4", "44", "4479"]);
        assert_eq!(idx.all_prefixes(b"44791"), vec![(4, 2), (2, 1), (1, 0)]);
    }

    #[test]
    fn batch_walks_agree_with_single_walks() {
        let idx = index(&["", "4", "44", "447", "4479", "1", "12345678901234"]);
        let inputs: Vec<&[u8]> = vec![
            b"447912",
            b"4470",
            b"33",
            b"",
            b"12345678901234567",
            b"1234",
            b"4",
            b"44",
            b"447912",
            b"4470",
            b"33",
            b"",
            b"12345678901234567",
            b"1234",
            b"4",
            b"44",
            b"9",
            b"4479",
        ];
        let mut out = Vec::new();
        idx.longest_many(
            inputs.len(),
            |i| inputs[i],
            |_, v| (v != 3).then_some(v),
            &mut out,
        );
        let expected: Vec<_> = inputs
            .iter()
            .map(|d| idx.longest(d, |v| (v != 3).then_some(v)))
            .collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn chains_are_folded_and_still_match_digit_by_digit() {
        let keys = ["", "12345678901234", "1234567890123456789", "1234567", "9"];
        let idx = index(&keys);
        // root, "1" (folds "23456" up to the value at "1234567"), "8..." chain, "9".
        assert!(idx.node_count() < 12, "{}", idx.node_count());
        assert_eq!(idx.longest(b"123456", Some), Some((0, 0)));
        assert_eq!(idx.longest(b"1234567", Some), Some((7, 3)));
        assert_eq!(idx.longest(b"12345678901233", Some), Some((7, 3)));
        assert_eq!(idx.longest(b"12345678901234", Some), Some((14, 1)));
        assert_eq!(idx.longest(b"123456789012345678", Some), Some((14, 1)));
        assert_eq!(idx.longest(b"12345678901234567890", Some), Some((19, 2)));
        assert_eq!(
            idx.all_prefixes(b"12345678901234567890"),
            vec![(19, 2), (14, 1), (7, 3), (0, 0)]
        );
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort_unstable();
        let listed: Vec<String> = idx
            .entries()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect();
        assert_eq!(listed, sorted);
    }

    #[test]
    fn node_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }
}
