//! User text inside error messages, quoted the way Python's `repr()` quotes a `str`.
//!
//! Both implementations of `lcr` word their errors identically, so an operator sees the
//! same message whichever one loaded the deck, and the tests can compare them.

/// `repr(text)` for ASCII control and quote characters; other printable characters kept.
pub fn quoted(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn like_python_repr() {
        assert_eq!(quoted("abc"), "'abc'");
        assert_eq!(quoted("it's"), "\"it's\"");
        assert_eq!(quoted("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(quoted("two\nlines\t\\"), "'two\\nlines\\t\\\\'");
        assert_eq!(quoted("\u{0}\u{1f}\u{7f}"), "'\\x00\\x1f\\x7f'");
        assert_eq!(quoted("£"), "'£'");
    }
}
