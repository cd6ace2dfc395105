//! `RateDeck`, `Rate` and `RateBatch` for Python.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PySlice, PyString, PyTuple};
use rayon::prelude::*;

use super::convert::{
    datetime_or_none, decimal, deck_error, deck_error_object, digits, lcr_error, seconds_at,
};
use crate::deck::{Deck, DeckOptions, Field, InForce, Match, MAX_PREFIX_DIGITS};
use crate::load::{self, ColumnRef, CsvOptions, DeckError as CoreDeckError};
use crate::money::{Rounding, MAX_PRECISION};
use crate::rate::Tariff;

/// One rate of a deck as matched for a number.
///
/// It points at its deck's tariff instead of copying it: a lookup then clones the deck's
/// `Arc` (a counter in cache) and reads no tariff, whose line (and its destination name's
/// counter) would be one more cache miss per lookup on a large deck. A `Rate` keeps its deck
/// alive, as a call keeps the deck version it started with.
#[pyclass(module = "lcr._core", frozen, name = "Rate")]
pub struct Rate {
    deck: Arc<Deck>,
    tariff: u32,
    /// Inline: decks cap prefixes at MAX_PREFIX_DIGITS, and a lookup should not allocate.
    prefix: [u8; MAX_PREFIX_DIGITS],
    prefix_len: u8,
}

impl Rate {
    pub fn new(deck: &Arc<Deck>, prefix: &[u8], tariff: u32) -> Self {
        let kept = prefix.len().min(MAX_PREFIX_DIGITS); // deck and route prefixes are capped
        Self {
            deck: Arc::clone(deck),
            tariff,
            prefix: {
                let mut inline = [0; MAX_PREFIX_DIGITS];
                inline[..kept].copy_from_slice(&prefix[..kept]);
                inline
            },
            prefix_len: kept as u8,
        }
    }

    fn terms(&self) -> &Tariff {
        self.deck.tariff(self.tariff)
    }

    fn precision_of(&self) -> u32 {
        self.deck.options().precision
    }

    fn prefix_str(&self) -> &str {
        // Digits only (checked when the deck was built), so always valid UTF-8.
        std::str::from_utf8(&self.prefix[..self.prefix_len as usize]).unwrap_or("")
    }

    fn key(&self) -> (&str, &str, i64, i64, u32, u32, i64, i64, u32) {
        let t = self.terms();
        (
            self.prefix_str(),
            self.deck.destination(t),
            t.rate,
            t.connect_fee,
            t.initial_increment,
            t.subsequent_increment,
            t.effective_from,
            t.effective_to,
            self.precision_of(),
        )
    }
}

fn too_costly(py: Python<'_>) -> PyErr {
    lcr_error(py, "LcrError", "cost too large to represent".to_owned())
}

fn duration(py: Python<'_>, duration_s: i64) -> PyResult<u64> {
    u64::try_from(duration_s).map_err(|_| {
        lcr_error(
            py,
            "LcrError",
            format!("duration_s must be >= 0, got {duration_s}"),
        )
    })
}

#[pymethods]
impl Rate {
    #[getter]
    fn prefix(&self) -> &str {
        self.prefix_str()
    }
    #[getter]
    fn destination(&self) -> &str {
        self.deck.destination(self.terms())
    }
    #[getter]
    fn rate<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal(py, self.terms().rate, self.precision_of())
    }
    #[getter]
    fn connect_fee<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal(py, self.terms().connect_fee, self.precision_of())
    }
    #[getter]
    fn initial_increment(&self) -> u32 {
        self.terms().initial_increment
    }
    #[getter]
    fn subsequent_increment(&self) -> u32 {
        self.terms().subsequent_increment
    }
    #[getter]
    fn effective_from<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        datetime_or_none(py, self.terms().effective_from)
    }
    #[getter]
    fn effective_to<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        datetime_or_none(py, self.terms().effective_to)
    }
    #[getter]
    fn precision(&self) -> u32 {
        self.precision_of()
    }

    fn billed_seconds(&self, py: Python<'_>, duration_s: i64) -> PyResult<u64> {
        Ok(self.terms().billed_seconds(duration(py, duration_s)?))
    }

    fn cost<'py>(&self, py: Python<'py>, duration_s: i64) -> PyResult<Bound<'py, PyAny>> {
        let units = self
            .deck
            .cost(self.tariff, duration(py, duration_s)?)
            .ok_or_else(|| too_costly(py))?;
        decimal(py, units, self.precision_of())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Rate>()
            .is_ok_and(|o| o.get().key() == self.key())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key().hash(&mut h);
        h.finish()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let t = self.terms();
        let precision = self.precision_of();
        Ok(format!(
            "Rate(prefix={:?}, destination={:?}, rate=Decimal('{}'), connect_fee=Decimal('{}'), \
             initial_increment={}, subsequent_increment={}, effective_from={}, effective_to={})",
            self.prefix_str(),
            self.deck.destination(t),
            decimal(py, t.rate, precision)?.str()?,
            decimal(py, t.connect_fee, precision)?.str()?,
            t.initial_increment,
            t.subsequent_increment,
            datetime_or_none(py, t.effective_from)?
                .map_or(Ok("None".to_owned()), |d| d.repr().map(|r| r.to_string()))?,
            datetime_or_none(py, t.effective_to)?
                .map_or(Ok("None".to_owned()), |d| d.repr().map(|r| r.to_string()))?,
        ))
    }
}

/// Dialed numbers read in place from their Python strings, so that the walks can run on all
/// cores without the GIL and without copying a million strings first.
pub struct Numbers {
    /// Keeps every string, and so its UTF-8 buffer, alive while `spans` point into them. A
    /// tuple: it cannot change, so no other thread can drop a string while the walks read
    /// it without the GIL, and making it from a list is one C loop.
    _owner: Py<PyTuple>,
    /// The digits of each number (its leading `+` already stepped over once checked).
    spans: Vec<Span>,
    /// The first item that is not a `str` with a UTF-8 form (its span is left empty): its
    /// error is due only if no number before it is bad, as the reference checks in order.
    unreadable: Option<usize>,
}

/// The UTF-8 bytes of a `str` that a [`Numbers`] keeps alive. Not `Copy`: bytes are only
/// handed out borrowed from the `Numbers` that owns the string.
struct Span {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a span points into the UTF-8 buffer of a `str` object that its `Numbers` keeps
// alive; a Python `str` never changes, so reading it from any thread, without the GIL, is
// sound.
unsafe impl Send for Span {}
unsafe impl Sync for Span {}

impl Span {
    fn bytes(&self) -> &[u8] {
        // SAFETY: see the `Send` impl; the buffer outlives the `Numbers` holding the span.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Numbers {
    /// The numbers of a Python iterable of `str`, checked: all digits after an optional `+`.
    pub fn collect(numbers: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut out = Self::gather(numbers)?;
        out.check(numbers.py())?;
        Ok(out)
    }

    /// Checks every number and steps over a leading `+`, in parallel; the first problem by
    /// position is the error, whether a bad digit or an item that is no `str`.
    pub fn check(&mut self, py: Python<'_>) -> PyResult<()> {
        let bad = py.detach(|| {
            self.spans
                .par_chunks_mut(CHECK_CHUNK)
                .enumerate()
                .filter_map(|(c, part)| check_all(part).map(|i| c * CHECK_CHUNK + i))
                .min()
        });
        match self.first_problem(bad) {
            Some(i) => Err(self.bad_number(py, i)),
            None => Ok(()),
        }
    }

    /// [`Self::collect`] and [`RateDeck::lookup_many`] in one pass: each chunk of numbers is
    /// checked and walked while its strings are in cache. As in the reference, a bad `at`
    /// is reported first, then the first bad number.
    pub fn collect_and_look_up(
        py: Python<'_>,
        numbers: &Bound<'_, PyAny>,
        deck: &Deck,
        at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Self, Vec<Option<Match>>)> {
        let mut gathered = Self::gather(numbers)?;
        let at = Moments::collect(py, at, gathered.len())?;
        if gathered.unreadable.is_some() {
            gathered.check(py)?;
        }
        let at = &at;
        let mut out = vec![None; gathered.len()];
        let bad = py.detach(|| {
            let live = at.in_force(deck, gathered.len());
            gathered
                .spans
                .par_chunks_mut(CHECK_CHUNK)
                .zip(out.par_chunks_mut(CHECK_CHUNK))
                .enumerate()
                .filter_map(|(c, (spans, part))| {
                    if let Some(i) = check_all(spans) {
                        return Some(c * CHECK_CHUNK + i);
                    }
                    look_up_chunk(deck, at, live.as_ref(), c, spans, part);
                    None
                })
                .min()
        });
        match bad {
            Some(i) => Err(gathered.bad_number(py, i)),
            None => Ok((gathered, out)),
        }
    }

    /// Looks every (checked) number up in `deck`, chunks spread over the rayon pool.
    pub fn lookup_all(&self, deck: &Deck, at: &Moments) -> Vec<Option<Match>> {
        let mut out = vec![None; self.len()];
        let live = at.in_force(deck, self.len());
        self.spans
            .par_chunks(CHECK_CHUNK)
            .zip(out.par_chunks_mut(CHECK_CHUNK))
            .enumerate()
            .for_each(|(c, (spans, part))| look_up_chunk(deck, at, live.as_ref(), c, spans, part));
        out
    }

    /// The position of the first problem: a bad digit at `bad` or the unreadable item.
    fn first_problem(&self, bad: Option<usize>) -> Option<usize> {
        bad.into_iter().chain(self.unreadable).min()
    }

    /// The error for the number at `i` (its leading `+` not stepped over yet).
    fn bad_number(&self, py: Python<'_>, i: usize) -> PyErr {
        if self.unreadable == Some(i) {
            return self.unreadable_error(py, i);
        }
        let text = String::from_utf8_lossy(self.spans[i].bytes());
        let error = crate::number::digits(&text).unwrap_err();
        lcr_error(py, "LcrError", format!("numbers[{i}]: {error}"))
    }

    /// A non-`str` is a `TypeError`; a `str` with no UTF-8 form (a lone surrogate) is an
    /// invalid number, worded by the reference (Python quotes the surrogate).
    fn unreadable_error(&self, py: Python<'_>, i: usize) -> PyErr {
        let item = match self._owner.bind(py).get_item(i) {
            Ok(item) => item,
            Err(e) => return e,
        };
        if !item.is_instance_of::<PyString>() {
            return PyTypeError::new_err(format!("numbers[{i}] is not a str"));
        }
        let worded = py
            .import("lcr.reference")
            .and_then(|reference| reference.getattr("digits")?.call1((&item,)));
        match worded {
            Err(e) => lcr_error(py, "LcrError", format!("numbers[{i}]: {}", e.value(py))),
            Ok(_) => lcr_error(py, "LcrError", format!("numbers[{i}]: not valid UTF-8")),
        }
    }

    /// Reads the strings' UTF-8 buffers, unchecked.
    fn gather(numbers: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = numbers.py();
        let owner = if let Ok(tuple) = numbers.cast::<PyTuple>() {
            tuple.clone()
        } else if let Ok(list) = numbers.cast::<PyList>() {
            list.to_tuple()
        } else {
            py.get_type::<PyTuple>()
                .call1((numbers,))?
                .cast_into::<PyTuple>()?
        };
        let mut spans = Vec::with_capacity(owner.len());
        let mut unreadable = None;
        for (index, item) in owner.iter_borrowed().enumerate() {
            let mut len: pyo3::ffi::Py_ssize_t = 0;
            // SAFETY: `item` is a live object borrowed from `owner`; the call only reads it
            // and, for a non-`str`, sets a Python error and returns null.
            let data = unsafe { pyo3::ffi::PyUnicode_AsUTF8AndSize(item.as_ptr(), &mut len) };
            if data.is_null() {
                drop(PyErr::take(py));
                unreadable.get_or_insert(index);
                spans.push(Span {
                    ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
                    len: 0,
                });
                continue;
            }
            spans.push(Span {
                ptr: data.cast::<u8>(),
                len: len as usize,
            });
        }
        Ok(Self {
            _owner: owner.unbind(),
            spans,
            unreadable,
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        self.spans[i].bytes()
    }
}

/// How many numbers a parallel task checks (and walks) at once.
const CHECK_CHUNK: usize = 8192;

/// Looks up chunk `c` of a batch: `spans` (checked) into `out`.
fn look_up_chunk(
    deck: &Deck,
    at: &Moments,
    live: Option<&InForce>,
    c: usize,
    spans: &[Span],
    out: &mut [Option<Match>],
) {
    let start = c * CHECK_CHUNK;
    let get = |i: usize| spans[i].bytes();
    match live {
        Some(live) => deck.lookup_many_in(get, live, out),
        None => deck.lookup_many(get, |i| at.get(start + i), out),
    }
}

/// Checks a chunk (see [`strip_plus_and_check`]); the position of the first bad number.
fn check_all(spans: &mut [Span]) -> Option<usize> {
    spans
        .iter_mut()
        .position(|span| !strip_plus_and_check(span))
}

/// Steps `span` over a leading `+` and says whether the rest is all digits; a bad span is
/// left as it was, so that its error can quote the whole number.
#[inline]
fn strip_plus_and_check(span: &mut Span) -> bool {
    let Some(body) = crate::number::digit_body(span.bytes()) else {
        return false;
    };
    *span = Span {
        ptr: body.as_ptr(),
        len: body.len(),
    };
    true
}

/// The moment(s) of a batch: one for all numbers, or one per number (re-rating CDRs).
pub enum Moments {
    One(i64),
    Each(Vec<i64>),
}

impl Moments {
    pub fn collect(py: Python<'_>, at: Option<&Bound<'_, PyAny>>, count: usize) -> PyResult<Self> {
        let datetime = py.import("datetime")?.getattr("datetime")?;
        match at {
            Some(a) if !a.is_none() && !a.is_instance(&datetime)? => {
                let mut each = Vec::with_capacity(count);
                for item in a.try_iter()? {
                    each.push(seconds_at(Some(&item?))?);
                }
                if each.len() != count {
                    return Err(lcr_error(
                        py,
                        "LcrError",
                        format!("{count} numbers but {} moments in at", each.len()),
                    ));
                }
                Ok(Self::Each(each))
            }
            _ => Ok(Self::One(seconds_at(at)?)),
        }
    }

    /// The tariffs in force, when one moment serves a batch large enough to gain from it.
    fn in_force(&self, deck: &Deck, count: usize) -> Option<InForce> {
        match self {
            Self::One(t) if deck.worth_in_force(count) => Some(deck.in_force_at(*t)),
            _ => None,
        }
    }

    pub fn get(&self, i: usize) -> i64 {
        match self {
            Self::One(t) => *t,
            Self::Each(ts) => ts[i],
        }
    }
}

impl RateBatch {
    fn item(&self, i: usize) -> Option<Rate> {
        self.matches[i]
            .map(|m| Rate::new(&self.deck, &self.numbers.get(i)[..m.prefix_len()], m.tariff))
    }
}

/// The matches of a `lookup_many`, kept in Rust; `Rate` objects are made on access.
#[pyclass(module = "lcr._core", frozen, name = "RateBatch", sequence)]
pub struct RateBatch {
    deck: Arc<Deck>,
    numbers: Numbers,
    matches: Vec<Option<Match>>,
}

#[pymethods]
impl RateBatch {
    fn __len__(&self) -> usize {
        self.matches.len()
    }

    /// An item, or a list for a slice (the batch itself stays in Rust).
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = key.cast::<PySlice>() {
            let range = slice.indices(self.matches.len() as isize)?;
            let items = PyList::empty(py);
            let mut i = range.start;
            for _ in 0..range.slicelength {
                items.append(self.item(i as usize))?;
                i += range.step;
            }
            return Ok(items.into_any());
        }
        let index: isize = key.extract()?;
        let len = self.matches.len() as isize;
        let i = if index < 0 { index + len } else { index };
        if !(0..len).contains(&i) {
            return Err(PyIndexError::new_err("RateBatch index out of range"));
        }
        self.item(i as usize)
            .into_pyobject(py)
            .map(|o| o.into_any())
    }

    /// How many numbers found a rate.
    fn matched(&self) -> usize {
        self.matches.iter().filter(|m| m.is_some()).count()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RateBatch {} numbers, {} matched>",
            self.matches.len(),
            self.matched()
        )
    }
}

/// An immutable rate deck.
#[pyclass(module = "lcr._core", frozen, name = "RateDeck")]
pub struct RateDeck {
    pub deck: Arc<Deck>,
    errors: Vec<CoreDeckError>,
    path: Option<String>,
}

fn deck_options(py: Python<'_>, precision: u32, rounding: &str) -> PyResult<DeckOptions> {
    if precision > MAX_PRECISION {
        return Err(lcr_error(
            py,
            "LcrError",
            format!("precision must be 0..={MAX_PRECISION}, got {precision}"),
        ));
    }
    let rounding = Rounding::parse(rounding).ok_or_else(|| {
        lcr_error(
            py,
            "LcrError",
            format!(
                "rounding must be 'up', 'down' or 'half_up', got {}",
                crate::quote::quoted(rounding)
            ),
        )
    })?;
    Ok(DeckOptions {
        precision,
        rounding,
    })
}

impl RateDeck {
    fn number_at<'n>(
        &self,
        py: Python<'_>,
        number: &'n str,
        at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<(&'n [u8], Match)>> {
        let d = digits(py, number)?;
        let at = seconds_at(at)?;
        Ok(self.deck.lookup(d, at).map(|m| (d, m)))
    }
}

#[pymethods]
impl RateDeck {
    #[staticmethod]
    #[pyo3(signature = (path, *, columns=None, strict=true, precision=6, rounding="up", delimiter=",", has_header=true, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_csv(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        columns: Option<&Bound<'_, PyDict>>,
        strict: bool,
        precision: u32,
        rounding: &str,
        delimiter: &str,
        has_header: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let path: String = py
            .import("os")?
            .getattr("fspath")?
            .call1((path,))?
            .extract()?;
        let mut mapping = Vec::new();
        if let Some(columns) = columns {
            for (key, value) in columns.iter() {
                let key: String = key.extract()?;
                let field = Field::from_name(&key).ok_or_else(|| {
                    lcr_error(
                        py,
                        "LcrError",
                        format!("columns: unknown field {}", crate::quote::quoted(&key)),
                    )
                })?;
                let column = if value.is_instance_of::<PyInt>() {
                    let index: i64 = value.extract()?;
                    ColumnRef::Index(usize::try_from(index).map_err(|_| {
                        lcr_error(
                            py,
                            "LcrError",
                            format!("columns: {} index must be >= 0", crate::quote::quoted(&key)),
                        )
                    })?)
                } else {
                    ColumnRef::Name(value.extract()?)
                };
                mapping.push((field, column));
            }
        }
        let delimiter = match delimiter.as_bytes() {
            [b] => *b,
            _ => {
                return Err(lcr_error(
                    py,
                    "LcrError",
                    format!(
                        "delimiter must be one ASCII character, got {}",
                        crate::quote::quoted(delimiter)
                    ),
                ))
            }
        };
        let options = CsvOptions {
            columns: mapping,
            has_header,
            delimiter,
            strict,
            deck: deck_options(py, precision, rounding)?,
        };
        let result = py.detach(|| {
            let mut report = |rows: u64, done: u64, total: u64| {
                if let Some(callback) = &progress {
                    Python::attach(|py| {
                        // A failing progress display must not lose the load.
                        let _ = callback.call1(py, (rows, done, total));
                    });
                }
            };
            load::load_csv(&path, &options, &mut report)
        });
        let (deck, errors) = result.map_err(|e| deck_error(py, &e))?;
        Ok(Self {
            deck: Arc::new(deck),
            errors,
            path: Some(path),
        })
    }

    #[staticmethod]
    #[pyo3(signature = (rows, *, strict=true, precision=6, rounding="up"))]
    fn from_rows(
        py: Python<'_>,
        rows: &Bound<'_, PyAny>,
        strict: bool,
        precision: u32,
        rounding: &str,
    ) -> PyResult<Self> {
        let normalise = py.import("lcr._rows")?.getattr("row_fields")?;
        let mut texts: Vec<[String; 8]> = Vec::new();
        for (i, row) in rows.try_iter()?.enumerate() {
            let fields: Vec<String> = normalise.call1((row?, i + 1))?.extract()?;
            let fields: [String; 8] = fields
                .try_into()
                .map_err(|_| PyTypeError::new_err("row_fields must return 8 strings"))?;
            texts.push(fields);
        }
        let options = CsvOptions {
            strict,
            deck: deck_options(py, precision, rounding)?,
            ..CsvOptions::default()
        };
        let result = py.detach(|| {
            load::load_rows(
                texts.iter().map(|r| std::array::from_fn(|i| r[i].as_str())),
                &options,
                "<rows>",
            )
        });
        let (deck, errors) = result.map_err(|e| deck_error(py, &e))?;
        Ok(Self {
            deck: Arc::new(deck),
            errors,
            path: None,
        })
    }

    #[pyo3(signature = (number, at=None))]
    fn lookup(
        &self,
        py: Python<'_>,
        number: &str,
        at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Rate>> {
        Ok(self
            .number_at(py, number, at)?
            .map(|(d, m)| Rate::new(&self.deck, &d[..m.prefix_len()], m.tariff)))
    }

    #[pyo3(signature = (number, duration_s, at=None))]
    fn cost<'py>(
        &self,
        py: Python<'py>,
        number: &str,
        duration_s: i64,
        at: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let seconds = duration(py, duration_s)?;
        match self.number_at(py, number, at)? {
            Some((_, m)) => decimal(
                py,
                self.deck
                    .cost(m.tariff, seconds)
                    .ok_or_else(|| too_costly(py))?,
                self.deck.options().precision,
            ),
            None => Err(lcr_error(
                py,
                "NoRateError",
                format!("no rate in force for {}", crate::quote::quoted(number)),
            )),
        }
    }

    #[pyo3(signature = (numbers, at=None))]
    fn lookup_many(
        &self,
        py: Python<'_>,
        numbers: &Bound<'_, PyAny>,
        at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RateBatch> {
        let deck = Arc::clone(&self.deck);
        let (numbers, matches) = Numbers::collect_and_look_up(py, numbers, &deck, at)?;
        Ok(RateBatch {
            deck,
            numbers,
            matches,
        })
    }

    #[pyo3(signature = (numbers, durations, at=None))]
    fn cost_many<'py>(
        &self,
        py: Python<'py>,
        numbers: &Bound<'py, PyAny>,
        durations: &Bound<'py, PyAny>,
        at: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        // The reference's order: the moments, then the numbers, then the durations.
        let mut numbers = Numbers::gather(numbers)?;
        let at = Moments::collect(py, at, numbers.len())?;
        numbers.check(py)?;
        let mut seconds = Vec::with_capacity(numbers.len());
        for (i, d) in durations.try_iter()?.enumerate() {
            let d: i64 = d?.extract()?;
            seconds.push(duration(py, d).map_err(|_| {
                lcr_error(
                    py,
                    "LcrError",
                    format!("durations[{i}] must be >= 0, got {d}"),
                )
            })?);
        }
        if seconds.len() != numbers.len() {
            return Err(lcr_error(
                py,
                "LcrError",
                format!("{} numbers but {} durations", numbers.len(), seconds.len()),
            ));
        }
        let deck = &self.deck;
        let costs: Vec<Option<Option<i64>>> = py.detach(|| {
            numbers
                .lookup_all(deck, &at)
                .into_iter()
                .zip(&seconds)
                .map(|(m, &d)| m.map(|m| deck.cost(m.tariff, d)))
                .collect()
        });
        let precision = deck.options().precision;
        let mut made: HashMap<i64, Bound<'py, PyAny>> = HashMap::new();
        let out = PyList::empty(py);
        for cost in costs {
            match cost {
                None => out.append(py.None())?,
                Some(None) => return Err(too_costly(py)),
                Some(Some(units)) => {
                    if let Some(obj) = made.get(&units) {
                        out.append(obj)?;
                    } else {
                        let obj = decimal(py, units, precision)?;
                        out.append(&obj)?;
                        made.insert(units, obj);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every row, prefixes ascending and the newest version of a prefix first.
    fn rows(&self) -> Vec<Rate> {
        self.deck
            .rows()
            .into_iter()
            .map(|(prefix, tariff)| Rate::new(&self.deck, &prefix, tariff))
            .collect()
    }

    #[getter]
    fn errors<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.errors
            .iter()
            .map(|e| deck_error_object(py, e))
            .collect()
    }

    #[getter]
    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    #[getter]
    fn precision(&self) -> u32 {
        self.deck.options().precision
    }

    #[getter]
    fn rounding(&self) -> &'static str {
        self.deck.options().rounding.name()
    }

    #[getter]
    fn prefix_count(&self) -> usize {
        self.deck.prefix_count()
    }

    /// Bytes held by the deck's own structures, for capacity planning.
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.deck.memory_bytes()
    }

    fn __len__(&self) -> usize {
        self.deck.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RateDeck {} rows, {} prefixes{}>",
            self.deck.len(),
            self.deck.prefix_count(),
            self.path
                .as_ref()
                .map_or(String::new(), |p| format!(" from {p:?}"))
        )
    }
}
