//! `RateDeck`, `Rate` and `RateBatch` for Python.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::ffi;
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

/// Dialed numbers copied out of their Python strings, checked, in chunks.
///
/// The strings of a large batch are spread over the heap, a cache miss each. Copying their
/// digits while the GIL is held reads each string once; the walks (on all cores, without
/// the GIL) then read compact buffers instead of the strings again, and a batch holds no
/// reference to a million strings (counting them up and down was two more misses each, and
/// a call each in the stable ABI). A `RateBatch` item takes its prefix from the copy.
pub struct Numbers {
    /// [`LOOKUP_CHUNK`] numbers each (the last one fewer), filled up to the first problem.
    chunks: Vec<Chunk>,
    /// How many items the batch has.
    count: usize,
    /// The first item that is not a number, and its position: the reference checks in order,
    /// so it is the error, and no item after it is read.
    problem: Option<(usize, Py<PyAny>)>,
}

/// The digits of some numbers, one after another, each without its leading `+`.
#[derive(Default)]
struct Chunk {
    digits: Vec<u8>,
    /// Number `i` of the chunk is `digits[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<usize>,
}

impl Chunk {
    fn get(&self, i: usize) -> &[u8] {
        &self.digits[self.bounds[i]..self.bounds[i + 1]]
    }
}

/// How many numbers a chunk holds, and a parallel task looks up at once.
const LOOKUP_CHUNK: usize = 8192;

/// The chunks of a batch of `count` numbers, empty.
fn empty_chunks(count: usize) -> Vec<Chunk> {
    (0..count.div_ceil(LOOKUP_CHUNK))
        .map(|_| Chunk::default())
        .collect()
}

impl Numbers {
    /// The numbers of a Python iterable of `str`, checked: all digits after an optional `+`.
    pub fn collect(numbers: &Bound<'_, PyAny>) -> PyResult<Self> {
        let out = Self::gather(numbers)?;
        out.check(numbers.py())?;
        Ok(out)
    }

    /// The numbers, unchecked: [`Self::check`] says whether they all are.
    fn gather(numbers: &Bound<'_, PyAny>) -> PyResult<Self> {
        let items = Items::of(numbers)?;
        let mut chunks = empty_chunks(items.count);
        let problem = items.copy(&mut chunks, |_, _| {})?;
        Ok(Self {
            chunks,
            count: items.count,
            problem,
        })
    }

    /// The error for the first item that is not a number, if there is one.
    pub fn check(&self, py: Python<'_>) -> PyResult<()> {
        match &self.problem {
            Some((i, item)) => Err(bad_number(item.bind(py), *i)),
            None => Ok(()),
        }
    }

    /// [`Self::collect`] and [`RateDeck::lookup_many`], as in the reference a bad `at`
    /// reported before the first bad number.
    ///
    /// A large batch is a pipeline: each chunk, once copied (with the GIL), is looked up by
    /// the rayon pool (without it) while the next chunks are copied, so that on more than
    /// one core the copy hides behind the lookups instead of adding to them.
    pub fn collect_and_look_up(
        py: Python<'_>,
        numbers: &Bound<'_, PyAny>,
        deck: &Deck,
        at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Self, Vec<Option<Match>>)> {
        let items = Items::of(numbers)?;
        let count = items.count;
        let at = Moments::collect(py, at, count)?;
        let live = at.in_force(deck, count);
        let walk = |c: usize, chunk: &Chunk, part: &mut [Option<Match>]| {
            look_up_chunk(deck, &at, live.as_ref(), c, chunk, part);
        };
        let mut chunks = empty_chunks(count);
        let mut out = vec![None; count];
        let problem = if count <= LOOKUP_CHUNK {
            items.copy(&mut chunks, |c, chunk| walk(c, chunk, &mut out))?
        } else {
            // Re-bound under the GIL taken back below: a `Bound` cannot leave this thread's
            // hold of it. (Another thread changing the list in between may make the copy
            // read its new items, or raise `IndexError` if it shrank; never stray memory.)
            let (sequence, list) = (items.sequence.clone().unbind(), items.list);
            let (chunks, out) = (&mut chunks, &mut out);
            py.detach(|| {
                rayon::in_place_scope(|scope| {
                    Python::attach(|py| {
                        let items = Items {
                            sequence: sequence.bind(py).clone(),
                            list,
                            count,
                        };
                        let mut parts = out.chunks_mut(LOOKUP_CHUNK);
                        items.copy(chunks, |c, chunk| {
                            let part = parts.next().expect("one part per chunk");
                            scope.spawn(move |_| walk(c, chunk, part));
                        })
                    })
                })
            })?
        };
        let numbers = Self {
            chunks,
            count,
            problem,
        };
        numbers.check(py)?;
        Ok((numbers, out))
    }

    /// Looks every (checked) number up in `deck`; a large batch in chunks spread over the
    /// rayon pool, a small one on this thread (handing it over would cost more).
    pub fn lookup_all(&self, deck: &Deck, at: &Moments) -> Vec<Option<Match>> {
        let mut out = vec![None; self.len()];
        let live = at.in_force(deck, self.len());
        let walk = |(c, (chunk, part)): (usize, (&Chunk, &mut [Option<Match>]))| {
            look_up_chunk(deck, at, live.as_ref(), c, chunk, part);
        };
        if self.len() <= LOOKUP_CHUNK {
            self.chunks
                .iter()
                .zip(out.chunks_mut(LOOKUP_CHUNK))
                .enumerate()
                .for_each(walk);
        } else {
            self.chunks
                .par_iter()
                .zip(out.par_chunks_mut(LOOKUP_CHUNK))
                .enumerate()
                .for_each(walk);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// The digits of number `i` (of a checked batch).
    pub fn get(&self, i: usize) -> &[u8] {
        self.chunks[i / LOOKUP_CHUNK].get(i % LOOKUP_CHUNK)
    }
}

/// Looks up chunk `c` of a batch into `out`, its part of the answers.
fn look_up_chunk(
    deck: &Deck,
    at: &Moments,
    live: Option<&InForce>,
    c: usize,
    chunk: &Chunk,
    out: &mut [Option<Match>],
) {
    let start = c * LOOKUP_CHUNK;
    let get = |i: usize| chunk.get(i);
    match live {
        Some(live) => deck.lookup_many_in(get, live, out),
        None => deck.lookup_many(get, |i| at.get(start + i), out),
    }
}

/// The items of a batch: a list or a tuple (any other iterable is made a tuple first),
/// read by index.
struct Items<'py> {
    sequence: Bound<'py, PyAny>,
    /// A list (else a tuple).
    list: bool,
    count: usize,
}

impl<'py> Items<'py> {
    fn of(numbers: &Bound<'py, PyAny>) -> PyResult<Self> {
        let sequence = if numbers.is_instance_of::<PyList>() || numbers.is_instance_of::<PyTuple>()
        {
            numbers.clone()
        } else {
            numbers
                .py()
                .get_type::<PyTuple>()
                .call1((numbers,))?
                .into_any()
        };
        let count = sequence.len()?;
        Ok(Self {
            list: sequence.is_instance_of::<PyList>(),
            sequence,
            count,
        })
    }

    /// Item `i` (below `count`) without a reference of its own, or null (with a Python
    /// error set) if the sequence has shrunk.
    fn borrowed(&self, i: usize) -> *mut ffi::PyObject {
        let (sequence, i) = (self.sequence.as_ptr(), i as ffi::Py_ssize_t);
        // SAFETY: the sequence is alive and is a list or a tuple (see `of`); both calls
        // check the index.
        unsafe {
            if self.list {
                ffi::PyList_GetItem(sequence, i)
            } else {
                ffi::PyTuple_GetItem(sequence, i)
            }
        }
    }

    /// Copies the items, chunk by chunk, up to the first that is not a number (returned
    /// with its position); `ready(c, chunk)` is called on each chunk once it is complete.
    ///
    /// An item is read borrowed: a reference of its own, for each of a million strings, would
    /// cost more than copying them. It stays valid because this thread holds the GIL and runs
    /// no Python code while it reads it: reading a `str`'s UTF-8 form runs none, and only
    /// when that fails (making an error object may run the garbage collector) is the item
    /// used again, fetched anew.
    fn copy<'c>(
        &self,
        chunks: &'c mut [Chunk],
        mut ready: impl FnMut(usize, &'c Chunk),
    ) -> PyResult<Option<(usize, Py<PyAny>)>> {
        let py = self.sequence.py();
        for (c, chunk) in chunks.iter_mut().enumerate() {
            let first = c * LOOKUP_CHUNK;
            let end = (first + LOOKUP_CHUNK).min(self.count);
            // E.164 numbers have at most 15 digits; a chunk of longer ones grows its buffer.
            chunk.digits.reserve((end - first) * 16);
            chunk.bounds.reserve(end - first + 1);
            chunk.bounds.push(0);
            for i in first..end {
                let item = self.borrowed(i);
                if item.is_null() {
                    return Err(PyErr::fetch(py));
                }
                // SAFETY: `item` is a live `str` (see above) and is read only in this loop.
                match unsafe { utf8(py, item) }.and_then(crate::number::digit_body) {
                    Some(body) => {
                        chunk.digits.extend_from_slice(body);
                        chunk.bounds.push(chunk.digits.len());
                    }
                    None => return Ok(Some((i, self.sequence.get_item(i)?.unbind()))),
                }
            }
            ready(c, chunk);
        }
        Ok(None)
    }
}

/// The UTF-8 form of `item`, a `str`; `None` for anything else or a `str` without one (a
/// lone surrogate).
///
/// # Safety
///
/// `item` must be a live object, alive and unchanged for `'a`.
#[inline]
unsafe fn utf8<'a>(py: Python<'_>, item: *mut ffi::PyObject) -> Option<&'a [u8]> {
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `item` is live; the call only reads it (and may cache its UTF-8 form in it)
    // and, for a non-`str`, sets a Python error and returns null.
    let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(item, &mut len) };
    if data.is_null() {
        drop(PyErr::take(py));
        return None;
    }
    // SAFETY: the buffer belongs to the `str`, alive and unchanged for `'a`.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) })
}

/// The error for `item`, the number at `i` that is not all digits after an optional `+`: a
/// non-`str` is a `TypeError`; a `str` with no UTF-8 form (a lone surrogate) is an invalid
/// number, worded by the reference (Python quotes the surrogate).
fn bad_number(item: &Bound<'_, PyAny>, i: usize) -> PyErr {
    let py = item.py();
    let Ok(text) = item.cast::<PyString>() else {
        return PyTypeError::new_err(format!("numbers[{i}] is not a str"));
    };
    if let Ok(text) = text.to_str() {
        return match crate::number::digits(text) {
            Err(error) => lcr_error(py, "LcrError", format!("numbers[{i}]: {error}")),
            Ok(_) => lcr_error(py, "LcrError", format!("numbers[{i}]: not a number")),
        };
    }
    let worded = py
        .import("lcr.reference")
        .and_then(|reference| reference.getattr("digits")?.call1((item,)));
    match worded {
        Err(e) => lcr_error(py, "LcrError", format!("numbers[{i}]: {}", e.value(py))),
        Ok(_) => lcr_error(py, "LcrError", format!("numbers[{i}]: not valid UTF-8")),
    }
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
        let numbers = Numbers::gather(numbers)?;
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
