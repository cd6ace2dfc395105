//! A rate deck: effective-dated tariffs behind a longest-prefix index.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::money::{self, Rounding};
use crate::number;
use crate::probe::ProbeIndex;
use crate::quote::quoted;
use crate::rate::{Tariff, OPEN_END, OPEN_START};
use crate::timefmt;
use crate::trie::PrefixIndex;

/// The columns of a deck row, in the documented default CSV order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Prefix,
    Destination,
    Rate,
    ConnectFee,
    InitialIncrement,
    SubsequentIncrement,
    EffectiveFrom,
    EffectiveTo,
}

impl Field {
    pub const ALL: [Field; 8] = [
        Field::Prefix,
        Field::Destination,
        Field::Rate,
        Field::ConnectFee,
        Field::InitialIncrement,
        Field::SubsequentIncrement,
        Field::EffectiveFrom,
        Field::EffectiveTo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Prefix => "prefix",
            Field::Destination => "destination",
            Field::Rate => "rate",
            Field::ConnectFee => "connect_fee",
            Field::InitialIncrement => "initial_increment",
            Field::SubsequentIncrement => "subsequent_increment",
            Field::EffectiveFrom => "effective_from",
            Field::EffectiveTo => "effective_to",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Fields a row cannot do without; the others have documented defaults.
    pub fn required(self) -> bool {
        matches!(self, Field::Prefix | Field::Rate)
    }
}

/// The longest prefix a deck accepts. E.164 numbers have at most 15 digits; a longer
/// "prefix" is a broken file, and refusing it keeps every walk of the index short.
pub const MAX_PREFIX_DIGITS: usize = crate::trie::MAX_KEY_DIGITS;

/// Billing increment used when a row leaves it empty: per-minute billing, "60/60".
pub const DEFAULT_INCREMENT: u32 = 60;
/// The longest increment accepted, one day; anything longer is a typo.
pub const MAX_INCREMENT: u32 = 86_400;

/// A problem with one row: the field (by our name) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub field: Option<Field>,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "line {}: {}: {}", self.line, field.name(), self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// How amounts in a deck are read and costs rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeckOptions {
    pub precision: u32,
    pub rounding: Rounding,
}

impl Default for DeckOptions {
    fn default() -> Self {
        Self {
            precision: 6,
            rounding: Rounding::Up,
        }
    }
}

struct PendingRow {
    prefix_start: u32,
    prefix_len: u32,
    effective_from: i64,
    tariff: u32,
    line: u64,
}

/// Collects rows (validating each) and builds an immutable [`Deck`].
pub struct DeckBuilder {
    options: DeckOptions,
    arena: Vec<u8>,
    rows: Vec<PendingRow>,
    tariffs: Vec<Tariff>,
    tariff_ids: HashMap<Tariff, u32>,
    destinations: Vec<Arc<str>>,
    destination_ids: HashMap<String, u32>,
}

fn field_error(line: u64, field: Field, reason: impl Into<String>) -> RowError {
    RowError {
        line,
        field: Some(field),
        reason: reason.into(),
    }
}

fn parse_increment(line: u64, field: Field, text: &str) -> Result<u32, RowError> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Ok(DEFAULT_INCREMENT);
    }
    match text.parse::<u32>() {
        Ok(v) if (1..=MAX_INCREMENT).contains(&v) => Ok(v),
        _ => Err(field_error(
            line,
            field,
            format!(
                "expected whole seconds from 1 to {MAX_INCREMENT}, got {}",
                quoted(text)
            ),
        )),
    }
}

fn parse_date(line: u64, field: Field, text: &str, open: i64) -> Result<i64, RowError> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Ok(open);
    }
    timefmt::parse_timestamp(text).ok_or_else(|| {
        field_error(
            line,
            field,
            format!("not an ISO 8601 date or date-time: {}", quoted(text)),
        )
    })
}

impl DeckBuilder {
    pub fn new(options: DeckOptions) -> Self {
        assert!(options.precision <= money::MAX_PRECISION);
        Self {
            options,
            arena: Vec::new(),
            rows: Vec::new(),
            tariffs: Vec::new(),
            tariff_ids: HashMap::new(),
            destinations: Vec::new(),
            destination_ids: HashMap::new(),
        }
    }

    /// Validates one row given as text in [`Field::ALL`] order (empty = absent).
    pub fn push(&mut self, line: u64, fields: [&str; 8]) -> Result<(), RowError> {
        let [prefix, destination, rate, connect_fee, initial, subsequent, from, to] = fields;
        let prefix = prefix.trim_ascii();
        let digits = number::digits(prefix).map_err(|e| {
            field_error(
                line,
                Field::Prefix,
                format!(
                    "not a digit string: {} at position {}",
                    quoted(&e.found.to_string()),
                    e.position
                ),
            )
        })?;
        if digits.len() > MAX_PREFIX_DIGITS {
            return Err(field_error(
                line,
                Field::Prefix,
                format!("longer than {MAX_PREFIX_DIGITS} digits"),
            ));
        }
        let precision = self.options.precision;
        let amount = |field: Field, text: &str, default_zero: bool| {
            if default_zero && text.trim_ascii().is_empty() {
                return Ok(0);
            }
            money::parse_amount(text, precision).map_err(|e| {
                field_error(line, field, format!("{e}: {}", quoted(text.trim_ascii())))
            })
        };
        let rate = amount(Field::Rate, rate, false)?;
        let connect_fee = amount(Field::ConnectFee, connect_fee, true)?;
        let initial_increment = parse_increment(line, Field::InitialIncrement, initial)?;
        let subsequent_increment = parse_increment(line, Field::SubsequentIncrement, subsequent)?;
        let effective_from = parse_date(line, Field::EffectiveFrom, from, OPEN_START)?;
        let effective_to = parse_date(line, Field::EffectiveTo, to, OPEN_END)?;
        if effective_to <= effective_from {
            return Err(field_error(
                line,
                Field::EffectiveTo,
                "must be later than effective_from",
            ));
        }
        let destination = destination.trim_ascii();
        let destination = match self.destination_ids.get(destination) {
            Some(&id) => id,
            None => {
                let id = self.destinations.len() as u32;
                self.destinations.push(Arc::from(destination));
                self.destination_ids.insert(destination.to_owned(), id);
                id
            }
        };
        let tariff = Tariff {
            destination,
            rate,
            connect_fee,
            initial_increment,
            subsequent_increment,
            effective_from,
            effective_to,
        };
        let next_id = self.tariffs.len() as u32;
        let tariff_id = *self.tariff_ids.entry(tariff).or_insert(next_id);
        if tariff_id == next_id {
            self.tariffs.push(tariff);
        }
        let prefix_start = self.arena.len() as u32;
        self.arena.extend_from_slice(digits);
        self.rows.push(PendingRow {
            prefix_start,
            prefix_len: digits.len() as u32,
            effective_from,
            tariff: tariff_id,
            line,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The earliest (by line) row so far that repeats an earlier row's prefix and
    /// effective_from. Strict loading asks this before it reports a bad value, so that the
    /// error it raises is the first bad row of the file, whichever kind it is.
    pub fn first_duplicate(&self) -> Option<RowError> {
        let key = |r: &PendingRow| {
            (
                &self.arena[r.prefix_start as usize..(r.prefix_start + r.prefix_len) as usize],
                r.effective_from,
            )
        };
        let mut order: Vec<&PendingRow> = self.rows.iter().collect();
        order.sort_unstable_by(|a, b| key(a).cmp(&key(b)).then(a.line.cmp(&b.line)));
        let mut first: Option<(u64, u64, &[u8])> = None; // (line, kept line, prefix)
        for pair in order.windows(2) {
            if key(pair[0]) == key(pair[1]) && first.is_none_or(|(line, _, _)| pair[1].line < line)
            {
                let kept = order
                    .iter()
                    .find(|r| key(r) == key(pair[1]))
                    .map_or(0, |r| r.line);
                first = Some((pair[1].line, kept, key(pair[1]).0));
            }
        }
        first.map(|(line, kept, prefix)| {
            field_error(
                line,
                Field::Prefix,
                format!(
                    "duplicate of line {kept}: same prefix {:?} and effective_from",
                    String::from_utf8_lossy(prefix)
                ),
            )
        })
    }

    /// Builds the deck. Rows repeating a prefix and effective_from are reported (the first by
    /// line is kept), sorted by line.
    pub fn finish(self) -> (Deck, Vec<RowError>) {
        let DeckBuilder {
            options,
            arena,
            mut rows,
            tariffs,
            destinations,
            ..
        } = self;
        let key = |r: &PendingRow| {
            &arena[r.prefix_start as usize..(r.prefix_start + r.prefix_len) as usize]
        };
        // Prefix ascending, then newest version first, then by line so the first row wins.
        rows.sort_unstable_by(|a, b| {
            key(a)
                .cmp(key(b))
                .then(b.effective_from.cmp(&a.effective_from))
                .then(a.line.cmp(&b.line))
        });
        let mut duplicates = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut starts: Vec<u32> = Vec::new();
        let mut versions: Vec<u32> = Vec::with_capacity(rows.len());
        let mut timeless = true;
        for (i, row) in rows.iter().enumerate() {
            let prefix = key(row);
            let same_prefix = i > 0 && key(&rows[i - 1]) == prefix;
            if same_prefix && rows[i - 1].effective_from == row.effective_from {
                let kept = rows[..i]
                    .iter()
                    .rev()
                    .take_while(|r| key(r) == prefix && r.effective_from == row.effective_from)
                    .last()
                    .map_or(0, |r| r.line);
                duplicates.push(field_error(
                    row.line,
                    Field::Prefix,
                    format!(
                        "duplicate of line {kept}: same prefix {:?} and effective_from",
                        String::from_utf8_lossy(prefix)
                    ),
                ));
                continue;
            }
            if same_prefix {
                *versions.last_mut().expect("a run is open") &= !LAST_IN_RUN;
                timeless = false;
            } else {
                keys.push(prefix);
                starts.push(versions.len() as u32);
            }
            let t = &tariffs[row.tariff as usize];
            if t.effective_from != OPEN_START || t.effective_to != OPEN_END {
                timeless = false;
            }
            versions.push(row.tariff | LAST_IN_RUN);
        }
        duplicates.sort_by_key(|e| e.line);
        let all_in_force_from = if tariffs.iter().all(|t| t.effective_to == OPEN_END) {
            tariffs
                .iter()
                .map(|t| t.effective_from)
                .max()
                .unwrap_or(OPEN_START)
        } else {
            OPEN_END
        };
        assert!(tariffs.len() < DIRECT as usize, "fewer than 2^31 tariffs");
        // A prefix with one version keeps its tariff in the index itself.
        for start in &mut starts {
            if starts_end(&versions, *start) - *start as usize == 1 {
                *start = (versions[*start as usize] & !LAST_IN_RUN) | DIRECT;
            }
        }
        let index = PrefixIndex::build(&keys, &starts);
        let probe = ProbeIndex::build(&keys, &starts);
        let deck = Deck {
            options,
            destinations,
            tariffs,
            index,
            probe,
            version_count: versions.len(),
            versions,
            prefix_count: keys.len(),
            timeless,
            all_in_force_from,
        };
        (deck, duplicates)
    }
}

/// High bit of a version slot: the last version of its prefix.
const LAST_IN_RUN: u32 = 1 << 31;

/// High bit of an index value: the value is the prefix's only tariff, not the start of its
/// run in `versions` (most prefixes have one version; this saves a lookup a cache miss).
const DIRECT: u32 = 1 << 31;

/// The end (exclusive) of the run of versions starting at `start`.
fn starts_end(versions: &[u32], start: u32) -> usize {
    let mut end = start as usize;
    while versions[end] & LAST_IN_RUN == 0 {
        end += 1;
    }
    end + 1
}

/// The tariffs of a deck in force at one moment, one bit each: a batch at one moment
/// tests a bit (in cache) instead of reading each matched tariff's dates.
pub struct InForce {
    bits: Vec<u64>,
}

impl InForce {
    #[inline]
    fn holds(&self, id: u32) -> bool {
        self.bits[id as usize / 64] & (1 << (id % 64)) != 0
    }
}

/// A rate found for a number: how many of its digits matched, and which tariff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// At most [`MAX_PREFIX_DIGITS`]; a byte keeps a batch's `Option<Match>` at 12 bytes.
    pub prefix_len: u8,
    pub tariff: u32,
}

impl Match {
    fn new(prefix_len: usize, tariff: u32) -> Self {
        debug_assert!(prefix_len <= MAX_PREFIX_DIGITS);
        Self {
            prefix_len: prefix_len as u8,
            tariff,
        }
    }

    pub fn prefix_len(&self) -> usize {
        usize::from(self.prefix_len)
    }
}

/// An immutable rate deck. Share it behind an `Arc`; a new deck version is a new `Deck`.
#[derive(Debug, Clone)]
pub struct Deck {
    options: DeckOptions,
    /// Shared so that a matched rate handed to Python points at its name without copying.
    destinations: Vec<Arc<str>>,
    tariffs: Vec<Tariff>,
    index: PrefixIndex,
    /// The same prefixes hashed, for single lookups (see [`crate::probe`]); `None` when a
    /// prefix is too long for it, and then single lookups walk `index`.
    probe: Option<ProbeIndex>,
    /// Tariff ids per prefix, newest `effective_from` first, [`LAST_IN_RUN`] closing a run.
    versions: Vec<u32>,
    version_count: usize,
    prefix_count: usize,
    /// Every prefix has one version valid forever: lookups can skip the date checks.
    timeless: bool,
    /// From this moment on every tariff is in force: no row has an end date, and the latest
    /// start has passed ([`OPEN_END`] if some row ends). A lookup after it reads no dates,
    /// which saves it a cache miss on the tariff: a deck dated from its publication and
    /// never ended is the common case.
    all_in_force_from: i64,
}

impl Deck {
    pub fn options(&self) -> DeckOptions {
        self.options
    }

    /// The version slots of an index value (one, for a [`DIRECT`] value).
    #[inline]
    fn versions_of(&self, value: u32) -> impl Iterator<Item = u32> + '_ {
        let (direct, start) = if value & DIRECT != 0 {
            (Some(value & !DIRECT), self.versions.len())
        } else {
            (None, value as usize)
        };
        let run = self.versions[start..].iter().scan(false, |done, &slot| {
            (!std::mem::replace(done, slot & LAST_IN_RUN != 0)).then_some(slot & !LAST_IN_RUN)
        });
        direct.into_iter().chain(run)
    }

    /// The tariff of a prefix (its index value) in force by `holds`: the newest version it
    /// holds, so a new version supersedes an older one left without an end date.
    #[inline]
    fn in_force(&self, value: u32, holds: impl Fn(u32) -> bool) -> Option<u32> {
        self.versions_of(value).find(|&id| holds(id))
    }

    /// Which tariffs are in force at `at`, for batches at one moment.
    pub fn in_force_at(&self, at: i64) -> InForce {
        let mut bits = vec![0_u64; self.tariffs.len().div_ceil(64)];
        for (id, t) in self.tariffs.iter().enumerate() {
            if t.in_force(at) {
                bits[id / 64] |= 1 << (id % 64);
            }
        }
        InForce { bits }
    }

    /// Whether a batch of `count` lookups at one moment gains from [`Self::in_force_at`]
    /// (it reads every tariff once).
    pub fn worth_in_force(&self, count: usize) -> bool {
        !self.timeless && count >= self.tariffs.len() / 8
    }

    /// Whether tariff `id` is in force at `at`; in a timeless deck, or once every tariff has
    /// started and none ends, every one is, and the first version of a prefix (the newest) is
    /// taken without reading its dates.
    #[inline]
    fn holds_at(&self, id: u32, at: i64) -> bool {
        self.timeless
            || (self.all_in_force_from <= at && at < OPEN_END)
            || self.tariffs[id as usize].in_force(at)
    }

    /// Longest prefix of `digits` with a rate in force at `at` (seconds since the epoch).
    #[inline]
    pub fn lookup(&self, digits: &[u8], at: i64) -> Option<Match> {
        let accept = |value| self.in_force(value, |id| self.holds_at(id, at));
        match &self.probe {
            Some(probe) => probe.longest(digits, accept),
            None => self.index.longest(digits, accept),
        }
        .map(|(prefix_len, tariff)| Match::new(prefix_len, tariff))
    }

    /// [`Self::lookup`] for the numbers `get(0..out.len())` at the moments `at(i)`, written
    /// into `out`; the lookups are interleaved (see [`ProbeIndex::longest_many`] and
    /// [`PrefixIndex::longest_many`]).
    pub fn lookup_many<'a, G, A>(&self, get: G, at: A, out: &mut [Option<Match>])
    where
        G: Fn(usize) -> &'a [u8],
        A: Fn(usize) -> i64,
    {
        self.walk_many(get, |i, id| self.holds_at(id, at(i)), out);
    }

    /// [`Self::lookup_many`] for one moment, given as [`Self::in_force_at`] of it.
    pub fn lookup_many_in<'a, G>(&self, get: G, live: &InForce, out: &mut [Option<Match>])
    where
        G: Fn(usize) -> &'a [u8],
    {
        self.walk_many(get, |_, id| live.holds(id), out);
    }

    /// The batch walk behind both: `holds(i, id)` says whether number `i` may take tariff `id`.
    fn walk_many<'a, G, H>(&self, get: G, holds: H, out: &mut [Option<Match>])
    where
        G: Fn(usize) -> &'a [u8],
        H: Fn(usize, u32) -> bool,
    {
        let count = out.len();
        let accept = |i, value| self.in_force(value, |id| holds(i, id));
        let found = |i: usize, found: Option<(usize, u32)>| {
            out[i] = found.map(|(len, tariff)| Match::new(len, tariff));
        };
        match &self.probe {
            Some(probe) => probe.longest_many(count, get, accept, found),
            None => self.index.longest_many(count, get, accept, found),
        }
    }

    pub fn tariff(&self, id: u32) -> &Tariff {
        &self.tariffs[id as usize]
    }

    pub fn destination(&self, tariff: &Tariff) -> &str {
        &self.destinations[tariff.destination as usize]
    }

    pub fn destination_shared(&self, tariff: &Tariff) -> Arc<str> {
        Arc::clone(&self.destinations[tariff.destination as usize])
    }

    /// Cost in sub-units of a call of `duration` seconds under tariff `id` (`None`: overflow).
    pub fn cost(&self, id: u32, duration: u64) -> Option<i64> {
        self.tariff(id).cost(duration, self.options.rounding)
    }

    /// Every row as (prefix digits, tariff id), prefixes ascending, newest version first.
    pub fn rows(&self) -> Vec<(Vec<u8>, u32)> {
        let mut out = Vec::with_capacity(self.version_count);
        for (prefix, value) in self.index.entries() {
            for id in self.versions_of(value) {
                out.push((prefix.clone(), id));
            }
        }
        out
    }

    /// Number of rows (prefix versions).
    pub fn len(&self) -> usize {
        self.version_count
    }

    pub fn is_empty(&self) -> bool {
        self.version_count == 0
    }

    pub fn prefix_count(&self) -> usize {
        self.prefix_count
    }

    /// Heap bytes held by the deck's structures (not counting allocator overhead).
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_bytes()
            + self.probe.as_ref().map_or(0, ProbeIndex::memory_bytes)
            + self.versions.capacity() * 4
            + self.tariffs.capacity() * std::mem::size_of::<Tariff>()
            + self
                .destinations
                .iter()
                .map(|d| d.len() + std::mem::size_of::<Arc<str>>() + 16)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deck(rows: &[[&str; 8]]) -> (Deck, Vec<RowError>) {
        let mut b = DeckBuilder::new(DeckOptions::default());
        for (i, r) in rows.iter().enumerate() {
            b.push(i as u64 + 2, *r).unwrap();
        }
        b.finish()
    }

    const JAN: &str = "2026-01-01";
    const FEB: &str = "2026-02-01";

    #[test]
    fn longest_prefix_in_force() {
        let (d, errors) = deck(&[
            ["44", "UK", "0.01", "", "1", "1", "", ""],
            ["447", "UK Mobile", "0.05", "", "1", "1", "", FEB],
            ["447", "UK Mobile", "0.04", "", "1", "1", FEB, ""],
            ["4479", "UK Mobile X", "0.09", "", "1", "1", FEB, ""],
        ]);
        assert!(errors.is_empty());
        let jan = timefmt::parse_timestamp(JAN).unwrap();
        let feb = timefmt::parse_timestamp(FEB).unwrap();
        let m = d.lookup(b"447912", jan).unwrap();
        assert_eq!((m.prefix_len, d.tariff(m.tariff).rate), (3, 50_000));
        let m = d.lookup(b"447912", feb).unwrap();
        assert_eq!((m.prefix_len, d.tariff(m.tariff).rate), (4, 90_000));
        let m = d.lookup(b"447812", feb).unwrap();
        assert_eq!((m.prefix_len, d.tariff(m.tariff).rate), (3, 40_000));
        assert_eq!(d.lookup(b"33", jan), None);
        assert_eq!(d.len(), 4);
        assert_eq!(d.prefix_count(), 3);
        assert_eq!(d.rows().len(), 4);
    }

    #[test]
    fn newest_open_version_supersedes() {
        let (d, _) = deck(&[
            ["1", "US", "0.01", "", "", "", JAN, ""],
            ["1", "US", "0.02", "", "", "", FEB, ""],
        ]);
        let feb = timefmt::parse_timestamp(FEB).unwrap();
        assert_eq!(d.tariff(d.lookup(b"1", feb).unwrap().tariff).rate, 20_000);
        assert_eq!(
            d.tariff(d.lookup(b"1", feb - 1).unwrap().tariff).rate,
            10_000
        );
        assert_eq!(
            d.lookup(b"1", timefmt::parse_timestamp(JAN).unwrap() - 1),
            None
        );
        assert_eq!(d.tariff(0).initial_increment, DEFAULT_INCREMENT);
    }

    #[test]
    fn versions_still_apply_once_every_tariff_has_started() {
        // No end dates: from FEB on every tariff is in force, and the newest version wins.
        let (d, _) = deck(&[
            ["1", "US", "0.01", "", "", "", JAN, ""],
            ["1", "US", "0.02", "", "", "", FEB, ""],
            ["12", "US X", "0.03", "", "", "", "", ""],
        ]);
        let feb = timefmt::parse_timestamp(FEB).unwrap();
        assert_eq!(d.all_in_force_from, feb);
        for (at, rate) in [(feb + 1, 20_000), (feb, 20_000), (feb - 1, 10_000)] {
            assert_eq!(d.tariff(d.lookup(b"13", at).unwrap().tariff).rate, rate);
        }
        assert_eq!(d.lookup(b"13", OPEN_END), None);
        assert_eq!(
            d.tariff(d.lookup(b"123", OPEN_END - 1).unwrap().tariff)
                .rate,
            30_000
        );
        let (ended, _) = deck(&[["1", "US", "0.01", "", "", "", "", FEB]]);
        assert_eq!(ended.all_in_force_from, OPEN_END);
        assert_eq!(ended.lookup(b"1", feb), None);
    }

    #[test]
    fn duplicates_are_reported_and_first_kept() {
        let (d, errors) = deck(&[
            ["1", "US", "0.01", "", "", "", JAN, ""],
            ["1", "US", "0.02", "", "", "", JAN, ""],
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
        assert!(
            errors[0].reason.contains("duplicate of line 2"),
            "{}",
            errors[0]
        );
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.tariff(d.lookup(b"1", i64::MAX - 1).unwrap().tariff).rate,
            10_000
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let mut b = DeckBuilder::new(DeckOptions::default());
        let cases: [([&str; 8], Field); 6] = [
            (["4a", "", "1", "", "", "", "", ""], Field::Prefix),
            (["4", "", "x", "", "", "", "", ""], Field::Rate),
            (["4", "", "1", "-1", "", "", "", ""], Field::ConnectFee),
            (["4", "", "1", "", "0", "", "", ""], Field::InitialIncrement),
            (
                ["4", "", "1", "", "", "", "2026-02-30", ""],
                Field::EffectiveFrom,
            ),
            (["4", "", "1", "", "", "", FEB, JAN], Field::EffectiveTo),
        ];
        for (row, field) in cases {
            assert_eq!(b.push(7, row).unwrap_err().field, Some(field));
        }
        assert!(b.is_empty());
    }

    #[test]
    fn identical_terms_share_one_tariff() {
        let (d, _) = deck(&[
            ["4471", "UK Mobile", "0.05", "", "1", "1", "", ""],
            ["4472", "UK Mobile", "0.05", "", "1", "1", "", ""],
        ]);
        assert_eq!(d.tariffs.len(), 1);
    }
}
