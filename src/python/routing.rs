//! `RouteTable` and its results for Python.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::convert::{decimal, digits, lcr_error, nano_amount, seed_value};
use super::deck::{Moments, Numbers, RateDeck};
use crate::deck::Deck;
use crate::route::{self, window_bits, Decision, Defaults, Entry, Priced, Query, Strategy, Target};

/// The longest call a margin is checked at: one day (as `lcr.reference`).
const MAX_MARGIN_DURATION: i64 = 86_400;

/// A sell rate's cost per margin duration (seconds, 1e-9 scale), sorted; `None`: no sell.
type SellCosts = Option<Vec<(u32, i128)>>;

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
    route: usize,
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
    route: usize,
    duration: Option<u32>,
}

#[pymethods]
impl Rejection {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Rejection(gateway={:?}, reason={:?}, rate={}, duration={})",
            self.gateway,
            self.reason,
            rate_repr(py, &self.rate)?,
            self.duration
                .map_or_else(|| "None".to_owned(), |d| d.to_string())
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
    caller_prefix: Option<String>,
    route: Option<usize>,
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
    #[getter]
    fn caller_prefix(&self) -> Option<&str> {
        self.caller_prefix.as_deref()
    }
    #[getter]
    fn route(&self) -> Option<usize> {
        self.route
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
    /// One past the highest window id of any entry: active ids at or above it match nothing,
    /// and are dropped before they size a bit set.
    window_limit: u32,
}

/// Window ids an entry may carry: far more windows than any table holds, small enough that
/// a bit set of them stays small.
const MAX_WINDOW_ID: u32 = 1 << 20;

/// Whole seconds in `1..=MAX_MARGIN_DURATION` (margin durations), named for errors.
fn margin_durations(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u32>> {
    let py = value.py();
    let mut out = Vec::new();
    for item in value.try_iter()? {
        let item = item?;
        let seconds = if item.is_instance_of::<pyo3::types::PyBool>() {
            None
        } else {
            item.extract::<i64>().ok()
        };
        match seconds {
            Some(s) if (1..=MAX_MARGIN_DURATION).contains(&s) => out.push(s as u32),
            _ => {
                return Err(lcr_error(
                    py,
                    "LcrError",
                    format!(
                        "{what}: margin_duration must be whole seconds 1..={MAX_MARGIN_DURATION}, \
                         got {}",
                        item.repr()?
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// A call's average duration: `None` or whole seconds in `0..=MAX_MARGIN_DURATION`.
fn acd_seconds(acd: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<u32> {
    let Some(acd) = acd.filter(|a| !a.is_none()) else {
        return Ok(0);
    };
    let seconds = if acd.is_instance_of::<pyo3::types::PyBool>() {
        None
    } else {
        acd.extract::<i64>().ok()
    };
    match seconds {
        Some(s) if (0..=MAX_MARGIN_DURATION).contains(&s) => Ok(s as u32),
        _ => Err(lcr_error(
            acd.py(),
            "LcrError",
            format!(
                "{what} must be whole seconds 0..={MAX_MARGIN_DURATION}, got {}",
                acd.repr()?
            ),
        )),
    }
}

/// A caller's digits, or `None`; errors say which argument.
fn caller_digits(caller: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Vec<u8>>> {
    match caller.filter(|c| !c.is_none()) {
        None => Ok(None),
        Some(c) => {
            let py = c.py();
            let text: String = c.extract()?;
            let d = crate::number::digits(&text)
                .map_err(|e| lcr_error(py, "LcrError", format!("{what}: {e}")))?;
            Ok(Some(d.to_vec()))
        }
    }
}

/// Active window ids (an iterable of ints) as a bit set; ids at or above `limit` (no entry
/// has them) are left out.
fn active_bits(active: Option<&Bound<'_, PyAny>>, limit: u32) -> PyResult<Vec<u64>> {
    let mut ids = Vec::new();
    if let Some(active) = active.filter(|a| !a.is_none()) {
        for id in active.try_iter()? {
            let id = id?.extract::<u32>()?;
            if id < limit {
                ids.push(id);
            }
        }
    }
    Ok(window_bits(ids))
}

fn each<'py>(
    values: Option<&Bound<'py, PyAny>>,
    count: usize,
    what: &str,
) -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
    let Some(values) = values.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let out = values.try_iter()?.collect::<PyResult<Vec<_>>>()?;
    if out.len() != count {
        return Err(lcr_error(
            values.py(),
            "LcrError",
            format!("{count} numbers but {} {what}", out.len()),
        ));
    }
    Ok(Some(out))
}

fn build_entry(
    py: Python<'_>,
    entry: &Bound<'_, PyAny>,
    deck_names: &[String],
    windows: Vec<u32>,
) -> PyResult<Entry> {
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
    let prefix_text = String::from_utf8_lossy(&prefix).into_owned();
    let caller_text: String = entry.getattr("caller_prefix")?.extract()?;
    let caller_prefix = crate::number::digits(&caller_text)
        .map_err(|_| {
            lcr_error(
                py,
                "LcrError",
                format!(
                    "route prefix '{prefix_text}': caller_prefix {} is not a digit string",
                    crate::quote::quoted(&caller_text)
                ),
            )
        })?
        .to_vec();
    if caller_prefix.len() > crate::deck::MAX_PREFIX_DIGITS {
        return Err(lcr_error(
            py,
            "LcrError",
            format!(
                "route prefix '{prefix_text}': caller_prefix is longer than {} digits",
                crate::deck::MAX_PREFIX_DIGITS
            ),
        ));
    }
    let margin_duration = margin_durations(
        &entry.getattr("margin_duration")?,
        &format!("route prefix '{prefix_text}'"),
    )?;
    Ok(Entry {
        prefix,
        targets,
        strategy,
        carry_through: entry.getattr("carry_through")?.extract()?,
        max_rate: optional_amount("max_rate")?,
        min_margin: optional_amount("min_margin")?,
        caller_prefix,
        windows,
        margin_duration,
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

    /// The sell rate's cost (1e-9 scale) at every margin duration of the table and the acd,
    /// sorted by duration: asked of `sell.cost(d)`, so any rate object with that method
    /// (`lcr.Rate`, `lcr.reference.Rate`) serves.
    fn sell_costs(&self, sell: Option<&Bound<'_, PyAny>>, acd: u32) -> PyResult<SellCosts> {
        let Some(sell) = sell.filter(|s| !s.is_none()) else {
            return Ok(None);
        };
        let mut durations = self.table.margin_durations().to_vec();
        if acd > 0 && !durations.contains(&acd) {
            durations.push(acd);
            durations.sort_unstable();
        }
        let mut out = Vec::with_capacity(durations.len());
        for d in durations {
            let cost = sell.call_method1(pyo3::intern!(sell.py(), "cost"), (d,))?;
            out.push((d, nano_amount(&cost, "sell")?));
        }
        Ok(Some(out))
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
                    route: c.entry,
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
                    route: r.entry,
                    duration: r.duration,
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
            caller_prefix: chosen.map(|e| text(&e.caller_prefix)),
            route: decision.entry,
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
    #[pyo3(signature = (entries, decks=None, *, min_margin=None, margin_duration=None, window_ids=None))]
    fn new(
        py: Python<'_>,
        entries: &Bound<'_, PyAny>,
        decks: Option<&Bound<'_, PyDict>>,
        min_margin: Option<&Bound<'_, PyAny>>,
        margin_duration: Option<&Bound<'_, PyAny>>,
        window_ids: Option<&Bound<'_, PyAny>>,
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
        let entries: Vec<Bound<'_, PyAny>> = entries.try_iter()?.collect::<PyResult<_>>()?;
        let ids: Option<Vec<Vec<u32>>> = match window_ids.filter(|w| !w.is_none()) {
            Some(w) => Some(w.extract()?),
            None => None,
        };
        if ids.as_ref().is_some_and(|ids| ids.len() != entries.len()) {
            return Err(lcr_error(
                py,
                "LcrError",
                "window_ids must have one list of ids per entry".to_owned(),
            ));
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .flatten()
            .find(|&&id| id >= MAX_WINDOW_ID)
        {
            return Err(lcr_error(
                py,
                "LcrError",
                format!("window id {bad} is not below {MAX_WINDOW_ID}"),
            ));
        }
        let window_limit = ids.iter().flatten().flatten().max().map_or(0, |&id| id + 1);
        let mut built = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let windows = match &ids {
                Some(ids) => ids[i].clone(),
                None => {
                    if entry.getattr("windows")?.len()? > 0 {
                        return Err(lcr_error(
                            py,
                            "LcrError",
                            "routes with windows need lcr.RouteTable, which evaluates them \
                             (lcr._core.RouteTable takes window_ids)"
                                .to_owned(),
                        ));
                    }
                    Vec::new()
                }
            };
            built.push(build_entry(py, entry, &deck_names, windows)?);
        }
        let min_margin = match min_margin.filter(|m| !m.is_none()) {
            Some(m) => Some(nano_amount(m, "min_margin")?),
            None => None,
        };
        let margin_duration = match margin_duration.filter(|m| !m.is_none()) {
            Some(m) => margin_durations(m, "RouteTable")?,
            None => Vec::new(),
        };
        let defaults = Defaults {
            min_margin,
            margin_duration,
        };
        let table = route::RouteTable::new(built, deck_refs, defaults)
            .map_err(|e| lcr_error(py, "LcrError", e.0))?;
        Ok(Self {
            table: Arc::new(table),
            deck_names,
            window_limit,
        })
    }

    #[pyo3(signature = (
        number, at=None, seed=None, *, exclude=None, sell_rate=None, caller=None, sell=None,
        acd=None, active=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        py: Python<'_>,
        number: &str,
        at: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
        sell_rate: Option<&Bound<'_, PyAny>>,
        caller: Option<&Bound<'_, PyAny>>,
        sell: Option<&Bound<'_, PyAny>>,
        acd: Option<&Bound<'_, PyAny>>,
        active: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RouteResult> {
        let at = super::convert::seconds_at(at)?;
        let d = digits(py, number)?;
        let acd = acd_seconds(acd, "acd")?;
        let exclude = exclusions(exclude)?;
        let caller = caller_digits(caller, "caller")?;
        let sell_costs = self.sell_costs(sell, acd)?;
        let active = active_bits(active, self.window_limit)?;
        let query = Query {
            at,
            seed: seed_value(seed)?,
            exclude: exclude.as_ref(),
            sell_rate: match sell_rate.filter(|s| !s.is_none()) {
                Some(s) => Some(nano_amount(s, "sell_rate")?),
                None => None,
            },
            caller: caller.as_deref(),
            active: &active,
            sell_costs: sell_costs.as_deref(),
            acd,
        };
        let decision = self.table.route(d, &query);
        self.result(py, d, decision)
    }

    /// Routes a batch; `seeds` and `callers` give one value per number, `at`, `sell` and
    /// `acd` one for all or one per number. `active` lists the distinct sets of active window ids and `active_of` picks
    /// one per number (without it, the first set serves all).
    #[pyo3(signature = (
        numbers, at=None, seeds=None, *, exclude=None, sell_rate=None, callers=None, sell=None,
        acd=None, active=None, active_of=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn route_many(
        &self,
        py: Python<'_>,
        numbers: &Bound<'_, PyAny>,
        at: Option<&Bound<'_, PyAny>>,
        seeds: Option<&Bound<'_, PyAny>>,
        exclude: Option<&Bound<'_, PyAny>>,
        sell_rate: Option<&Bound<'_, PyAny>>,
        callers: Option<&Bound<'_, PyAny>>,
        sell: Option<&Bound<'_, PyAny>>,
        acd: Option<&Bound<'_, PyAny>>,
        active: Option<&Bound<'_, PyAny>>,
        active_of: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RouteResult>> {
        let sell_rate = match sell_rate.filter(|s| !s.is_none()) {
            Some(s) => Some(nano_amount(s, "sell_rate")?),
            None => None,
        };
        let numbers = Numbers::collect(numbers)?;
        let count = numbers.len();
        let seeds: Vec<u64> = match each(seeds, count, "seeds")? {
            Some(s) => s
                .iter()
                .map(|seed| seed_value(Some(seed)))
                .collect::<PyResult<_>>()?,
            None => (0..count)
                .map(|_| seed_value(None))
                .collect::<PyResult<_>>()?,
        };
        let at = Moments::collect(py, at, count)?;
        let callers: Vec<Option<Vec<u8>>> = match each(callers, count, "callers")? {
            Some(c) => c
                .iter()
                .enumerate()
                .map(|(i, c)| caller_digits(Some(c), &format!("callers[{i}]")))
                .collect::<PyResult<_>>()?,
            None => vec![None; count],
        };
        // One acd / sell rate for the batch, or one per number.
        let acd = acd.filter(|a| !a.is_none());
        let acds: Vec<u32> = match acd {
            Some(a) if !a.is_instance_of::<pyo3::types::PyInt>() => each(Some(a), count, "acd")?
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, a)| acd_seconds(Some(a), &format!("acd[{i}]")))
                .collect::<PyResult<_>>()?,
            _ => vec![acd_seconds(acd, "acd")?; count],
        };
        let sell = sell.filter(|s| !s.is_none());
        let sell_costs: Vec<SellCosts> = match sell {
            Some(s) if !s.hasattr(pyo3::intern!(py, "cost"))? => each(Some(s), count, "sell")?
                .unwrap_or_default()
                .iter()
                .zip(&acds)
                .map(|(s, &acd)| self.sell_costs(Some(s), acd))
                .collect::<PyResult<_>>()?,
            _ => {
                let mut memo: Vec<(u32, SellCosts)> = Vec::new();
                let mut out = Vec::with_capacity(count);
                for &acd in &acds {
                    let known = memo.iter().find(|(a, _)| *a == acd).map(|(_, c)| c.clone());
                    let costs = match known {
                        Some(c) => c,
                        None => {
                            let c = self.sell_costs(sell, acd)?;
                            memo.push((acd, c.clone()));
                            c
                        }
                    };
                    out.push(costs);
                }
                out
            }
        };
        let states: Vec<Vec<u64>> = match active.filter(|a| !a.is_none()) {
            Some(a) => a
                .try_iter()?
                .map(|s| active_bits(Some(&s?), self.window_limit))
                .collect::<PyResult<_>>()?,
            None => Vec::new(),
        };
        let state_of: Option<Vec<usize>> = match each(active_of, count, "active_of")? {
            Some(o) => {
                let mut out = Vec::with_capacity(count);
                for i in o {
                    let i: usize = i.extract()?;
                    if i >= states.len() {
                        return Err(lcr_error(
                            py,
                            "LcrError",
                            format!("active_of: {i} is not an index into active"),
                        ));
                    }
                    out.push(i);
                }
                Some(out)
            }
            None => None,
        };
        let exclude = exclusions(exclude)?;
        let table = &self.table;
        let exclude_ref = exclude.as_ref();
        let no_windows: Vec<u64> = Vec::new();
        let decisions: Vec<Decision> = py.detach(|| {
            use rayon::prelude::*;
            (0..count)
                .into_par_iter()
                .with_min_len(1024)
                .map(|i| {
                    let active = match &state_of {
                        Some(of) => &states[of[i]],
                        None => states.first().unwrap_or(&no_windows),
                    };
                    table.route(
                        numbers.get(i),
                        &Query {
                            at: at.get(i),
                            seed: seeds[i],
                            exclude: exclude_ref,
                            sell_rate,
                            caller: callers[i].as_deref(),
                            active,
                            sell_costs: sell_costs[i].as_deref(),
                            acd: acds[i],
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
