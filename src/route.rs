//! Routing plans: which route applies and wins, per-target filters with reasons, and the
//! ordering strategies (least cost, priority, weighted in priority tiers).
//!
//! Which route wins, among those that apply (prefix starts the number, `caller_prefix`
//! starts the caller, and a route with windows has one active): the longest prefix; on a
//! tie the longest caller prefix; on a tie a route with windows; then table order. The core
//! knows no time zones: the caller says which window ids are active ([`Query::active`]).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::deck::{Deck, Match};
use crate::money::{to_nano, Rounding};
use crate::rate::Tariff;
use crate::seed::SplitMix64;
use crate::trie::PrefixIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Each carrier's own rate for this number, cheapest first.
    Lcr,
    /// Lowest priority number first, then highest weight.
    Priority,
    /// Priority tiers, lowest first; inside a tier a weighted random order, reproducible
    /// from a seed.
    Weight,
}

impl Strategy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lcr" => Some(Self::Lcr),
            "priority" => Some(Self::Priority),
            "weight" => Some(Self::Weight),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Lcr => "lcr",
            Self::Priority => "priority",
            Self::Weight => "weight",
        }
    }
}

/// Why a target of the matched route did not become a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Disabled,
    Excluded,
    NoRate,
    AboveMaxRate,
    BelowMinMargin,
    /// No buy deck under a true-cost margin check: the margin cannot be known.
    Unpriced,
    /// Sell cost minus buy cost below the floor at one of the margin durations.
    BelowMarginAt,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Excluded => "excluded",
            Self::NoRate => "no_rate",
            Self::AboveMaxRate => "above_max_rate",
            Self::BelowMinMargin => "below_min_margin",
            Self::Unpriced => "unpriced",
            Self::BelowMarginAt => "below_margin_at",
        }
    }
}

/// One gateway a route may send calls to.
#[derive(Debug, Clone)]
pub struct Target {
    pub gateway: String,
    pub priority: i64,
    pub weight: u32,
    /// Index into the table's decks: the carrier's buy deck.
    pub deck: Option<usize>,
    pub enabled: bool,
}

/// A route: a prefix of the dialed number and how to order its targets.
#[derive(Debug, Clone)]
pub struct Entry {
    pub prefix: Vec<u8>,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// When no target is usable, try the next shorter matching route.
    pub carry_through: bool,
    /// Ceiling on a carrier's rate, on the 1e-9 scale.
    pub max_rate: Option<i128>,
    /// Floor on sell rate minus buy rate, on the 1e-9 scale; overrides the table's.
    pub min_margin: Option<i128>,
    /// Digits the caller's number must start with; empty for any caller.
    pub caller_prefix: Vec<u8>,
    /// Ids of the time windows the route is limited to; empty for always.
    pub windows: Vec<u32>,
    /// Call lengths (seconds) for true-cost margins; empty for the table's.
    pub margin_duration: Vec<u32>,
}

impl Entry {
    fn applies(&self, query: &Query<'_>) -> bool {
        (self.caller_prefix.is_empty()
            || query
                .caller
                .is_some_and(|c| c.starts_with(&self.caller_prefix)))
            && (self.windows.is_empty() || self.windows.iter().any(|&w| query.is_active(w)))
    }
}

/// What a table applies to routes that do not say otherwise.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Floor on sell minus buy per minute, on the 1e-9 scale.
    pub min_margin: Option<i128>,
    /// Call lengths (seconds) for true-cost margins.
    pub margin_duration: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TableError {}

/// What a caller asks for one routing decision.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// Seconds since the epoch.
    pub at: i64,
    pub seed: u64,
    pub exclude: Option<&'a HashSet<String>>,
    /// The customer's sell rate for this number, on the 1e-9 scale, for margin checks.
    pub sell_rate: Option<i128>,
    /// The caller's digits; `None` matches only routes without a caller prefix.
    pub caller: Option<&'a [u8]>,
    /// The active window ids as a bit set (bit `i % 64` of word `i / 64`).
    pub active: &'a [u64],
    /// The sell rate's cost of a call of each margin duration (seconds, 1e-9 scale), sorted
    /// by duration; `None` without a sell rate, and then no true-cost check.
    pub sell_costs: Option<&'a [(u32, i128)]>,
    /// The average call duration, added to a route's margin durations when > 0.
    pub acd: u32,
}

impl Query<'_> {
    pub fn is_active(&self, window: u32) -> bool {
        self.active
            .get(window as usize / 64)
            .is_some_and(|word| word >> (window % 64) & 1 == 1)
    }

    fn sell_cost(&self, duration: u32) -> Option<i128> {
        let costs = self.sell_costs?;
        costs
            .binary_search_by_key(&duration, |&(d, _)| d)
            .ok()
            .map(|i| costs[i].1)
    }
}

/// A bit set of window ids, for [`Query::active`].
pub fn window_bits(ids: impl IntoIterator<Item = u32>) -> Vec<u64> {
    let mut bits = Vec::new();
    for id in ids {
        let word = id as usize / 64;
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        bits[word] |= 1 << (id % 64);
    }
    bits
}

/// A carrier's rate for the number: which deck, and what matched in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    pub deck: usize,
    pub found: Match,
    /// The rate on the 1e-9 scale, for comparisons across decks.
    pub nano: i128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub entry: usize,
    pub target: usize,
    pub price: Option<Priced>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub entry: usize,
    pub target: usize,
    pub reason: Reason,
    pub price: Option<Priced>,
    /// The margin duration that failed, for [`Reason::BelowMarginAt`].
    pub duration: Option<u32>,
}

/// The outcome of routing one number: ordered candidates and every rejected target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The route whose targets became the candidates (or the last one tried).
    pub entry: Option<usize>,
    pub candidates: Vec<Candidate>,
    pub rejected: Vec<Rejection>,
}

/// An immutable routing plan over shared decks.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// In table order, as given.
    entries: Vec<Entry>,
    /// Route prefix -> group: the entries with that prefix, best first.
    index: PrefixIndex,
    groups: Vec<Vec<usize>>,
    decks: Vec<Arc<Deck>>,
    defaults: Defaults,
    /// Every margin duration of the table and its routes, sorted, for the sell costs.
    durations: Vec<u32>,
}

impl RouteTable {
    pub fn new(
        mut entries: Vec<Entry>,
        decks: Vec<Arc<Deck>>,
        defaults: Defaults,
    ) -> Result<Self, TableError> {
        let text = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
        if let Some(long) = entries
            .iter()
            .find(|e| e.prefix.len() > crate::deck::MAX_PREFIX_DIGITS)
        {
            return Err(TableError(format!(
                "route prefix '{}' is longer than {} digits",
                text(&long.prefix),
                crate::deck::MAX_PREFIX_DIGITS
            )));
        }
        for entry in &mut entries {
            entry.windows.sort_unstable();
            entry.windows.dedup();
        }
        // Best first inside a prefix: longest caller prefix, windowed, table order.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&entries[a], &entries[b]);
            x.prefix
                .cmp(&y.prefix)
                .then_with(|| y.caller_prefix.len().cmp(&x.caller_prefix.len()))
                .then_with(|| x.windows.is_empty().cmp(&y.windows.is_empty()))
                .then_with(|| a.cmp(&b))
        });
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        // The group's routes by (caller prefix, windows): a duplicate is found in O(1), so a
        // prefix with thousands of caller routes builds in linear time.
        let mut seen: HashMap<(&[u8], &[u32]), usize> = HashMap::new();
        for &i in &order {
            let entry = &entries[i];
            if keys.last() != Some(&entry.prefix.as_slice()) {
                keys.push(&entry.prefix);
                groups.push(Vec::new());
                seen.clear();
            }
            let group = groups.last_mut().expect("pushed above");
            let key = (entry.caller_prefix.as_slice(), entry.windows.as_slice());
            if let Some(&twin) = seen.get(&key) {
                let twin = &entries[twin];
                let mut message = format!("route prefix '{}' is defined twice", text(&twin.prefix));
                if !twin.caller_prefix.is_empty() {
                    message += &format!(" for caller_prefix '{}'", text(&twin.caller_prefix));
                }
                if !twin.windows.is_empty() {
                    message += " with the same windows";
                }
                return Err(TableError(message));
            }
            seen.insert(key, i);
            group.push(i);
        }
        for entry in &entries {
            let mut seen = HashSet::new();
            for target in &entry.targets {
                if !seen.insert(target.gateway.as_str()) {
                    return Err(TableError(format!(
                        "route prefix '{}' lists gateway {} twice",
                        text(&entry.prefix),
                        crate::quote::quoted(&target.gateway)
                    )));
                }
                if target.deck.is_some_and(|d| d >= decks.len()) {
                    return Err(TableError(format!(
                        "gateway {}: no such deck",
                        crate::quote::quoted(&target.gateway)
                    )));
                }
            }
        }
        let values: Vec<u32> = (0..keys.len() as u32).collect();
        let index = PrefixIndex::build(&keys, &values);
        let mut durations: Vec<u32> = entries
            .iter()
            .flat_map(|e| e.margin_duration.iter().copied())
            .chain(defaults.margin_duration.iter().copied())
            .collect();
        durations.sort_unstable();
        durations.dedup();
        Ok(Self {
            entries,
            index,
            groups,
            decks,
            defaults,
            durations,
        })
    }

    /// Every margin duration of the table and its routes, sorted: the sell costs a query
    /// with a sell rate must carry (and its `acd`).
    pub fn margin_durations(&self) -> &[u32] {
        &self.durations
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn deck(&self, index: usize) -> &Arc<Deck> {
        &self.decks[index]
    }

    pub fn decks(&self) -> &[Arc<Deck>] {
        &self.decks
    }

    /// Routes `digits`: the best applying route, its targets filtered and ordered; with
    /// `carry_through`, the next applying routes while nothing usable is found.
    pub fn route(&self, digits: &[u8], query: &Query<'_>) -> Decision {
        let mut decision = Decision::default();
        let routes = self
            .index
            .all_prefixes(digits)
            .into_iter()
            .flat_map(|(_, group)| self.groups[group as usize].iter().copied())
            .filter(|&e| self.entries[e].applies(query));
        for entry_index in routes {
            let entry = &self.entries[entry_index];
            decision.entry = Some(entry_index);
            let mut usable = Vec::new();
            for (target_index, target) in entry.targets.iter().enumerate() {
                let (reason, price, duration) = self.check(entry, target, digits, query);
                match reason {
                    None => usable.push(Candidate {
                        entry: entry_index,
                        target: target_index,
                        price,
                    }),
                    Some(reason) => decision.rejected.push(Rejection {
                        entry: entry_index,
                        target: target_index,
                        reason,
                        price,
                        duration,
                    }),
                }
            }
            if !usable.is_empty() {
                order(entry, &mut usable, query.seed);
                decision.candidates = usable;
                break;
            }
            if !entry.carry_through {
                break;
            }
        }
        decision
    }

    /// The margin durations of a route under `query` (its own, else the table's, plus the
    /// acd), or none when there is no sell rate to check them against.
    fn durations<'a>(&'a self, entry: &'a Entry, query: &Query<'_>) -> (&'a [u32], Option<u32>) {
        if query.sell_costs.is_none() {
            return (&[], None);
        }
        let own = if entry.margin_duration.is_empty() {
            &self.defaults.margin_duration
        } else {
            &entry.margin_duration
        };
        if own.is_empty() {
            return (&[], None);
        }
        let acd = (query.acd > 0 && !own.contains(&query.acd)).then_some(query.acd);
        (own, acd)
    }

    fn check(
        &self,
        entry: &Entry,
        target: &Target,
        digits: &[u8],
        query: &Query<'_>,
    ) -> (Option<Reason>, Option<Priced>, Option<u32>) {
        if !target.enabled {
            return (Some(Reason::Disabled), None, None);
        }
        if query.exclude.is_some_and(|x| x.contains(&target.gateway)) {
            return (Some(Reason::Excluded), None, None);
        }
        let (durations, acd) = self.durations(entry, query);
        let Some(deck_index) = target.deck else {
            let unpriced = !durations.is_empty();
            return (unpriced.then_some(Reason::Unpriced), None, None);
        };
        let deck = &self.decks[deck_index];
        let Some(found) = deck.lookup(digits, query.at) else {
            return (Some(Reason::NoRate), None, None);
        };
        let tariff = deck.tariff(found.tariff);
        let precision = deck.options().precision;
        let nano = to_nano(tariff.rate, precision);
        let price = Some(Priced {
            deck: deck_index,
            found,
            nano,
        });
        if entry.max_rate.is_some_and(|ceiling| nano > ceiling) {
            return (Some(Reason::AboveMaxRate), price, None);
        }
        let floor = entry.min_margin.or(self.defaults.min_margin);
        if let (Some(floor), Some(sell)) = (floor, query.sell_rate) {
            if sell - nano < floor {
                return (Some(Reason::BelowMinMargin), price, None);
            }
        }
        let per_minute = floor.unwrap_or(0);
        let rounding = deck.options().rounding;
        for &d in durations.iter().chain(acd.iter()) {
            let sell = query
                .sell_cost(d)
                .expect("the query carries a sell cost for every margin duration");
            if (sell - exact_cost(tariff, rounding, precision, d)) * 60 < per_minute * i128::from(d)
            {
                return (Some(Reason::BelowMarginAt), price, Some(d));
            }
        }
        (None, price, None)
    }
}

/// A call's cost on the 1e-9 scale, never capped: connect fee plus the per-minute part
/// rounded by the deck's rule, for margins that compare decks of different precisions.
fn exact_cost(tariff: &Tariff, rounding: Rounding, precision: u32, duration: u32) -> i128 {
    let billed = tariff.billed_seconds(u64::from(duration));
    let units = i128::from(tariff.connect_fee)
        + rounding.divide(i128::from(tariff.rate) * i128::from(billed), 60);
    units * 10_i128.pow(crate::money::MAX_PRECISION - precision)
}

fn order(entry: &Entry, candidates: &mut [Candidate], seed: u64) {
    let target = |c: &Candidate| &entry.targets[c.target];
    let by_priority = |a: &Candidate, b: &Candidate| {
        target(a)
            .priority
            .cmp(&target(b).priority)
            .then_with(|| target(a).gateway.cmp(&target(b).gateway))
    };
    match entry.strategy {
        Strategy::Lcr => candidates.sort_by(|a, b| {
            match (a.price, b.price) {
                (Some(x), Some(y)) => x.nano.cmp(&y.nano),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
            .then_with(|| by_priority(a, b))
        }),
        Strategy::Priority => candidates.sort_by(|a, b| {
            target(a)
                .priority
                .cmp(&target(b).priority)
                .then_with(|| target(b).weight.cmp(&target(a).weight))
                .then_with(|| target(a).gateway.cmp(&target(b).gateway))
        }),
        Strategy::Weight => {
            // Priority tiers, lowest first (a stable sort keeps the targets' order inside a
            // tier); one generator runs through every tier, so one tier is the plain draw.
            candidates.sort_by_key(|c| target(c).priority);
            let mut rng = SplitMix64::new(seed);
            let mut ordered = Vec::with_capacity(candidates.len());
            for tier in candidates.chunk_by(|a, b| target(a).priority == target(b).priority) {
                let (mut weighted, mut zero): (Vec<Candidate>, Vec<Candidate>) =
                    tier.iter().partition(|c| target(c).weight > 0);
                while !weighted.is_empty() {
                    let total: u64 = weighted.iter().map(|c| u64::from(target(c).weight)).sum();
                    let mut pick = rng.next_u64() % total;
                    let mut chosen = weighted.len() - 1;
                    for (i, c) in weighted.iter().enumerate() {
                        let w = u64::from(target(c).weight);
                        if pick < w {
                            chosen = i;
                            break;
                        }
                        pick -= w;
                    }
                    ordered.push(weighted.remove(chosen));
                }
                zero.sort_by(by_priority);
                ordered.extend(zero);
            }
            candidates.copy_from_slice(&ordered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deck::{DeckBuilder, DeckOptions};

    fn deck(rows: &[(&str, &str)]) -> Arc<Deck> {
        let mut b = DeckBuilder::new(DeckOptions::default());
        for (i, (prefix, rate)) in rows.iter().enumerate() {
            b.push(i as u64 + 1, [prefix, "", rate, "", "", "", "", ""])
                .unwrap();
        }
        Arc::new(b.finish().0)
    }

    fn target(gateway: &str, deck: Option<usize>, priority: i64, weight: u32) -> Target {
        Target {
            gateway: gateway.into(),
            priority,
            weight,
            deck,
            enabled: true,
        }
    }

    fn entry(prefix: &str, strategy: Strategy, targets: Vec<Target>) -> Entry {
        Entry {
            prefix: prefix.as_bytes().to_vec(),
            targets,
            strategy,
            carry_through: false,
            max_rate: None,
            min_margin: None,
            caller_prefix: Vec::new(),
            windows: Vec::new(),
            margin_duration: Vec::new(),
        }
    }

    fn gateways(table: &RouteTable, d: &Decision) -> Vec<String> {
        d.candidates
            .iter()
            .map(|c| table.entries()[c.entry].targets[c.target].gateway.clone())
            .collect()
    }

    #[test]
    fn lcr_orders_by_each_carriers_own_longest_match() {
        let a = deck(&[("44", "0.010"), ("447", "0.080")]);
        let b = deck(&[("44", "0.020"), ("447", "0.050")]);
        let table = RouteTable::new(
            vec![entry(
                "4",
                Strategy::Lcr,
                vec![target("a", Some(0), 0, 1), target("b", Some(1), 0, 1)],
            )],
            vec![a, b],
            Defaults::default(),
        )
        .unwrap();
        let q = Query::default();
        assert_eq!(gateways(&table, &table.route(b"4420", &q)), ["a", "b"]);
        assert_eq!(gateways(&table, &table.route(b"4479", &q)), ["b", "a"]);
        let d = table.route(b"33", &q);
        assert_eq!((d.entry, d.candidates.len()), (None, 0));
    }

    #[test]
    fn filters_record_reasons_and_carry_through() {
        let a = deck(&[("44", "0.010")]);
        let mut specific = entry("447", Strategy::Lcr, vec![target("a", Some(0), 0, 1)]);
        specific.max_rate = Some(5_000_000); // 0.005
        specific.carry_through = true;
        let mut disabled = target("off", None, 0, 1);
        disabled.enabled = false;
        let table = RouteTable::new(
            vec![
                specific,
                entry(
                    "44",
                    Strategy::Priority,
                    vec![disabled, target("b", None, 2, 1), target("c", None, 1, 1)],
                ),
            ],
            vec![a],
            Defaults::default(),
        )
        .unwrap();
        let d = table.route(b"4479", &Query::default());
        assert_eq!(gateways(&table, &d), ["c", "b"]);
        let reasons: Vec<_> = d.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, [Reason::AboveMaxRate, Reason::Disabled]);
    }

    #[test]
    fn margin_floor_needs_a_sell_rate() {
        let a = deck(&[("1", "0.010")]);
        let table = RouteTable::new(
            vec![entry("", Strategy::Lcr, vec![target("a", Some(0), 0, 1)])],
            vec![a],
            Defaults {
                min_margin: Some(2_000_000),
                ..Defaults::default()
            },
        )
        .unwrap();
        assert_eq!(table.route(b"1", &Query::default()).candidates.len(), 1);
        let q = Query {
            sell_rate: Some(11_000_000),
            ..Query::default()
        };
        assert_eq!(
            table.route(b"1", &q).rejected[0].reason,
            Reason::BelowMinMargin
        );
        let q = Query {
            sell_rate: Some(12_000_000),
            ..Query::default()
        };
        assert_eq!(table.route(b"1", &q).candidates.len(), 1);
    }

    #[test]
    fn weighted_order_converges_to_weights() {
        let table = RouteTable::new(
            vec![entry(
                "",
                Strategy::Weight,
                vec![
                    target("a", None, 0, 70),
                    target("b", None, 0, 20),
                    target("c", None, 0, 10),
                    target("z", None, 0, 0),
                ],
            )],
            vec![],
            Defaults::default(),
        )
        .unwrap();
        let mut firsts = [0_u32; 3];
        for seed in 0..20_000_u64 {
            let d = table.route(
                b"1",
                &Query {
                    seed,
                    ..Query::default()
                },
            );
            let names = gateways(&table, &d);
            assert_eq!(names.last().map(String::as_str), Some("z"));
            firsts[["a", "b", "c"].iter().position(|g| *g == names[0]).unwrap()] += 1;
        }
        for (count, weight) in firsts.iter().zip([70.0, 20.0, 10.0]) {
            let share = f64::from(*count) / 200.0;
            assert!((share - weight).abs() < 1.5, "{firsts:?}");
        }
    }

    #[test]
    fn duplicate_definitions_are_refused() {
        let dup = RouteTable::new(
            vec![
                entry("1", Strategy::Lcr, vec![]),
                entry("1", Strategy::Lcr, vec![]),
            ],
            vec![],
            Defaults::default(),
        );
        assert!(dup.unwrap_err().0.contains("defined twice"));
        let dup = RouteTable::new(
            vec![entry(
                "1",
                Strategy::Lcr,
                vec![target("a", None, 0, 1), target("a", None, 1, 1)],
            )],
            vec![],
            Defaults::default(),
        );
        assert!(dup.unwrap_err().0.contains("twice"));
    }

    #[test]
    fn weight_orders_priority_tiers_first() {
        let table = RouteTable::new(
            vec![entry(
                "",
                Strategy::Weight,
                vec![
                    target("c", None, 2, 100),
                    target("a", None, 1, 70),
                    target("b", None, 1, 30),
                    target("spare", None, 1, 0),
                ],
            )],
            vec![],
            Defaults::default(),
        )
        .unwrap();
        let mut a_first = 0;
        for seed in 0..10_000_u64 {
            let q = Query {
                seed,
                ..Query::default()
            };
            let names = gateways(&table, &table.route(b"1", &q));
            assert_eq!(&names[2..], ["spare", "c"]);
            a_first += u32::from(names[0] == "a");
        }
        assert!((6_800..7_200).contains(&a_first), "{a_first}");
    }

    #[test]
    fn caller_prefix_and_windows_pick_the_route() {
        let mut from_fr = entry("44", Strategy::Lcr, vec![target("fr", None, 0, 1)]);
        from_fr.caller_prefix = b"33".to_vec();
        let mut night = entry("44", Strategy::Lcr, vec![target("night", None, 0, 1)]);
        night.windows = vec![70];
        let table = RouteTable::new(
            vec![
                entry("44", Strategy::Lcr, vec![target("any", None, 0, 1)]),
                night,
                from_fr,
            ],
            vec![],
            Defaults::default(),
        )
        .unwrap();
        let active = window_bits([70]);
        let first = |caller: Option<&[u8]>, active: &[u64]| {
            let q = Query {
                caller,
                active,
                ..Query::default()
            };
            gateways(&table, &table.route(b"4420", &q))
        };
        assert_eq!(first(None, &[]), ["any"]);
        assert_eq!(first(None, &active), ["night"]);
        assert_eq!(first(Some(b"331"), &active), ["fr"]);
        assert_eq!(first(Some(b"49"), &[]), ["any"]);
        let twice = RouteTable::new(
            vec![
                entry("1", Strategy::Lcr, vec![]),
                Entry {
                    windows: vec![3, 3],
                    ..entry("1", Strategy::Lcr, vec![])
                },
                Entry {
                    windows: vec![3],
                    ..entry("1", Strategy::Lcr, vec![])
                },
            ],
            vec![],
            Defaults::default(),
        );
        assert_eq!(
            twice.unwrap_err().0,
            "route prefix '1' is defined twice with the same windows"
        );
    }

    #[test]
    fn true_cost_margin_checks_each_duration() {
        // 0.010 a minute, 0.05 connect fee, 60/60 billing.
        let mut b = DeckBuilder::new(DeckOptions::default());
        b.push(1, ["44", "", "0.010", "0.05", "60", "60", "", ""])
            .unwrap();
        let buy = Arc::new(b.finish().0);
        let mut route = entry(
            "44",
            Strategy::Lcr,
            vec![target("b", Some(0), 0, 1), target("nodeck", None, 0, 1)],
        );
        route.margin_duration = vec![30, 600];
        let table = RouteTable::new(vec![route], vec![buy], Defaults::default()).unwrap();
        assert_eq!(table.margin_durations(), [30, 600]);
        // A sell rate of 0.02 a minute, per second: 0.01 at 30 s, 0.20 at 600 s.
        let sell = [(30, 10_000_000), (600, 200_000_000)];
        let q = Query {
            sell_costs: Some(&sell),
            ..Query::default()
        };
        let d = table.route(b"4420", &q);
        let reasons: Vec<_> = d.rejected.iter().map(|r| (r.reason, r.duration)).collect();
        assert_eq!(
            reasons,
            [(Reason::BelowMarginAt, Some(30)), (Reason::Unpriced, None)]
        );
        let d = table.route(b"4420", &Query::default());
        assert_eq!(gateways(&table, &d), ["b", "nodeck"]);
    }
}
