//! `RouteTable` and its results for Python.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::convert::{decimal, digits, lcr_error, nano_amount, seconds_at, seed_value};
use super::deck::{Numbers, RateDeck};
use crate::deck::Deck;
use crate::route::{self, Decision, Entry, Priced, Query, Strategy, Target};

/// A gateway that may take the call, in the order to try.
#[pyclass(module = "lcr._core", frozen, name = "Candidate", get_all)]
pub struct Candidate {
    gateway: String,
    priority: i64,
    weight: u32,
    deck: Option<String>,
    rate_prefix: Option<String>,
    destination: Option<String>,
    route_prefix: String,
    rate: Option<Py<PyAny>>,
}

#[pymethods]
impl Candidate {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Candidate(gateway={:?}, rate={}, priority={}, weight={}, rate_prefix={:?})",
            self.gateway,
            rate_repr(py, &self.rate)?,
            self.priority,
            self.weight,
            self.rate_prefix
        ))
    }
}

/// A target of a matched route that was filtered out, and why.
#[pyclass(module = "lcr._core", frozen, name = "Rejection", get_all)]
pub struct Rejection {
    gateway: String,
    reason: &'static str,
    route_prefix: String,
    rate: Option<Py<PyAny>>,
}

#[pymethods]
impl Rejection {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Rejection(gateway={:?}, reason={:?}, rate={})",
            self.gateway,
            self.reason,
            rate_repr(py, &self.rate)?
        ))
    }
}

fn rate_repr(py: Python<'_>, rate: &Option<Py<PyAny>>) -> PyResult<String> {
    Ok(match rate {
        Some(r) => r.bind(py).repr()?.to_string(),
        None => "None".to_owned(),
    })
}

/// The routing decision for one number: candidates in order, and the rejected targets.
#[pyclass(module = "lcr._core", frozen, name = "RouteResult")]
pub struct RouteResult {
    number: String,
    prefix: Option<String>,
    strategy: Option<&'static str>,
    candidates: Py<PyTuple>,
    rejected: Py<PyTuple>,
}

#[pymethods]
impl RouteResult {
    #[getter]
    fn number(&self) -> &str {
        &self.number
    }
    #[getter]
    fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }
    #[getter]
    fn strategy(&self) -> Option<&'static str> {
        self.strategy
    }
    #[getter]
    fn candidates(&self, py: Python<'_>) -> Py<PyTuple> {
        self.candidates.clone_ref(py)
    }
    #[getter]
    fn rejected(&self, py: Python<'_>) -> Py<PyTuple> {
        self.rejected.clone_ref(py)
    }

    /// A readable account of the decision, shared with `lcr.reference`.
    fn explain(slf: &Bound<'_, Self>) -> PyResult<String> {
        slf.py()
            .import("lcr._explain")?
            .getattr("render")?
            .call1((slf,))?
            .extract()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<RouteResult {:?} via {:?}: {} candidates, {} rejected>",
            self.number,
            self.prefix,
            self.candidates.bind(py).len(),
            self.rejected.bind(py).len()
        )
    }
}

/// An immutable routing plan: route entries over carriers' decks.
#[pyclass(module = "lcr._core", frozen, name = "RouteTable")]
pub struct RouteTable {
    table: Arc<route::RouteTable>,
    deck_names: Vec<String>,
}

fn build_entry(py: Python<'_>, entry: &Bound<'_, PyAny>, deck_names: &[String]) -> PyResult<Entry> {
    let prefix: String = entry.getattr("prefix")?.extract()?;
    let prefix = digits(py, &prefix)
        .map_err(|_| {
            lcr_error(
                py,
                "LcrError",
                format!(
                    "route prefix {} is not a digit string",
                    crate::quote::quoted(&prefix)
                ),
            )
        })?
        .to_vec();
    let strategy_name: String = entry.getattr("strategy")?.extract()?;
    let strategy = Strategy::parse(&strategy_name).ok_or_else(|| {
        lcr_error(
            py,
            "LcrError",
            format!(
                "strategy must be 'lcr', 'priority' or 'weight', got {}",
                crate::quote::quoted(&strategy_name)
            ),
        )
    })?;
    let optional_amount = |name: &str| -> PyResult<Option<i128>> {
        let value = entry.getattr(name)?;
        if value.is_none() {
            Ok(None)
        } else {
            nano_amount(&value, name).map(Some)
        }
    };
    let mut targets = Vec::new();
    for target in entry.getattr("targets")?.try_iter()? {
        let target = target?;
        let gateway: String = target.getattr("gateway")?.extract()?;
        let deck: Option<String> = target.getattr("deck")?.extract()?;
        let deck = match deck {
            None => None,
            Some(name) => Some(deck_names.iter().position(|n| *n == name).ok_or_else(|| {
                lcr_error(
                    py,
                    "LcrError",
                    format!(
                        "gateway {} refers to unknown deck {}",
                        crate::quote::quoted(&gateway),
                        crate::quote::quoted(&name)
                    ),
                )
            })?),
        };
        let weight: i64 = target.getattr("weight")?.extract()?;
        let weight = u32::try_from(weight).map_err(|_| {
            lcr_error(
                py,
                "LcrError",
                format!(
                    "gateway {}: weight must be 0..=4294967295",
                    crate::quote::quoted(&gateway)
                ),
            )
        })?;
        targets.push(Target {
            priority: target.getattr("priority")?.extract()?,
            weight,
            deck,
            enabled: target.getattr("enabled")?.extract()?,
            gateway,
        });
    }
    Ok(Entry {
        prefix,
        targets,
        strategy,
        carry_through: entry.getattr("carry_through")?.extract()?,
        max_rate: optional_amount("max_rate")?,
        min_margin: optional_amount("min_margin")?,
    })
}

impl RouteTable {
    fn money(&self, py: Python<'_>, price: &Option<Priced>) -> PyResult<Option<Py<PyAny>>> {
        match price {
            None => Ok(None),
            Some(p) => {
                let deck: &Deck = self.table.deck(p.deck);
                Ok(Some(
                    decimal(
                        py,
                        deck.tariff(p.found.tariff).rate,
                        deck.options().precision,
                    )?
                    .unbind(),
                ))
            }
        }
    }

    fn result(&self, py: Python<'_>, number: &[u8], decision: Decision) -> PyResult<RouteResult> {
        let entries = self.table.entries();
        let text = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
        let mut candidates = Vec::with_capacity(decision.candidates.len());
        for c in &decision.candidates {
            let entry = &entries[c.entry];
            let target = &entry.targets[c.target];
            let (rate_prefix, destination) = match &c.price {
                Some(p) => {
                    let deck = self.table.deck(p.deck);
                    (
                        Some(text(&number[..p.found.prefix_len()])),
                        Some(deck.destination(deck.tariff(p.found.tariff)).to_owned()),
                    )
                }
                None => (None, None),
            };
            candidates.push(Py::new(
                py,
                Candidate {
                    gateway: target.gateway.clone(),
                    priority: target.priority,
                    weight: target.weight,
                    deck: target.deck.map(|d| self.deck_names[d].clone()),
                    rate_prefix,
                    destination,
                    route_prefix: text(&entry.prefix),
                    rate: self.money(py, &c.price)?,
                },
            )?);
        }
        let mut rejected = Vec::with_capacity(decision.rejected.len());
        for r in &decision.rejected {
            let entry = &entries[r.entry];
            rejected.push(Py::new(
                py,
                Rejection {
                    gateway: entry.targets[r.target].gateway.clone(),
                    reason: r.reason.name(),
                    route_prefix: text(&entry.prefix),
                    rate: self.money(py, &r.price)?,
                },
            )?);
        }
        let chosen = decision.entry.map(|e| &entries[e]);
        Ok(RouteResult {
            number: text(number),
            prefix: chosen.map(|e| text(&e.prefix)),
            strategy: chosen.map(|e| e.strategy.name()),
            candidates: PyTuple::new(py, candidates)?.unbind(),
            rejected: PyTuple::new(py, rejected)?.unbind(),
        })
    }
}

fn exclusions(exclude: Option<&Bound<'_, PyAny>>) -> PyResult<Option<HashSet<String>>> {
    match exclude.filter(|e| !e.is_none()) {
        None => Ok(None),
        Some(e) => {
            let mut set = HashSet::new();
            for g in e.try_iter()? {
                set.insert(g?.extract::<String>()?);
            }
            Ok(Some(set))
        }
    }
}

#[pymethods]
impl RouteTable {
    #[new]
    #[pyo3(signature = (entries, decks=None, *, min_margin=None))]
    fn new(
        py: Python<'_>,
        entries: &Bound<'_, PyAny>,
        decks: Option<&Bound<'_, PyDict>>,
        min_margin: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut deck_names = Vec::new();
        let mut deck_refs: Vec<Arc<Deck>> = Vec::new();
        if let Some(decks) = decks {
            for (name, deck) in decks.iter() {
                let deck = deck.cast::<RateDeck>().map_err(|_| {
                    lcr_error(
                        py,
                        "LcrError",
                        format!("decks[{name}] is not an lcr.RateDeck"),
                    )
                })?;
                deck_names.push(name.extract::<String>()?);
                deck_refs.push(Arc::clone(&deck.get().deck));
            }
        }
        let mut built = Vec::new();
        for entry in entries.try_iter()? {
            built.push(build_entry(py, &entry?, &deck_names)?);
        }
        let min_margin = match min_margin.filter(|m| !m.is_none()) {
            Some(m) => Some(nano_amount(m, "min_margin")?),
            None => None,
        };
        let table = route::RouteTable::new(built, deck_refs, min_margin)
            .map_err(|e| lcr_error(py, "LcrError", e.0))?;
        Ok(Self {
            table: Arc::new(table),
            deck_names,
        })
    }

    #[pyo3(signature = (number, at=None, seed=None, *, exclude=None, sell_rate=None))]
    fn route(
        &self,
        py: Python<'_>,
        number: &str,
        at: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
        sell_rate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RouteResult> {
        let d = digits(py, number)?;
        let exclude = exclusions(exclude)?;
        let query = Query {
            at: seconds_at(at)?,
            seed: seed_value(seed)?,
            exclude: exclude.as_ref(),
            sell_rate: match sell_rate.filter(|s| !s.is_none()) {
                Some(s) => Some(nano_amount(s, "sell_rate")?),
                None => None,
            },
        };
        let decision = self.table.route(d, &query);
        self.result(py, d, decision)
    }

    #[pyo3(signature = (numbers, at=None, seeds=None, *, exclude=None, sell_rate=None))]
    fn route_many(
        &self,
        py: Python<'_>,
        numbers: &Bound<'_, PyAny>,
        at: Option<&Bound<'_, PyAny>>,
        seeds: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
        sell_rate: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RouteResult>> {
        let at = seconds_at(at)?;
        let sell_rate = match sell_rate.filter(|s| !s.is_none()) {
            Some(s) => Some(nano_amount(s, "sell_rate")?),
            None => None,
        };
        let numbers = Numbers::collect(numbers)?;
        let exclude = exclusions(exclude)?;
        let seeds: Vec<u64> = match seeds.filter(|s| !s.is_none()) {
            Some(s) => {
                let mut out = Vec::new();
                for seed in s.try_iter()? {
                    out.push(seed_value(Some(&seed?))?);
                }
                if out.len() != numbers.len() {
                    return Err(lcr_error(
                        py,
                        "LcrError",
                        format!("{} numbers but {} seeds", numbers.len(), out.len()),
                    ));
                }
                out
            }
            None => (0..numbers.len())
                .map(|_| seed_value(None))
                .collect::<PyResult<_>>()?,
        };
        let table = &self.table;
        let exclude_ref = exclude.as_ref();
        let decisions: Vec<Decision> = py.detach(|| {
            use rayon::prelude::*;
            (0..numbers.len())
                .into_par_iter()
                .with_min_len(1024)
                .map(|i| {
                    table.route(
                        numbers.get(i),
                        &Query {
                            at,
                            seed: seeds[i],
                            exclude: exclude_ref,
                            sell_rate,
                        },
                    )
                })
                .collect()
        });
        decisions
            .into_iter()
            .enumerate()
            .map(|(i, d)| self.result(py, numbers.get(i), d))
            .collect()
    }

    #[getter]
    fn deck_names(&self) -> Vec<String> {
        self.deck_names.clone()
    }

    fn __len__(&self) -> usize {
        self.table.entries().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RouteTable {} routes over {} decks>",
            self.table.entries().len(),
            self.deck_names.len()
        )
    }
}
