//! A compact decimal trie for longest-prefix matching.
//!
//! Each node is 12 bytes: a 10-bit child bitmap, the index of its first child (children of a
//! node are contiguous, so the n-th present digit is `first_child + popcount(lower bits)`),
//! and a value. Nodes are laid out breadth-first so the top levels, which every lookup
//! visits, share cache lines. Built once from sorted keys, never mutated: a change builds a
//! new index.

/// Marks a node that ends no key.
pub const NO_VALUE: u32 = u32::MAX;

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
        // Breadth-first: (node, key range, depth).
        let mut queue = std::collections::VecDeque::new();
        queue.push_back((0_usize, 0_usize, keys.len(), 0_usize));
        while let Some((node, mut lo, hi, depth)) = queue.pop_front() {
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
                queue.push_back((nodes.len() - 1, i, j, depth + 1));
                i = j;
            }
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
    fn node_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 12);
    }
}
