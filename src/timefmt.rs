//! ISO 8601 timestamps <-> seconds since the Unix epoch, with no time-zone database.
//!
//! Decks and CDRs carry dates such as `2026-01-01`, `2026-01-01T00:00:00Z` or
//! `2026-01-01 08:00:00+02:00`. A value without an offset is UTC: a deck's effective dates must
//! mean the same instant on every server that loads it.

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian), after H. Hinnant.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date and time of `seconds` since the epoch, in UTC.
pub fn civil_from_seconds(seconds: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn number(text: &[u8]) -> Option<u32> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0_u32, |acc, b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range every datetime library (and
/// Python's `datetime`) can show; a date outside it is a typo, not a rate's window.
pub const EARLIEST: i64 = -62_135_596_800;
pub const LATEST: i64 = 253_402_300_799;

/// Parses an ISO 8601 date or date-time; returns seconds since the epoch (fractions dropped),
/// or `None` if it is malformed or outside years 1 to 9999 once taken to UTC.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    parse_any(text).filter(|t| (EARLIEST..=LATEST).contains(t))
}

fn parse_any(text: &str) -> Option<i64> {
    let s = text.trim_ascii().as_bytes();
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let year = i64::from(number(&s[0..4])?);
    let month = number(&s[5..7])?;
    let day = number(&s[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(seconds);
    }
    if !(rest[0] == b'T' || rest[0] == b't' || rest[0] == b' ') || rest.len() < 6 || rest[3] != b':'
    {
        return None;
    }
    let hour = number(&rest[1..3])?;
    let minute = number(&rest[4..6])?;
    let mut second = 0;
    let mut i = 6;
    if rest.len() >= 9 && rest[6] == b':' {
        second = number(&rest[7..9])?;
        i = 9;
        if i < rest.len() && (rest[i] == b'.' || rest[i] == b',') {
            i += 1;
            let start = i;
            while i < rest.len() && rest[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    seconds += i64::from(hour * 3600 + minute * 60 + second);
    let zone = &rest[i..];
    let offset = match zone {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let oh = number(&[*h1, *h2])?;
            let om = number(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let total = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                total
            } else {
                -total
            }
        }
        _ => return None,
    };
    Some(seconds - offset)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = civil_from_seconds(seconds);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("2026-01-01"), Some(1_767_225_600));
        assert_eq!(parse_timestamp("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(
            parse_timestamp("2026-01-01 02:00:00+02:00"),
            Some(1_767_225_600)
        );
        assert_eq!(
            parse_timestamp("2025-12-31T19:00-0500"),
            Some(1_767_225_600)
        );
        assert_eq!(
            parse_timestamp("2026-01-01T00:00:00.999Z"),
            Some(1_767_225_600)
        );
        assert_eq!(parse_timestamp("2024-02-29"), Some(1_709_164_800));
    }

    #[test]
    fn refuses_impossible_values() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2025-02-29",
            "2026-01-01X",
            "2026-01-01T24:00",
            "2026-01-01T10:00+2",
            "01/02/2026",
            "2026-01-01T10:00:00.Z",
            "0000-12-31",
            "9999-12-31T23:00-05:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_through_civil() {
        for t in [0_i64, 1_767_225_600, 951_782_400, -86_400, 4_102_444_799] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
    }
}
