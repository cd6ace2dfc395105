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

/// Whether every byte is an ASCII digit; eight bytes per step, as batches check millions.
#[inline]
pub fn all_digits(bytes: &[u8]) -> bool {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const TOP: u64 = 0x8080_8080_8080_8080;
    // After `^ ZEROS` a digit byte is 0-9; adding 0x76 sets its top bit only from 10 up, and
    // a byte of 0x80 or more has its top bit already. A carry out of such a byte can only
    // flag the next byte too, and the chunk is bad either way.
    let word = |eight: &[u8]| {
        let x = u64::from_le_bytes(eight.try_into().expect("eight bytes")) ^ ZEROS;
        (x.wrapping_add(0x7676_7676_7676_7676) | x) & TOP
    };
    let n = bytes.len();
    if (8..=16).contains(&n) {
        // Dialed numbers: two words, overlapping where shorter than 16, and no loop.
        return word(&bytes[..8]) | word(&bytes[n - 8..]) == 0;
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut bad = 0_u64;
    for chunk in &mut chunks {
        bad |= word(chunk);
    }
    bad == 0 && chunks.remainder().iter().all(u8::is_ascii_digit)
}

/// Returns the digits of `number` with one leading `+` removed.
///
/// Operators receive E.164 numbers with and without `+`; both must route the same, while any
/// other character is a caller's mistake that must not silently route to a shorter prefix.
pub fn digits(number: &str) -> Result<&[u8], NumberError> {
    let bytes = number.as_bytes();
    if let Some(body) = digit_body(bytes) {
        return Ok(body);
    }
    let body = bytes.strip_prefix(b"+").unwrap_or(bytes);
    let offset = bytes.len() - body.len();
    let i = body
        .iter()
        .position(|b| !b.is_ascii_digit())
        .expect("digit_body refused it");
    Err(NumberError {
        input: number.to_owned(),
        position: i + offset,
        found: number[i + offset..].chars().next().unwrap_or('?'),
    })
}

/// [`digits`] without the error's detail: the digits after one leading `+`, or `None`. The
/// batch calls' check, over millions of numbers read in place as bytes.
#[inline]
pub fn digit_body(bytes: &[u8]) -> Option<&[u8]> {
    let body = bytes.strip_prefix(b"+").unwrap_or(bytes);
    all_digits(body).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_digits_agrees_with_a_byte_by_byte_check() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255_u8 {
                    let mut bytes = b"1234567890123456789".to_vec();
                    bytes.truncate(len);
                    bytes[at] = b;
                    assert_eq!(
                        all_digits(&bytes),
                        bytes.iter().all(u8::is_ascii_digit),
                        "{bytes:?}"
                    );
                }
            }
        }
        assert!(all_digits(b""));
    }

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
