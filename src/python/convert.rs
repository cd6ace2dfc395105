//! Conversions at the Python edge: Decimal, datetime, numbers, and our exception classes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyFloat, PyInt, PyString, PyType};

use crate::load::DeckError as CoreDeckError;
use crate::money::{format_amount, parse_amount, MAX_PRECISION};
use crate::number;
use crate::timefmt::format_timestamp;

static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATETIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMEZONE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LAST_AT: std::sync::Mutex<Option<(Py<PyAny>, i64)>> = std::sync::Mutex::new(None);
static DATETIME_FROM_ISO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    ERRORS
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("lcr.errors")?.unbind()))
        .map(|m| m.bind(py))
}

/// An `lcr.LcrError` (or subclass `name`) with `message`.
pub fn lcr_error(py: Python<'_>, name: &str, message: String) -> PyErr {
    match errors(py).and_then(|m| m.getattr(name)) {
        Ok(class) => match class.call1((message,)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// The core's deck error as an `lcr.DeckError` instance.
pub fn deck_error_object<'py>(py: Python<'py>, e: &CoreDeckError) -> PyResult<Bound<'py, PyAny>> {
    errors(py)?.getattr("DeckError")?.call1((
        e.path.clone(),
        e.line,
        e.column.clone(),
        e.reason.clone(),
    ))
}

pub fn deck_error(py: Python<'_>, e: &CoreDeckError) -> PyErr {
    match deck_error_object(py, e) {
        Ok(instance) => PyErr::from_value(instance),
        Err(err) => err,
    }
}

pub fn decimal<'py>(py: Python<'py>, units: i64, precision: u32) -> PyResult<Bound<'py, PyAny>> {
    DECIMAL
        .import(py, "decimal", "Decimal")?
        .call1((format_amount(units, precision),))
}

/// Seconds since the epoch as an aware UTC datetime; `None` for the open ends of a window.
pub fn datetime_or_none<'py>(py: Python<'py>, seconds: i64) -> PyResult<Option<Bound<'py, PyAny>>> {
    if seconds == i64::MIN || seconds == i64::MAX {
        return Ok(None);
    }
    let from_iso = DATETIME_FROM_ISO.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("datetime")?
                .getattr("datetime")?
                .getattr("fromisoformat")?
                .unbind(),
        )
    })?;
    from_iso
        .bind(py)
        .call1((format_timestamp(seconds).replace('Z', "+00:00"),))
        .map(Some)
}

/// `at` as seconds since the epoch: an aware datetime, a naive one taken as UTC, or now.
pub fn seconds_at(at: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
    let Some(at) = at.filter(|a| !a.is_none()) else {
        return now_seconds();
    };
    // Callers often pass the same moment again (a billing run, a batch of calls): the last
    // one is remembered by identity, holding a reference so its address cannot be reused.
    if let Ok(last) = LAST_AT.lock() {
        if let Some((object, seconds)) = last.as_ref() {
            if object.is(at) {
                return Ok(*seconds);
            }
        }
    }
    let seconds = convert_moment(at)?;
    // Only plain datetimes with no zone or a fixed offset: their instant can never change.
    let py = at.py();
    let tzinfo = at.getattr(intern!(py, "tzinfo"))?;
    let fixed = tzinfo.is_none()
        || tzinfo.get_type().is(TIMEZONE
            .import(py, "datetime", "timezone")?
            .clone()
            .into_any());
    if fixed
        && at.get_type().is(DATETIME
            .import(py, "datetime", "datetime")?
            .clone()
            .into_any())
    {
        let previous = LAST_AT
            .lock()
            .ok()
            .and_then(|mut last| last.replace((at.clone().unbind(), seconds)));
        drop(previous); // outside the lock: releasing a datetime may run Python code
    }
    Ok(seconds)
}

/// Now, in whole seconds since the epoch.
///
/// On Linux from the coarse real-time clock: a lookup needs the second, and the coarse clock
/// is read from memory the kernel keeps current (about 5 ns), where the precise one also
/// reads and scales the processor's counter (about 20, a tenth of a lookup). It lags the
/// precise clock by at most one timer tick (a few milliseconds), as if the call had come
/// that much earlier.
fn now_seconds() -> PyResult<i64> {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to write.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
            #[allow(clippy::useless_conversion)] // `time_t` is 32 bits on some targets
            return Ok(i64::from(now.tv_sec));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(now.as_secs() as i64)
}

fn convert_moment(at: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = at.py();
    let datetime = DATETIME.import(py, "datetime", "datetime")?;
    if !at.is_instance(datetime)? {
        return Err(PyTypeError::new_err(format!(
            "at must be a datetime or None, not {}",
            at.get_type().name()?
        )));
    }
    let aware = if at.getattr(intern!(py, "tzinfo"))?.is_none() {
        let kwargs = pyo3::types::PyDict::new(py);
        let utc = UTC.get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("datetime")?
                    .getattr("timezone")?
                    .getattr("utc")?
                    .unbind(),
            )
        })?;
        kwargs.set_item("tzinfo", utc.bind(py))?;
        at.call_method("replace", (), Some(&kwargs))?
    } else {
        at.clone()
    };
    // A float timestamp keeps microseconds apart from the next second until about 2106;
    // beyond that, and before 1970, the exact integer path decides.
    let timestamp: f64 = aware.call_method0(intern!(py, "timestamp"))?.extract()?;
    if (0.0..4_294_967_296.0).contains(&timestamp) {
        return Ok(timestamp.floor() as i64);
    }
    let utc = aware.call_method0("utctimetuple")?;
    py.import("calendar")?
        .getattr("timegm")?
        .call1((utc,))?
        .extract()
}

/// The digits of a dialed number, or `lcr.LcrError` naming the offending character.
pub fn digits<'a>(py: Python<'_>, number: &'a str) -> PyResult<&'a [u8]> {
    number::digits(number).map_err(|e| lcr_error(py, "LcrError", e.to_string()))
}

/// A Decimal / int / str amount (possibly negative) onto the 1e-9 scale.
pub fn nano_amount(value: &Bound<'_, PyAny>, what: &str) -> PyResult<i128> {
    let py = value.py();
    if value.is_instance_of::<PyFloat>() {
        return Err(lcr_error(
            py,
            "LcrError",
            format!("{what}: floats are refused for money; use Decimal or str"),
        ));
    }
    let text = if value.is_instance_of::<PyString>() {
        value.extract::<String>()?
    } else {
        py.import("builtins")?
            .getattr("format")?
            .call1((value, "f"))?
            .extract::<String>()?
    };
    let (negative, body) = match text.trim_ascii().strip_prefix('-') {
        Some(rest) => (true, rest.to_owned()),
        None => (false, text.trim_ascii().to_owned()),
    };
    let units = parse_amount(&body, MAX_PRECISION).map_err(|e| {
        lcr_error(
            py,
            "LcrError",
            format!("{what}: {e}: {}", crate::quote::quoted(&text)),
        )
    })?;
    Ok(if negative {
        -i128::from(units)
    } else {
        i128::from(units)
    })
}

/// A routing seed: an int (taken modulo 2**64) or a text such as a Call-ID.
pub fn seed_value(seed: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    match seed.filter(|s| !s.is_none()) {
        None => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            Ok(h.finish())
        }
        Some(s) if s.is_instance_of::<PyString>() => {
            Ok(crate::seed::fnv1a64(s.extract::<String>()?.as_bytes()))
        }
        Some(s) if s.is_instance_of::<PyInt>() => {
            s.call_method1("__and__", (u64::MAX,))?.extract::<u64>()
        }
        Some(_) => Err(PyTypeError::new_err("seed must be an int, a str or None")),
    }
}
