//! A compact, path-compressed decimal trie for longest-prefix matching.
//!
//! Each node is 16 bytes: a 10-bit child bitmap, the index of its first child (children of a
//! node are contiguous, so the n-th present digit is `first_child + popcount(lower bits)`),
//! a value, and up to [`MAX_SKIP`] digits of a folded chain. Real decks end in long
//! single-child chains (number blocks down to 15 digits); folding them into the node that
//! ends them cuts the node count (and the cache misses of a lookup) by about half. Child
//! blocks are laid out depth-first, so a node's children follow closely after it. Built once
//! from sorted keys, never mutated: a change builds a new index.
//!
//! A walk first packs the number's digits into one 128-bit [`Key`], so that checking a folded
//! chain is one masked XOR and finding the next child a shift and a popcount, with no loop
//! over digits and few branches to mispredict.

use crate::huge::HugeArray;

/// Marks a node that ends no key.
pub const NO_VALUE: u32 = u32::MAX;

/// How many walks [`PrefixIndex::longest_many`] keeps in flight (measured on a 1M-row deck:
/// 32 gains some 12% over 16 per core; more gains nothing).
pub const LANES: usize = 32;

/// The longest key an index holds: a [`Key`] carries 32 digits.
pub const MAX_KEY_DIGITS: usize = 32;

/// The longest chain of digits folded into one node.
pub const MAX_SKIP: usize = 10;

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    first_child: u32,
    value: u32,
    /// Bits 0-9: the child bitmap. Bits 16-19: how many digits are folded into the node
    /// (they follow the edge into it and must match before its value or children apply; no
    /// key ends inside them). Bits 24-63: those digits, one [`Key`] nibble each, so a walk
    /// compares the whole chain with one masked XOR instead of digit by digit.
    packed: u64,
}

const CHILDREN_MASK: u64 = 0x3FF;
const SKIP_LEN_SHIFT: u32 = 16;
const SKIP_SHIFT: u32 = 24;

/// A dialed number's first 32 digits, one nibble each (digit `k` in bits `4k..4k+4`), stored
/// as `digit ^ 0xF` so that the zeros shifted in past its end never equal a digit: a chain
/// running past the number fails to match, and "the next digit" past its end is no digit.
/// No key is longer than 32 digits, so nothing past the 32nd digit can change a match.
type Key = u128;

/// The nibble meaning "no digit here" (past the number's end).
const NO_DIGIT: u32 = 0;

/// Packs digits (ASCII `0`-`9`; callers validate) into a [`Key`], eight at a time.
#[inline]
fn pack(digits: &[u8]) -> Key {
    // For an ASCII digit, `b ^ 0x3F` is `(b - b'0') ^ 0xF` with a zero high nibble.
    const FLIP: u64 = 0x3F3F_3F3F_3F3F_3F3F;
    let digits = &digits[..digits.len().min(MAX_KEY_DIGITS)];
    debug_assert!(digits.iter().all(u8::is_ascii_digit));
    let mut key: Key = 0;
    let mut chunks = digits.chunks_exact(8);
    let mut shift = 0;
    for chunk in &mut chunks {
        let bytes = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        key |= Key::from(nibbles(bytes ^ FLIP)) << shift;
        shift += 32;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut bytes = 0_u64;
        for (k, &b) in rest.iter().enumerate() {
            bytes |= u64::from(b ^ 0x3F) << (8 * k);
        }
        key |= Key::from(nibbles(bytes)) << shift;
    }
    key
}

/// Squeezes eight bytes, each below 16, into eight nibbles (byte `k` to nibble `k`).
#[inline(always)]
fn nibbles(x: u64) -> u32 {
    let x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    let x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    ((x | (x >> 16)) & 0xFFFF_FFFF) as u32
}

/// The nibbles of `key` from digit `at` on (zeros past the end).
#[inline(always)]
fn window(key: Key, at: u32) -> u64 {
    key.checked_shr(4 * at).unwrap_or(0) as u64
}

impl Node {
    const EMPTY: Node = Node {
        first_child: 0,
        value: NO_VALUE,
        packed: 0,
    };

    fn with_skip(digits: &[u8]) -> Node {
        debug_assert!(digits.len() <= MAX_SKIP);
        let mut skip = 0_u64;
        for (k, d) in digits.iter().enumerate() {
            skip |= u64::from((d - b'0') ^ 0xF) << (4 * k);
        }
        Node {
            first_child: 0,
            value: NO_VALUE,
            packed: (digits.len() as u64) << SKIP_LEN_SHIFT | skip << SKIP_SHIFT,
        }
    }

    #[inline(always)]
    fn children(&self) -> u32 {
        (self.packed & CHILDREN_MASK) as u32
    }

    #[inline(always)]
    fn skip_len(&self) -> u32 {
        ((self.packed >> SKIP_LEN_SHIFT) & 0xF) as u32
    }

    fn skip_digit(&self, k: usize) -> u8 {
        b'0' + ((((self.packed >> SKIP_SHIFT) >> (4 * k)) & 0xF) as u8 ^ 0xF)
    }

    /// Examines this node for a walk of `key` that reached it with the edge digit before
    /// `at`: whether its chain matches, the depth after the chain, and the index of the child
    /// for the digit there (if the chain matches and that child exists).
    #[inline(always)]
    fn visit(&self, key: Key, at: u32) -> (bool, u32, Option<u32>) {
        let len = self.skip_len();
        let mask = (1_u64 << (4 * len)) - 1;
        let matches = (window(key, at) ^ (self.packed >> SKIP_SHIFT)) & mask == 0;
        let here = at + len;
        let nibble = (window(key, here) & 0xF) as u32;
        // The bit for "no digit" (nibble 0, so 0xF) lies outside the 10-bit child map.
        let bit = 1_u32 << (nibble ^ 0xF);
        let children = self.children();
        let child = (matches && nibble != NO_DIGIT && children & bit != 0)
            .then(|| self.first_child + (children & (bit - 1)).count_ones());
        (matches, here, child)
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

/// An immutable prefix index from digit strings to `u32` values.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    nodes: HugeArray<Node>,
}

impl PrefixIndex {
    /// Builds from keys (ASCII digit strings) sorted ascending and unique, with their values.
    pub fn build(keys: &[&[u8]], values: &[u32]) -> Self {
        debug_assert_eq!(keys.len(), values.len());
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(
            keys.iter().all(|k| k.len() <= MAX_KEY_DIGITS),
            "keys are at most {MAX_KEY_DIGITS} digits"
        );
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
            nodes[node].packed |= u64::from(children);
            nodes[node].first_child = u32::try_from(first).expect("more than 4G trie nodes");
        }
        Self {
            nodes: HugeArray::new(&nodes),
        }
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
        // The keys on the path are collected first and offered to `accept` deepest first:
        // the deepest usually applies, so one `accept` (a dated rate's window: a read that
        // may miss the cache) is paid instead of one per key on the path.
        let mut found = [(0_usize, 0_u32); MAX_KEY_DIGITS + 1];
        let mut count = 0;
        self.walk(digits, |len, value| {
            found[count] = (len, value);
            count += 1;
        });
        found[..count]
            .iter()
            .rev()
            .find_map(|&(len, value)| accept(value).map(|v| (len, v)))
    }

    /// Calls `key(length, value)` for every key that prefixes `digits`, shortest first.
    #[inline]
    fn walk(&self, digits: &[u8], mut key: impl FnMut(usize, u32)) {
        let packed = pack(digits);
        let mut index = 0_u32;
        let mut at = 0_u32;
        loop {
            let node = &self.nodes[index as usize];
            let (matches, here, child) = node.visit(packed, at);
            if !matches {
                return;
            }
            if node.value != NO_VALUE {
                key(here as usize, node.value);
            }
            match child {
                Some(next) => {
                    index = next;
                    at = here + 1;
                }
                None => return,
            }
        }
    }

    /// [`Self::longest`] for the inputs `get(0..count)`, each answer handed to
    /// `found(i, answer)` as soon as it is known (not in input order).
    ///
    /// [`LANES`] walks are kept in flight: each round advances every lane by one node and
    /// only *prefetches* the next one, so the processor overlaps the cache misses of all
    /// lanes instead of waiting for each in turn, and a lane whose walk ends takes the next
    /// input at once. On a deck larger than the cache this is several times faster than one
    /// walk after another.
    pub fn longest_many<'a, G, F, W>(&self, count: usize, get: G, accept: F, mut found: W)
    where
        G: Fn(usize) -> &'a [u8],
        F: Fn(usize, u32) -> Option<u32>,
        W: FnMut(usize, Option<(usize, u32)>),
    {
        const IDLE: usize = usize::MAX;
        let mut input = [IDLE; LANES];
        let mut key = [0 as Key; LANES];
        let mut node = [0_u32; LANES];
        let mut at = [0_u32; LANES];
        let mut best: [Option<(usize, u32)>; LANES] = [None; LANES];
        let mut next = 0;
        for lane in 0..LANES.min(count) {
            input[lane] = next;
            key[lane] = pack(get(next));
            next += 1;
        }
        let mut busy = LANES.min(count);
        while busy > 0 {
            for lane in 0..LANES {
                if input[lane] == IDLE {
                    continue;
                }
                let current = &self.nodes[node[lane] as usize];
                let (matches, here, child) = current.visit(key[lane], at[lane]);
                if matches && current.value != NO_VALUE {
                    if let Some(value) = accept(input[lane], current.value) {
                        best[lane] = Some((here as usize, value));
                    }
                }
                if let Some(index) = child {
                    prefetch(&self.nodes[index as usize]);
                    node[lane] = index;
                    at[lane] = here + 1;
                    continue;
                }
                found(input[lane], best[lane]);
                best[lane] = None;
                node[lane] = 0;
                at[lane] = 0;
                if next < count {
                    input[lane] = next;
                    key[lane] = pack(get(next));
                    next += 1;
                } else {
                    input[lane] = IDLE;
                    busy -= 1;
                }
            }
        }
    }

    /// Every key that prefixes `digits`, longest first, as (length, value).
    pub fn all_prefixes(&self, digits: &[u8]) -> Vec<(usize, u32)> {
        let mut found = Vec::new();
        self.walk(digits, |len, value| found.push((len, value)));
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
        path.extend((0..node.skip_len() as usize).map(|k| node.skip_digit(k)));
        if node.value != NO_VALUE {
            out.push((path.clone(), node.value));
        }
        let mut child = node.first_child as usize;
        for digit in 0..10_u8 {
            if node.children() & (1 << digit) != 0 {
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
        self.nodes.bytes()
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
        let mut out = vec![Some((99, 99)); inputs.len()];
        idx.longest_many(
            inputs.len(),
            |i| inputs[i],
            |_, v| (v != 3).then_some(v),
            |i, f| out[i] = f,
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
