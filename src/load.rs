//! Reading rate decks from CSV: column mapping, per-row errors with file, line and column.

use std::fmt;
use std::fs::File;
use std::io::Read;

use crate::deck::{Deck, DeckBuilder, DeckOptions, Field, RowError};
use crate::quote::quoted;

/// Where a field is found in a carrier's file: by header name or by 0-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    Name(String),
    Index(usize),
}

/// How to read one carrier's CSV layout.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Overrides of the default layout (header names equal to the field names, or the
    /// documented column order when there is no header).
    pub columns: Vec<(Field, ColumnRef)>,
    pub has_header: bool,
    pub delimiter: u8,
    /// Stop at the first bad row (true) or collect every bad row and load the rest.
    pub strict: bool,
    pub deck: DeckOptions,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            columns: Vec::new(),
            has_header: true,
            delimiter: b',',
            strict: true,
            deck: DeckOptions::default(),
        }
    }
}

/// A bad deck: which file, which line (1-based), which column as the file names it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeckError {
    pub path: String,
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
}

impl fmt::Display for DeckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.path, self.line)?;
        if let Some(column) = &self.column {
            write!(f, "column {}: ", quoted(column))?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DeckError {}

/// Physical line numbers of byte offsets, counted as Python's universal newlines count them
/// (`\n`, `\r\n` and a lone `\r` each end a line), so blank lines, CRLF files from Excel
/// and quoted multi-line fields all report the line a record really starts on.
struct LineCounter<'a> {
    data: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            offset: 0,
            line: 1,
        }
    }

    /// The 1-based line where the record reported at byte `offset` starts; offsets must not
    /// decrease between calls. The csv reader reports a record from the start of the blank
    /// lines it skipped before it, so those are stepped over first.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut end = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        while matches!(self.data.get(end), Some(b'\n' | b'\r')) {
            end += 1;
        }
        if end > self.offset {
            let chunk = &self.data[self.offset..end];
            for i in memchr::memchr2_iter(b'\n', b'\r', chunk) {
                let at = self.offset + i;
                if self.data[at] == b'\n' || self.data.get(at + 1) != Some(&b'\n') {
                    self.line += 1;
                }
            }
            self.offset = end;
        }
        self.line
    }
}

/// Progress of a long load: rows read, bytes read, total bytes (0 if unknown).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64, u64);

/// How often a load reports progress, in rows.
pub const PROGRESS_EVERY: u64 = 65_536;

/// The resolved layout: for each field, the position in a record and the file's name for it.
struct Layout {
    positions: [Option<usize>; 8],
    labels: [String; 8],
}

impl Layout {
    fn resolve(
        options: &CsvOptions,
        header: Option<&[String]>,
        path: &str,
    ) -> Result<Self, DeckError> {
        let mut positions = [None; 8];
        let mut labels: [String; 8] = Default::default();
        for (i, field) in Field::ALL.into_iter().enumerate() {
            let chosen = options
                .columns
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, c)| c.clone());
            let (position, label) = match (chosen, header) {
                (Some(ColumnRef::Index(n)), Some(names)) => (
                    Some(n),
                    names
                        .get(n)
                        .filter(|name| !name.is_empty())
                        .cloned()
                        .unwrap_or_else(|| format!("#{}", n + 1)),
                ),
                (Some(ColumnRef::Index(n)), None) => (Some(n), format!("#{}", n + 1)),
                (Some(ColumnRef::Name(name)), Some(names)) => {
                    match names.iter().position(|h| *h == name) {
                        Some(n) => (Some(n), name),
                        None => {
                            return Err(DeckError {
                                path: path.to_owned(),
                                line: 1,
                                column: Some(name.clone()),
                                reason: format!(
                                    "column {} (mapped to {}) is not in the header",
                                    quoted(&name),
                                    field.name()
                                ),
                            })
                        }
                    }
                }
                (Some(ColumnRef::Name(name)), None) => {
                    return Err(DeckError {
                        path: path.to_owned(),
                        line: 0,
                        column: Some(name),
                        reason: "columns are mapped by name but the file has no header".into(),
                    })
                }
                (None, Some(names)) => (
                    names.iter().position(|h| h == field.name()),
                    field.name().to_owned(),
                ),
                (None, None) => (Some(i), format!("#{}", i + 1)),
            };
            if position.is_none() && field.required() {
                return Err(DeckError {
                    path: path.to_owned(),
                    line: 1,
                    column: Some(field.name().to_owned()),
                    reason: format!(
                        "required column '{}' is missing from the header",
                        field.name()
                    ),
                });
            }
            positions[i] = position;
            labels[i] = label;
        }
        Ok(Self { positions, labels })
    }

    fn label(&self, field: Field) -> String {
        self.labels[Field::ALL.iter().position(|f| *f == field).unwrap_or(0)].clone()
    }
}

fn to_deck_error(path: &str, layout: Option<&Layout>, error: RowError) -> DeckError {
    DeckError {
        path: path.to_owned(),
        line: error.line,
        column: error
            .field
            .map(|f| layout.map_or_else(|| f.name().to_owned(), |l| l.label(f))),
        reason: error.reason,
    }
}

/// Loads a deck from a CSV file.
pub fn load_csv(
    path: &str,
    options: &CsvOptions,
    progress: Progress<'_>,
) -> Result<(Deck, Vec<DeckError>), DeckError> {
    let file = File::open(path).map_err(|e| DeckError {
        path: path.to_owned(),
        line: 0,
        column: None,
        reason: format!("cannot open: {e}"),
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    load_reader(file, path, total, options, progress)
}

/// Loads a deck from any CSV byte stream; `path` names it in errors.
pub fn load_reader<R: Read>(
    mut reader: R,
    path: &str,
    total_bytes: u64,
    options: &CsvOptions,
    progress: Progress<'_>,
) -> Result<(Deck, Vec<DeckError>), DeckError> {
    // Read whole: a deck is tens of MB at most, and line numbers need the raw bytes.
    let mut data = Vec::with_capacity(usize::try_from(total_bytes).unwrap_or(0));
    reader.read_to_end(&mut data).map_err(|e| DeckError {
        path: path.to_owned(),
        line: 0,
        column: None,
        reason: format!("cannot read: {e}"),
    })?;
    let mut lines = LineCounter::new(&data);
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .buffer_capacity(1 << 20)
        .from_reader(data.as_slice());
    let mut record = csv::ByteRecord::new();
    let io_error = |e: csv::Error, line: u64| DeckError {
        path: path.to_owned(),
        line: e.position().map_or(line, |p| p.line()),
        column: None,
        reason: format!("unreadable CSV: {e}"),
    };
    let header = if options.has_header {
        if !csv
            .read_byte_record(&mut record)
            .map_err(|e| io_error(e, 1))?
        {
            return Err(DeckError {
                path: path.to_owned(),
                line: 1,
                column: None,
                reason: "empty file: expected a header line".into(),
            });
        }
        let names: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let name = String::from_utf8_lossy(raw);
                let name = if i == 0 {
                    name.trim_start_matches('\u{feff}')
                } else {
                    &name
                };
                name.trim_ascii().to_owned()
            })
            .collect();
        Some(names)
    } else {
        None
    };
    let layout = Layout::resolve(options, header.as_deref(), path)?;
    let mut builder = DeckBuilder::new(options.deck);
    let mut errors = Vec::new();
    let mut rows_read = 0_u64;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(io_error(e, rows_read + 1)),
        }
        let line = lines.line_at(record.position().map_or(0, |p| p.byte()));
        rows_read += 1;
        if rows_read.is_multiple_of(PROGRESS_EVERY) {
            progress(
                rows_read,
                record.position().map_or(0, |p| p.byte()),
                total_bytes,
            );
        }
        let mut fields = [""; 8];
        let mut bad = None;
        for (i, position) in layout.positions.iter().enumerate() {
            if let Some(raw) = position.and_then(|p| record.get(p)) {
                match std::str::from_utf8(raw) {
                    Ok(text) => fields[i] = text,
                    Err(_) => {
                        bad = Some(RowError {
                            line,
                            field: Some(Field::ALL[i]),
                            reason: "not valid UTF-8".into(),
                        });
                        break;
                    }
                }
            }
        }
        let result = match bad {
            Some(e) => Err(e),
            None => builder.push(line, fields),
        };
        if let Err(e) = result {
            if options.strict {
                let first = match builder.first_duplicate() {
                    Some(duplicate) if duplicate.line < e.line => duplicate,
                    _ => e,
                };
                return Err(to_deck_error(path, Some(&layout), first));
            }
            let error = to_deck_error(path, Some(&layout), e);
            errors.push(error);
        }
    }
    progress(rows_read, total_bytes, total_bytes);
    let (deck, duplicates) = builder.finish();
    let duplicates: Vec<DeckError> = duplicates
        .into_iter()
        .map(|e| to_deck_error(path, Some(&layout), e))
        .collect();
    if options.strict {
        if let Some(first) = duplicates.into_iter().next() {
            return Err(first);
        }
    } else {
        errors.extend(duplicates);
        errors.sort_by_key(|e| e.line);
    }
    Ok((deck, errors))
}

/// Builds a deck from rows of text in [`Field::ALL`] order; line numbers count from 1.
pub fn load_rows<'a, I>(
    rows: I,
    options: &CsvOptions,
    path: &str,
) -> Result<(Deck, Vec<DeckError>), DeckError>
where
    I: IntoIterator<Item = [&'a str; 8]>,
{
    let mut builder = DeckBuilder::new(options.deck);
    let mut errors = Vec::new();
    for (i, fields) in rows.into_iter().enumerate() {
        if let Err(e) = builder.push(i as u64 + 1, fields) {
            if options.strict {
                let first = match builder.first_duplicate() {
                    Some(duplicate) if duplicate.line < e.line => duplicate,
                    _ => e,
                };
                return Err(to_deck_error(path, None, first));
            }
            let error = to_deck_error(path, None, e);
            errors.push(error);
        }
    }
    let (deck, duplicates) = builder.finish();
    let mut duplicates = duplicates.into_iter().map(|e| to_deck_error(path, None, e));
    if options.strict {
        if let Some(first) = duplicates.next() {
            return Err(first);
        }
    }
    errors.extend(duplicates);
    errors.sort_by_key(|e| e.line);
    Ok((deck, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, options: &CsvOptions) -> Result<(Deck, Vec<DeckError>), DeckError> {
        load_reader(
            text.as_bytes(),
            "deck.csv",
            text.len() as u64,
            options,
            &mut |_, _, _| {},
        )
    }

    const HEADER: &str =
        "prefix,destination,rate,connect_fee,initial_increment,subsequent_increment,effective_from,effective_to\n";

    #[test]
    fn default_layout() {
        let text = format!("{HEADER}44,UK,0.01,0,60,60,2026-01-01,\n447,UK Mobile,0.05,,1,1,,\n");
        let (deck, errors) = load(&text, &CsvOptions::default()).unwrap();
        assert!(errors.is_empty());
        assert_eq!(deck.len(), 2);
        let m = deck.lookup(b"4479", 0).unwrap();
        assert_eq!(deck.tariff(m.tariff).rate, 50_000);
    }

    #[test]
    fn carrier_layout_by_name_and_missing_columns_default() {
        let text = "\u{feff}Code;Country;Price\n+44;UK;0.0100\n";
        let options = CsvOptions {
            columns: vec![
                (Field::Prefix, ColumnRef::Name("Code".into())),
                (Field::Destination, ColumnRef::Name("Country".into())),
                (Field::Rate, ColumnRef::Name("Price".into())),
            ],
            delimiter: b';',
            ..CsvOptions::default()
        };
        let (deck, _) = load(text, &options).unwrap();
        let m = deck.lookup(b"44", 0).unwrap();
        assert_eq!(deck.destination(deck.tariff(m.tariff)), "UK");
        assert_eq!(deck.tariff(m.tariff).initial_increment, 60);
    }

    #[test]
    fn strict_stops_at_first_bad_row_naming_file_line_column() {
        let text = "Code,Price\n44,0.01\n33,abc\n34,-1\n";
        let options = CsvOptions {
            columns: vec![
                (Field::Prefix, ColumnRef::Name("Code".into())),
                (Field::Rate, ColumnRef::Name("Price".into())),
            ],
            ..CsvOptions::default()
        };
        let err = load(text, &options).unwrap_err();
        assert_eq!((err.line, err.column.as_deref()), (3, Some("Price")));
        assert_eq!(
            err.to_string(),
            "deck.csv:3: column 'Price': not a decimal number: 'abc'"
        );
        let lenient = CsvOptions {
            strict: false,
            ..options
        };
        let (deck, errors) = load(text, &lenient).unwrap();
        assert_eq!(deck.len(), 1);
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn line_numbers_count_blank_lines_crlf_and_cr() {
        let lenient = CsvOptions {
            strict: false,
            ..CsvOptions::default()
        };
        for (text, expected) in [
            ("prefix,rate\nx,1\ny,1\n\nz,1\n\n\nw,1\n", vec![2, 3, 5, 8]),
            ("prefix,rate\r\nx,1\r\ny,1\r\n\r\nz,1\r\n", vec![2, 3, 5]),
            ("prefix,rate\rx,1\ry,1\r\rz,1\r", vec![2, 3, 5]),
            ("\nprefix,rate\n\"x\n\",1\ny,1\n", vec![3, 5]),
        ] {
            let (_, errors) = load(text, &lenient).unwrap();
            let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
            assert_eq!(lines, expected, "{text:?}");
        }
    }

    #[test]
    fn strict_reports_the_first_bad_row_whatever_its_kind() {
        let text = format!(
            "{HEADER}44,UK,0.01,,,,2026-01-01,\n44,UK,0.02,,,,2026-01-01,\n45,X,bad,,,,,\n"
        );
        let err = load(&text, &CsvOptions::default()).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.reason.contains("duplicate of line 2"), "{err}");
        let text = format!("{HEADER}45,X,bad,,,,,\n44,UK,0.01,,,,,\n44,UK,0.02,,,,,\n");
        assert_eq!(load(&text, &CsvOptions::default()).unwrap_err().line, 2);
    }

    #[test]
    fn missing_required_column() {
        let err = load("prefix,destination\n44,UK\n", &CsvOptions::default()).unwrap_err();
        assert_eq!(err.column.as_deref(), Some("rate"));
        assert_eq!(err.line, 1);
    }

    #[test]
    fn headerless_by_position() {
        let options = CsvOptions {
            has_header: false,
            columns: vec![
                (Field::Rate, ColumnRef::Index(1)),
                (Field::Prefix, ColumnRef::Index(0)),
            ],
            ..CsvOptions::default()
        };
        let (deck, _) = load("44,0.5\n", &options).unwrap();
        assert_eq!(
            deck.tariff(deck.lookup(b"44", 0).unwrap().tariff).rate,
            500_000
        );
    }

    #[test]
    fn duplicates_in_strict_and_lenient() {
        let text = format!("{HEADER}44,UK,0.01,,,,2026-01-01,\n44,UK,0.02,,,,2026-01-01,\n");
        let err = load(&text, &CsvOptions::default()).unwrap_err();
        assert_eq!(err.line, 3);
        let lenient = CsvOptions {
            strict: false,
            ..CsvOptions::default()
        };
        let (deck, errors) = load(&text, &lenient).unwrap();
        assert_eq!((deck.len(), errors.len()), (1, 1));
    }
}
