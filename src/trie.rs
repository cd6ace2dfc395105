//! A compact decimal trie for longest-prefix matching.
//!
//! Each node is 12 bytes: a 10-bit child bitmap, the index of its first child (children of a
//! node are contiguous, so the n-th present digit is `first_child + popcount(lower bits)`),
//! and a value. Child blocks are laid out depth-first: a node's children follow closely
//! after it, so the long single-child chains of real decks (number blocks down to 15
//! digits) sit in one or two cache lines instead of one line per digit. Built once from
//! sorted keys, never mutated: a change builds a new index.

/// Marks a node that ends no key.
pub const NO_VALUE: u32 = u32::MAX;

/// How many walks [`PrefixIndex::longest_many`] interleaves.
pub const LANES: usize = 16;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    first_child: u32,
    value: u32,
    children: u16,
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
        let mut nodes = vec![Node {
            first_child: 0,
            value: NO_VALUE,
            children: 0,
        }];
        // Depth-first (a stack): (node, key range, depth).
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
                nodes.push(Node {
                    first_child: 0,
                    value: NO_VALUE,
                    children: 0,
                });
                block.push((nodes.len() - 1, i, j, depth + 1));
                i = j;
            }
            // The first child is expanded next, so its block lands right after this one.
            stack.extend(block.drain(..).rev());
            nodes[node].children = children;
            nodes[node].first_child = u32::try_from(first).expect("more than 4G trie nodes");
        }
        Self { nodes }
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
        let mut best = None;
        if node.value != NO_VALUE {
            if let Some(found) = accept(node.value) {
                best = Some((0, found));
            }
        }
        for (depth, &c) in digits.iter().enumerate() {
            let bit = 1_u16 << (c - b'0');
            if node.children & bit == 0 {
                break;
            }
            let index = node.first_child + (node.children & (bit - 1)).count_ones();
            node = &self.nodes[index as usize];
            if node.value != NO_VALUE {
                if let Some(found) = accept(node.value) {
                    best = Some((depth + 1, found));
                }
            }
        }
        best
    }

    /// [`Self::longest`] for many inputs at once, written into `out` (cleared first).
    ///
    /// The walks of [`LANES`] inputs advance in lock-step, one digit each per round, so the
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
        let root = &self.nodes[0];
        let mut start = 0;
        while start < count {
            let lanes = LANES.min(count - start);
            let mut node = [0_u32; LANES];
            let mut depth = [0_usize; LANES];
            let mut digits: [&[u8]; LANES] = [&[]; LANES];
            let mut alive = [false; LANES];
            for lane in 0..lanes {
                let i = start + lane;
                digits[lane] = get(i);
                alive[lane] = true;
                if root.value != NO_VALUE {
                    if let Some(found) = accept(i, root.value) {
                        out[i] = Some((0, found));
                    }
                }
            }
            loop {
                let mut moved = false;
                for lane in 0..lanes {
                    if !alive[lane] {
                        continue;
                    }
                    let d = depth[lane];
                    let Some(&c) = digits[lane].get(d) else {
                        alive[lane] = false;
                        continue;
                    };
                    let current = &self.nodes[node[lane] as usize];
                    let bit = 1_u16 << (c - b'0');
                    if current.children & bit == 0 {
                        alive[lane] = false;
                        continue;
                    }
                    let index = current.first_child + (current.children & (bit - 1)).count_ones();
                    node[lane] = index;
                    depth[lane] = d + 1;
                    let child = &self.nodes[index as usize];
                    if child.value != NO_VALUE {
                        if let Some(found) = accept(start + lane, child.value) {
                            out[start + lane] = Some((d + 1, found));
                        }
                    }
                    moved = true;
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
        if node.value != NO_VALUE {
            found.push((0, node.value));
        }
        for (depth, &c) in digits.iter().enumerate() {
            let bit = 1_u16 << (c - b'0');
            if node.children & bit == 0 {
                break;
            }
            node =
                &self.nodes[(node.first_child + (node.children & (bit - 1)).count_ones()) as usize];
            if node.value != NO_VALUE {
                found.push((depth + 1, node.value));
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
    fn node_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 12);
    }
}
