//! Dialed numbers as the routing core sees them: ASCII digits, an optional leading `+`.

use std::fmt;

use crate::quote::quoted;

/// Why a dialed number (or a prefix) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberError {
    pub input: String,
    pub position: usize,
    pub found: char,
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid number {}: non-digit character {} at position {}",
            quoted(&self.input),
            quoted(&self.found.to_string()),
            self.position
        )
    }
}

impl std::error::Error for NumberError {}

/// Returns the digits of `number` with one leading `+` removed.
///
/// Operators receive E.164 numbers with and without `+`; both must route the same, while any
/// other character is a caller's mistake that must not silently route to a shorter prefix.
pub fn digits(number: &str) -> Result<&[u8], NumberError> {
    let bytes = number.as_bytes();
    let body = bytes.strip_prefix(b"+").unwrap_or(bytes);
    let offset = bytes.len() - body.len();
    match body.iter().position(|b| !b.is_ascii_digit()) {
        None => Ok(body),
        Some(i) => Err(NumberError {
            input: number.to_owned(),
            position: i + offset,
            found: number[i + offset..].chars().next().unwrap_or('?'),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_ignored_once() {
        assert_eq!(digits("+4420").unwrap(), b"4420");
        assert_eq!(digits("4420").unwrap(), b"4420");
        assert_eq!(digits("").unwrap(), b"");
        assert!(digits("++44").is_err());
    }

    #[test]
    fn non_digits_are_named_with_position() {
        let err = digits("+44a0").unwrap_err();
        assert_eq!(err.position, 3);
        assert_eq!(err.found, 'a');
        assert!(err.to_string().contains("position 3"));
        assert_eq!(digits("44é").unwrap_err().found, 'é');
    }
}
