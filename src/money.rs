//! Exact money: integers of a declared decimal sub-unit, and the one place rounding happens.
//!
//! A deck declares its precision (decimal places, at most [`MAX_PRECISION`]); every amount in
//! it is an integer count of `10^-precision` currency units. Rates of different decks are
//! compared on the common [`MAX_PRECISION`] scale.

use std::fmt;

/// The finest sub-unit any deck may declare: 1e-9.
pub const MAX_PRECISION: u32 = 9;

/// How a computed amount that falls between two sub-units is brought onto the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Towards +infinity: the carrier's and the operator's usual rule (never under-bill).
    Up,
    /// Towards zero.
    Down,
    /// To nearest, ties away from zero.
    HalfUp,
}

impl Rounding {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            "half_up" => Some(Self::HalfUp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::HalfUp => "half_up",
        }
    }

    /// `numerator / denominator` for non-negative operands, rounded by this rule.
    pub fn divide(self, numerator: i128, denominator: i128) -> i128 {
        debug_assert!(numerator >= 0 && denominator > 0);
        let quotient = numerator / denominator;
        let remainder = numerator % denominator;
        match self {
            Self::Down => quotient,
            Self::Up => quotient + i128::from(remainder != 0),
            Self::HalfUp => quotient + i128::from(remainder * 2 >= denominator),
        }
    }
}

/// Why a decimal amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    NotANumber,
    Negative,
    TooPrecise { precision: u32 },
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber => f.write_str("not a decimal number"),
            Self::Negative => f.write_str("must not be negative"),
            Self::TooPrecise { precision } => {
                write!(
                    f,
                    "more than {precision} decimal places (the deck's precision)"
                )
            }
            Self::TooLarge => f.write_str("too large"),
        }
    }
}

/// Reads a plain non-negative decimal (`12`, `0.0123`, `.5`, `1.`) into sub-units.
///
/// Exponents and thousands separators are refused: a rate deck is money, and a value the
/// reader has to guess at is an error, never a silent rounding.
pub fn parse_amount(text: &str, precision: u32) -> Result<i64, AmountError> {
    let text = text.trim_ascii();
    if text.starts_with('-') {
        return Err(AmountError::Negative);
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(AmountError::NotANumber);
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > precision as usize {
        return Err(AmountError::TooPrecise { precision });
    }
    let mut value: i128 = 0;
    for b in int_part.bytes().chain(frac_trimmed.bytes()) {
        value = value * 10 + i128::from(b - b'0');
        if value > i128::from(i64::MAX) {
            return Err(AmountError::TooLarge);
        }
    }
    value *= 10_i128.pow(precision - frac_trimmed.len() as u32);
    i64::try_from(value).map_err(|_| AmountError::TooLarge)
}

/// Formats sub-units as a decimal string with exactly `precision` places.
pub fn format_amount(units: i64, precision: u32) -> String {
    let negative = units < 0;
    let magnitude = units.unsigned_abs();
    let scale = 10_u64.pow(precision);
    let sign = if negative { "-" } else { "" };
    if precision == 0 {
        return format!("{sign}{magnitude}");
    }
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = precision as usize
    )
}

/// Converts sub-units of `precision` onto the common 1e-9 scale for cross-deck comparison.
pub fn to_nano(units: i64, precision: u32) -> i128 {
    i128::from(units) * 10_i128.pow(MAX_PRECISION - precision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals() {
        assert_eq!(parse_amount("0.0123", 6), Ok(12_300));
        assert_eq!(parse_amount("1", 6), Ok(1_000_000));
        assert_eq!(parse_amount(".5", 2), Ok(50));
        assert_eq!(parse_amount("1.", 2), Ok(100));
        assert_eq!(parse_amount(" 0.10 ", 1), Ok(1));
        assert_eq!(parse_amount("0.1230000", 4), Ok(1230));
    }

    #[test]
    fn refuses_what_it_would_have_to_guess() {
        assert_eq!(parse_amount("", 6), Err(AmountError::NotANumber));
        assert_eq!(parse_amount(".", 6), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("1e-3", 6), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("1,5", 6), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("-1", 6), Err(AmountError::Negative));
        assert_eq!(
            parse_amount("0.0000001", 6),
            Err(AmountError::TooPrecise { precision: 6 })
        );
        assert_eq!(
            parse_amount("99999999999999999999", 6),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn formats_with_fixed_places() {
        assert_eq!(format_amount(12_300, 6), "0.012300");
        assert_eq!(format_amount(5, 0), "5");
        assert_eq!(format_amount(-150, 2), "-1.50");
    }

    #[test]
    fn rounding_rules() {
        assert_eq!(Rounding::Up.divide(61, 60), 2);
        assert_eq!(Rounding::Up.divide(60, 60), 1);
        assert_eq!(Rounding::Down.divide(119, 60), 1);
        assert_eq!(Rounding::HalfUp.divide(90, 60), 2);
        assert_eq!(Rounding::HalfUp.divide(89, 60), 1);
        assert_eq!(Rounding::Up.divide(0, 60), 0);
    }
}
