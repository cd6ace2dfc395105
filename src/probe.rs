//! A hash table of a deck's prefixes, for one lookup at a time.
//!
//! A trie walk is a chain of dependent loads: each node's address comes out of the node
//! before it. On a deck larger than the cache the deep nodes miss, one after another, and a
//! single lookup waits for each miss in turn (some 5 on the 317k real E.164 prefixes).
//! Batches hide that by keeping many walks in flight ([`crate::trie::PrefixIndex::longest_many`]);
//! one lookup cannot. Here the prefix lengths the deck has are probed in one table, many at
//! once: their slots are computed from the number alone, prefetched together, and then
//! checked longest first, so the misses overlap and a lookup costs about one memory latency
//! instead of several (two when its longest match is shorter than the deck's usual prefixes,
//! which are probed first; see `ProbeIndex::deep`).
//!
//! Keys are up to [`MAX_PROBE_DIGITS`] digits, one nibble each as `digit ^ 0xF` (so never
//! zero; see [`crate::trie`]): the nibbles of a prefix of `l` digits are unique to it and to
//! its length, and a slot holding key 0 is empty. A deck with a longer prefix has no probe
//! index and is walked instead.

use crate::huge::HugeArray;

/// The longest key a probe index holds: sixteen nibbles fill a `u64`.
pub const MAX_PROBE_DIGITS: usize = 16;

/// How many lookups [`ProbeIndex::longest_many`] keeps in flight.
pub const AHEAD: usize = 16;

/// Slots per bucket: a key is looked for in its home bucket's slots, a cache line, at once.
const BUCKET: usize = 4;

/// The share of keys, in percent, that the deep lengths hold (see `ProbeIndex::deep`).
pub const DEEP_SHARE: usize = 90;

/// A slot: a key and its value; 16 bytes, four to a cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Slot {
    key: u64,
    value: u32,
}

const EMPTY: Slot = Slot { key: 0, value: 0 };

/// The prefixes of a deck (keys of 1 to 16 digits) in one open-addressing table.
#[derive(Debug, Clone)]
pub struct ProbeIndex {
    /// On huge pages, as a lookup's probes land all over it (see [`HugeArray`]).
    slots: HugeArray<Slot>,
    /// `64 - log2(slots.len())`: the hash is the top bits of a multiplication.
    shift: u32,
    /// Bit `l` set: some key has `l` digits (1..=16). Lengths no key has are not probed.
    lengths: u32,
    /// The deep lengths: the longest ones that together hold [`DEEP_SHARE`] of the keys.
    /// A number most often matches a key of one of them, so they are probed first and the
    /// shallow ones (one more memory latency) only when none of them matches: fewer cache
    /// lines per lookup than probing every length, which a batch, bound by the memory's
    /// bandwidth, gains from.
    deep: u32,
    /// Per number start of [`HEAD_DIGITS`] digits (as an integer), the lengths of the keys
    /// that can prefix a number so starting: those that start with it and those it starts
    /// with. Small enough to stay in cache, it spares a lookup the probes of lengths that no
    /// key under its start has.
    heads: Box<[u32]>,
    /// The value of the empty prefix, if the deck has one.
    root: Option<u32>,
}

/// How many leading digits select a number's entry in `ProbeIndex::heads`.
pub const HEAD_DIGITS: usize = 4;

/// The first [`HEAD_DIGITS`] of `digits` (at least that many ASCII digits) as an integer.
#[inline(always)]
fn head_of(digits: &[u8]) -> usize {
    digits[..HEAD_DIGITS]
        .iter()
        .fold(0, |n, &d| n * 10 + usize::from(d - b'0'))
}

/// The first [`MAX_PROBE_DIGITS`] digits of `digits` as nibbles (`digit ^ 0xF`, digit `k` in
/// bits `4k..4k+4`, zero past the end). Callers pass ASCII digits.
#[inline]
pub fn head_key(digits: &[u8]) -> u64 {
    // For an ASCII digit, `b ^ 0x3F` is `(b - b'0') ^ 0xF` with a zero high nibble.
    const FLIP: u64 = 0x3F3F_3F3F_3F3F_3F3F;
    let digits = &digits[..digits.len().min(MAX_PROBE_DIGITS)];
    debug_assert!(digits.iter().all(u8::is_ascii_digit));
    let mut key = 0_u64;
    let mut shift = 0;
    let mut chunks = digits.chunks_exact(8);
    for chunk in &mut chunks {
        let bytes = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        key |= u64::from(nibbles(bytes ^ FLIP)) << shift;
        shift += 32;
    }
    let mut bytes = 0_u64;
    for (k, &b) in chunks.remainder().iter().enumerate() {
        bytes |= u64::from(b ^ 0x3F) << (8 * k);
    }
    key | u64::from(nibbles(bytes)).checked_shl(shift).unwrap_or(0)
}

/// Squeezes eight bytes, each below 16, into eight nibbles (byte `k` to nibble `k`).
#[inline(always)]
fn nibbles(x: u64) -> u32 {
    let x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    let x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    ((x | (x >> 16)) & 0xFFFF_FFFF) as u32
}

/// The key of the first `len` digits of a [`head_key`] (`1 <= len <= 16`).
#[inline(always)]
fn prefix_key(head: u64, len: u32) -> u64 {
    head & (u64::MAX >> (64 - 4 * len))
}

impl ProbeIndex {
    /// Builds from keys (ASCII digit strings, unique) and their values; `None` if a key is
    /// longer than [`MAX_PROBE_DIGITS`].
    pub fn build(keys: &[&[u8]], values: &[u32]) -> Option<Self> {
        debug_assert_eq!(keys.len(), values.len());
        if keys.iter().any(|k| k.len() > MAX_PROBE_DIGITS) {
            return None;
        }
        // A third to two thirds full: a probe for a length with no key (most lengths, for
        // most numbers) stops at the first empty slot, nearly always in the line it loaded.
        let bits = (keys.len() + keys.len() / 2)
            .max(8)
            .next_power_of_two()
            .trailing_zeros();
        let shift = 64 - (bits - BUCKET.trailing_zeros());
        let mut slots = vec![EMPTY; 1 << bits];
        let buckets = slots.len() / BUCKET - 1;
        let mut lengths = 0;
        let mut root = None;
        let mut per_length = [0_usize; MAX_PROBE_DIGITS + 1];
        for (key, &value) in keys.iter().zip(values) {
            if key.is_empty() {
                root = Some(value);
                continue;
            }
            lengths |= 1 << key.len();
            per_length[key.len()] += 1;
            let k = head_key(key);
            let mut bucket = home(k, shift);
            loop {
                let first = bucket * BUCKET;
                if let Some(free) = slots[first..first + BUCKET].iter_mut().find(|s| s.key == 0) {
                    *free = Slot { key: k, value };
                    break;
                }
                bucket = (bucket + 1) & buckets;
            }
        }
        let mut heads = vec![0_u32; 10_usize.pow(HEAD_DIGITS as u32)].into_boxed_slice();
        for key in keys.iter().filter(|k| !k.is_empty()) {
            if key.len() >= HEAD_DIGITS {
                heads[head_of(key)] |= 1 << key.len();
            } else {
                // Every start that begins with the key.
                let span = 10_usize.pow((HEAD_DIGITS - key.len()) as u32);
                let first = key.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')) * span;
                for head in &mut heads[first..first + span] {
                    *head |= 1 << key.len();
                }
            }
        }
        let mut deep = 0;
        let mut held = 0;
        for len in (1..=MAX_PROBE_DIGITS).rev() {
            if held * 100 >= keys.len() * DEEP_SHARE {
                break;
            }
            held += per_length[len];
            deep |= 1 << len;
        }
        Some(Self {
            slots: HugeArray::new(&slots),
            shift,
            lengths,
            deep: deep & lengths,
            heads,
            root,
        })
    }

    /// The value of `key`, probing from its home bucket; `WHOLE` compares a bucket's keys at
    /// once, else one by one.
    ///
    /// One by one, the branches predict where the key is, and a single lookup goes on with
    /// that guess before the line has arrived; a batch, which has other lookups to go on
    /// with, gains from comparing without a branch per slot (some 10% on the real deck).
    #[inline(always)]
    fn find<const WHOLE: bool>(&self, key: u64, mut bucket: usize) -> Option<u32> {
        let buckets = self.slots.len() / BUCKET - 1;
        loop {
            let first = bucket * BUCKET;
            let b = &self.slots[first..first + BUCKET];
            if WHOLE {
                let hit = u32::from(b[0].key == key)
                    | u32::from(b[1].key == key) << 1
                    | u32::from(b[2].key == key) << 2
                    | u32::from(b[3].key == key) << 3;
                if hit != 0 {
                    return Some(b[hit.trailing_zeros() as usize].value);
                }
                if b[BUCKET - 1].key == 0 {
                    return None;
                }
            } else {
                for slot in b {
                    if slot.key == key {
                        return Some(slot.value);
                    }
                    if slot.key == 0 {
                        return None;
                    }
                }
            }
            bucket = (bucket + 1) & buckets;
        }
    }

    /// The longest key that prefixes `digits` and whose value `accept` maps to `Some`, as
    /// (length, mapped value): the same answer as [`crate::trie::PrefixIndex::longest`].
    #[inline]
    pub fn longest<F: Fn(u32) -> Option<u32>>(
        &self,
        digits: &[u8],
        accept: F,
    ) -> Option<(usize, u32)> {
        let mut probes = self.start(digits);
        self.finish::<false, _>(&mut probes, accept)
    }

    /// The first half of a lookup: the home slots of the deep lengths (see `deep`) that
    /// `digits` reaches, each prefetched, so that their loads go out together.
    #[inline(always)]
    fn start(&self, digits: &[u8]) -> Probes {
        let mut probes = Probes::NONE;
        self.start_into(&mut probes, digits);
        probes
    }

    /// [`Self::start`] into `probes`, whose `homes` are overwritten where needed.
    #[inline(always)]
    fn start_into(&self, probes: &mut Probes, digits: &[u8]) {
        let head = head_key(digits);
        let most = digits.len().min(MAX_PROBE_DIGITS);
        // Lengths 1..=most that some key has; the deep ones first, or all if none is deep.
        let present = if digits.len() >= HEAD_DIGITS {
            self.heads[head_of(digits)]
        } else {
            self.lengths
        };
        let lengths = present & ((2_u32 << most) - 2);
        let first = match lengths & self.deep {
            0 => lengths,
            deep => deep,
        };
        probes.head = head;
        probes.lengths = lengths;
        probes.first = first;
        self.prefetch_homes(probes, first);
    }

    /// Computes and prefetches the home slots of `lengths`.
    #[inline(always)]
    fn prefetch_homes(&self, probes: &mut Probes, lengths: u32) {
        let mut pending = lengths;
        while pending != 0 {
            let len = pending.trailing_zeros();
            pending &= pending - 1;
            let at = home(prefix_key(probes.head, len), self.shift);
            prefetch(&self.slots[at * BUCKET]);
            probes.homes[len as usize] = at as u32;
        }
    }

    /// The second half: the probes checked longest first, the first key `accept` takes; the
    /// shallow lengths are probed (all at once again) only if no deep one is taken.
    #[inline(always)]
    fn finish<const WHOLE: bool, F: Fn(u32) -> Option<u32>>(
        &self,
        probes: &mut Probes,
        accept: F,
    ) -> Option<(usize, u32)> {
        if let Some(found) = self.check::<WHOLE, _>(probes, probes.first, &accept) {
            return Some(found);
        }
        let rest = probes.lengths & !probes.first;
        if rest != 0 {
            self.prefetch_homes(probes, rest);
            if let Some(found) = self.check::<WHOLE, _>(probes, rest, &accept) {
                return Some(found);
            }
        }
        self.root.and_then(accept).map(|mapped| (0, mapped))
    }

    /// The longest of `lengths` whose key is present and taken by `accept`.
    #[inline(always)]
    fn check<const WHOLE: bool, F: Fn(u32) -> Option<u32>>(
        &self,
        probes: &Probes,
        lengths: u32,
        accept: &F,
    ) -> Option<(usize, u32)> {
        let mut pending = lengths;
        while pending != 0 {
            let len = 31 - pending.leading_zeros();
            pending &= !(1 << len);
            let key = prefix_key(probes.head, len);
            if let Some(value) = self.find::<WHOLE>(key, probes.homes[len as usize] as usize) {
                if let Some(mapped) = accept(value) {
                    return Some((len as usize, mapped));
                }
            }
        }
        None
    }

    /// [`Self::longest`] for the inputs `get(0..count)`, each answer handed to
    /// `found(i, answer)` in input order.
    ///
    /// A pipeline: the probes of input `i + AHEAD` are started (prefetched) as input `i` is
    /// finished, so each input's loads have arrived by the time it is checked; the digits
    /// of input `i + 2 * AHEAD` are prefetched, so that starting it does not wait for them.
    pub fn longest_many<'a, G, F, W>(&self, count: usize, get: G, accept: F, mut found: W)
    where
        G: Fn(usize) -> &'a [u8],
        F: Fn(usize, u32) -> Option<u32>,
        W: FnMut(usize, Option<(usize, u32)>),
    {
        let mut ring = [Probes::NONE; AHEAD];
        for (i, slot) in ring.iter_mut().enumerate().take(count) {
            self.start_into(slot, get(i));
        }
        for i in 0..count {
            if i + 2 * AHEAD < count {
                // The number itself is one more load, from wherever its string lives.
                prefetch_bytes(get(i + 2 * AHEAD));
            }
            // In place: a `Probes` is some 90 bytes, and copying it in and out of the ring
            // cost more than the checks.
            let probes = &mut ring[i % AHEAD];
            let answer = self.finish::<true, _>(probes, |value| accept(i, value));
            if i + AHEAD < count {
                self.start_into(probes, get(i + AHEAD));
            }
            found(i, answer);
        }
    }

    /// Heap bytes of the table.
    pub fn memory_bytes(&self) -> usize {
        self.slots.bytes() + std::mem::size_of_val(&*self.heads)
    }
}

/// A lookup between [`ProbeIndex::start`] and [`ProbeIndex::finish`]: the number's first
/// digits, the lengths to probe, and each length's home slot.
#[derive(Clone, Copy)]
struct Probes {
    head: u64,
    lengths: u32,
    /// The lengths probed first (the deep ones).
    first: u32,
    homes: [u32; MAX_PROBE_DIGITS + 1],
}

impl Probes {
    const NONE: Probes = Probes {
        head: 0,
        lengths: 0,
        first: 0,
        homes: [0; MAX_PROBE_DIGITS + 1],
    };
}

/// The slot a key hashes to in a table of `2^(64 - shift)`: the top bits of the key mixed
/// by two multiplications. (The top bits of one, Fibonacci hashing, left the keys, which
/// differ from their neighbours in a nibble or two, clustered: on the 317k real E.164
/// prefixes a probe read 3.7 slots on average, against 2.2 so mixed.)
#[inline(always)]
fn home(key: u64, shift: u32) -> usize {
    let k = (key ^ (key >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((k ^ (k >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> shift) as usize
}

/// Asks the processor to start loading `slot` into the cache; a hint, never a fault.
#[inline(always)]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `slot` is a valid reference; a prefetch reads nothing architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch(
            std::ptr::from_ref(slot).cast::<i8>(),
            std::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Asks the processor to start loading the first bytes of `bytes`.
#[inline(always)]
fn prefetch_bytes(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(
            bytes.as_ptr().cast::<i8>(),
            std::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trie::PrefixIndex;

    fn both(keys: &[&str]) -> (ProbeIndex, PrefixIndex) {
        let mut sorted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        sorted.sort();
        let values: Vec<u32> = (0..sorted.len() as u32).collect();
        (
            ProbeIndex::build(&sorted, &values).expect("short keys"),
            PrefixIndex::build(&sorted, &values),
        )
    }

    #[test]
    fn head_key_matches_digit_by_digit_nibbles() {
        for digits in [
            "",
            "0",
            "9",
            "1234567",
            "12345678",
            "123456789",
            "98765432109876543",
        ] {
            let mut expected = 0_u64;
            for (k, d) in digits.bytes().take(MAX_PROBE_DIGITS).enumerate() {
                expected |= u64::from((d - b'0') ^ 0xF) << (4 * k);
            }
            assert_eq!(head_key(digits.as_bytes()), expected, "{digits}");
        }
    }

    #[test]
    fn agrees_with_the_trie() {
        let keys = [
            "",
            "1",
            "12",
            "1201",
            "1201200",
            "44",
            "447",
            "4479",
            "0",
            "00",
            "000",
            "1234567890123456",
            "123456789012345",
            "9",
        ];
        let (probe, trie) = both(&keys);
        let numbers = [
            "",
            "1",
            "12",
            "120",
            "12012",
            "120120099",
            "447912",
            "4470",
            "44",
            "4",
            "0",
            "0000000",
            "33",
            "12345678901234567890",
            "1234567890123455",
            "9",
            "99999",
        ];
        for number in numbers {
            for reject in [None, Some(0), Some(3), Some(13)] {
                let accept = |v: u32| (Some(v) != reject).then_some(v * 2);
                assert_eq!(
                    probe.longest(number.as_bytes(), accept),
                    trie.longest(number.as_bytes(), accept),
                    "{number} rejecting {reject:?}"
                );
            }
        }
    }

    #[test]
    fn batches_agree_with_single_lookups() {
        let keys = ["", "1", "12", "1201", "1201200", "44", "447", "4479", "9"];
        let (probe, _) = both(&keys);
        let numbers: Vec<String> = (0..100)
            .map(|i| format!("{}", i * 104_729 % 10_000_000))
            .collect();
        for count in [0, 1, AHEAD - 1, AHEAD, AHEAD + 1, 2 * AHEAD + 1, 100] {
            let mut out = vec![Some((99, 99)); count];
            probe.longest_many(
                count,
                |i| numbers[i].as_bytes(),
                |i, v| (v != (i % 9) as u32).then_some(v),
                |i, f| out[i] = f,
            );
            for (i, answer) in out.iter().enumerate() {
                let single = probe.longest(numbers[i].as_bytes(), |v| {
                    (v != (i % 9) as u32).then_some(v)
                });
                assert_eq!(*answer, single, "{}", numbers[i]);
            }
        }
    }

    #[test]
    fn long_keys_have_no_probe_index() {
        let key: &[u8] = b"12345678901234567";
        assert!(ProbeIndex::build(&[key], &[0]).is_none());
    }

    #[test]
    fn a_crowded_table_still_finds_every_key() {
        let keys: Vec<String> = (0..5000)
            .map(|i| format!("{}", i * 7919 % 100_000))
            .collect();
        let mut unique: Vec<&str> = keys.iter().map(String::as_str).collect();
        unique.sort_unstable();
        unique.dedup();
        let (probe, trie) = both(&unique);
        for number in ["1", "12345", "99990001", "5000", "7919", "15838123"] {
            assert_eq!(
                probe.longest(number.as_bytes(), Some),
                trie.longest(number.as_bytes(), Some)
            );
        }
        for key in &unique {
            assert_eq!(
                probe.longest(key.as_bytes(), Some).map(|f| f.0),
                Some(key.len())
            );
        }
    }
}
