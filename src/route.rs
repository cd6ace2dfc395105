//! Routing plans: longest route prefix, per-target filters with reasons, and the ordering
//! strategies (least cost, priority, weighted).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::deck::{Deck, Match};
use crate::money::to_nano;
use crate::seed::SplitMix64;
use crate::trie::PrefixIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Each carrier's own rate for this number, cheapest first.
    Lcr,
    /// Lowest priority number first, then highest weight.
    Priority,
    /// Weighted random order, reproducible from a seed.
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
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Excluded => "excluded",
            Self::NoRate => "no_rate",
            Self::AboveMaxRate => "above_max_rate",
            Self::BelowMinMargin => "below_min_margin",
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
    entries: Vec<Entry>,
    index: PrefixIndex,
    decks: Vec<Arc<Deck>>,
    min_margin: Option<i128>,
}

impl RouteTable {
    pub fn new(
        mut entries: Vec<Entry>,
        decks: Vec<Arc<Deck>>,
        min_margin: Option<i128>,
    ) -> Result<Self, TableError> {
        if let Some(long) = entries
            .iter()
            .find(|e| e.prefix.len() > crate::deck::MAX_PREFIX_DIGITS)
        {
            return Err(TableError(format!(
                "route prefix '{}' is longer than {} digits",
                String::from_utf8_lossy(&long.prefix),
                crate::deck::MAX_PREFIX_DIGITS
            )));
        }
        entries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        for pair in entries.windows(2) {
            if pair[0].prefix == pair[1].prefix {
                return Err(TableError(format!(
                    "route prefix '{}' is defined twice",
                    String::from_utf8_lossy(&pair[0].prefix)
                )));
            }
        }
        for entry in &entries {
            let mut seen = HashSet::new();
            for target in &entry.targets {
                if !seen.insert(target.gateway.as_str()) {
                    return Err(TableError(format!(
                        "route prefix '{}' lists gateway {} twice",
                        String::from_utf8_lossy(&entry.prefix),
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
        let keys: Vec<&[u8]> = entries.iter().map(|e| e.prefix.as_slice()).collect();
        let values: Vec<u32> = (0..entries.len() as u32).collect();
        let index = PrefixIndex::build(&keys, &values);
        Ok(Self {
            entries,
            index,
            decks,
            min_margin,
        })
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

    /// Routes `digits`: the longest route prefix, its targets filtered and ordered; with
    /// `carry_through`, shorter routes while nothing usable is found.
    pub fn route(&self, digits: &[u8], query: &Query<'_>) -> Decision {
        let mut decision = Decision::default();
        for (_, entry_index) in self.index.all_prefixes(digits) {
            let entry_index = entry_index as usize;
            let entry = &self.entries[entry_index];
            decision.entry = Some(entry_index);
            let mut usable = Vec::new();
            for (target_index, target) in entry.targets.iter().enumerate() {
                let (reason, price) = self.check(entry, target, digits, query);
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

    fn check(
        &self,
        entry: &Entry,
        target: &Target,
        digits: &[u8],
        query: &Query<'_>,
    ) -> (Option<Reason>, Option<Priced>) {
        if !target.enabled {
            return (Some(Reason::Disabled), None);
        }
        if query.exclude.is_some_and(|x| x.contains(&target.gateway)) {
            return (Some(Reason::Excluded), None);
        }
        let Some(deck_index) = target.deck else {
            return (None, None);
        };
        let deck = &self.decks[deck_index];
        let Some(found) = deck.lookup(digits, query.at) else {
            return (Some(Reason::NoRate), None);
        };
        let nano = to_nano(deck.tariff(found.tariff).rate, deck.options().precision);
        let price = Some(Priced {
            deck: deck_index,
            found,
            nano,
        });
        if entry.max_rate.is_some_and(|ceiling| nano > ceiling) {
            return (Some(Reason::AboveMaxRate), price);
        }
        if let (Some(floor), Some(sell)) = (entry.min_margin.or(self.min_margin), query.sell_rate) {
            if sell - nano < floor {
                return (Some(Reason::BelowMinMargin), price);
            }
        }
        (None, price)
    }
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
            let mut rng = SplitMix64::new(seed);
            let (mut weighted, mut zero): (Vec<Candidate>, Vec<Candidate>) =
                candidates.iter().partition(|c| target(c).weight > 0);
            let mut ordered = Vec::with_capacity(candidates.len());
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
            None,
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
            None,
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
            Some(2_000_000),
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
            None,
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
            None,
        );
        assert!(dup.unwrap_err().0.contains("defined twice"));
        let dup = RouteTable::new(
            vec![entry(
                "1",
                Strategy::Lcr,
                vec![target("a", None, 0, 1), target("a", None, 1, 1)],
            )],
            vec![],
            None,
        );
        assert!(dup.unwrap_err().0.contains("twice"));
    }
}
