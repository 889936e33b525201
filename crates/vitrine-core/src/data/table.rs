//! Tables of records, read row by row: CSV and TSV with a header row, RecBole's atomic files
//! (`.inter`, `.item`, `.user`: tab-separated, headers typed as `user_id:token`), and JSON Lines.
//! Families name the columns they want; each row comes with its line number, and each field as
//! its text or the reason it is missing, so a bad row can be reported by file and line.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A row that was skipped, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    pub path: PathBuf,
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: line {}: {}", self.path.display(), self.line, self.reason)
    }
}

/// How a table file is laid out, decided by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Delimited text with a header row; `quoted` when fields may be quoted (CSV, TSV).
    Delimited {
        delimiter: u8,
        quoted: bool,
    },
    JsonLines,
}

/// A table file on disk.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    layout: Layout,
}

/// One record: its line in the file (where it starts) and the requested fields, each its text or
/// why it could not be read.
#[derive(Debug, Clone)]
pub struct TableRow<'a> {
    pub line: u64,
    pub fields: Vec<Result<Cow<'a, str>, String>>,
}

impl TableRow<'_> {
    /// Field `i`, trimmed, or why it is missing or empty; `name` names it in the reason.
    pub fn text(&self, i: usize, name: &str) -> Result<&str, String> {
        match &self.fields[i] {
            Ok(value) if value.trim().is_empty() => Err(format!("`{name}` is empty")),
            Ok(value) => Ok(value.trim()),
            Err(reason) => Err(reason.clone()),
        }
    }
}

/// The file extensions a table may have, for error messages.
pub const TABLE_EXTENSIONS: &str = ".csv, .tsv, .jsonl, or RecBole's .inter/.item/.user";

impl Table {
    /// A table, its layout chosen by extension: `.csv`, `.tsv`, `.jsonl`, or RecBole's `.inter`,
    /// `.item`, `.user` (tab-separated, unquoted).
    pub fn new(path: &Path) -> Result<Self> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        let layout = match extension.as_str() {
            "csv" => Layout::Delimited { delimiter: b',', quoted: true },
            "tsv" => Layout::Delimited { delimiter: b'\t', quoted: true },
            "inter" | "item" | "user" => Layout::Delimited { delimiter: b'\t', quoted: false },
            "jsonl" | "ndjson" => Layout::JsonLines,
            _ => bail!("{}: expected a {TABLE_EXTENSIONS} file", path.display()),
        };
        Ok(Self { path: path.to_path_buf(), layout })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `each` with the `columns` of every row, in order. A column missing from the header
    /// is an error that lists the header; a field a row lacks, or that is not UTF-8, comes as
    /// `Err(reason)` in its place. Header names match with or without RecBole's type suffix
    /// (`user_id:token` is `user_id`) and ignore a UTF-8 byte-order mark (as Excel writes).
    pub fn read(&self, columns: &[&str], mut each: impl FnMut(TableRow) -> Result<()>) -> Result<()> {
        match self.layout {
            Layout::Delimited { delimiter, quoted } => self.read_delimited(delimiter, quoted, columns, &mut each),
            Layout::JsonLines => self.read_json_lines(columns, &mut each),
        }
    }

    /// The header's column names (without type suffixes); JSON Lines files have none.
    pub fn header(&self) -> Result<Vec<String>> {
        let Layout::Delimited { delimiter, quoted } = self.layout else { return Ok(Vec::new()) };
        let mut reader = self.reader(delimiter, quoted, self.open()?);
        let headers = reader.byte_headers().with_context(|| format!("{}: reading the header row", self.path.display()))?;
        Ok(headers.iter().map(|h| header_name(&String::from_utf8_lossy(h)).to_string()).collect())
    }

    fn reader<R: std::io::Read>(&self, delimiter: u8, quoted: bool, source: R) -> csv::Reader<R> {
        csv::ReaderBuilder::new().delimiter(delimiter).quoting(quoted).flexible(true).from_reader(source)
    }

    fn open(&self) -> Result<std::fs::File> {
        std::fs::File::open(&self.path).with_context(|| format!("reading {}", self.path.display()))
    }

    fn read_delimited(&self, delimiter: u8, quoted: bool, columns: &[&str], each: &mut dyn FnMut(TableRow) -> Result<()>) -> Result<()> {
        let path = &self.path;
        // The whole file in memory: line numbers are counted from byte offsets (the CSV reader's
        // own line count is off by one after Windows line endings, as Excel writes them).
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut reader = self.reader(delimiter, quoted, bytes.as_slice());
        let mut lines = LineCounter::default();
        let headers: Vec<String> = reader
            .byte_headers()
            .with_context(|| format!("{}: reading the header row", path.display()))?
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect();
        let positions = columns
            .iter()
            .map(|&name| {
                headers.iter().position(|h| header_name(h) == name || h.trim() == name).with_context(|| {
                    let names: Vec<&str> = headers.iter().map(|h| header_name(h)).collect();
                    format!("{}: no column `{name}` in the header (columns: {names:?})", path.display())
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let mut record = csv::ByteRecord::new();
        loop {
            let more = reader.read_byte_record(&mut record).with_context(|| format!("reading {}", path.display()))?;
            if !more {
                return Ok(());
            }
            let line = record.position().map_or(0, |p| lines.line_at(&bytes, p.byte() as usize));
            if record.len() == 1 && record.get(0).is_some_and(|f| f.iter().all(u8::is_ascii_whitespace)) {
                continue; // a blank line
            }
            let fields = positions
                .iter()
                .zip(columns)
                .map(|(&at, name)| match record.get(at) {
                    None => Err(format!("missing column `{name}`")),
                    Some(raw) => std::str::from_utf8(raw).map(Cow::Borrowed).map_err(|e| format!("column `{name}`: invalid UTF-8 ({e})")),
                })
                .collect();
            each(TableRow { line, fields })?;
        }
    }

    fn read_json_lines(&self, columns: &[&str], each: &mut dyn FnMut(TableRow) -> Result<()>) -> Result<()> {
        let bytes = std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        for (line, raw) in numbered_lines(&bytes) {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let object = std::str::from_utf8(raw)
                .map_err(|e| format!("invalid UTF-8 ({e})"))
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l.trim_start_matches('\u{feff}')).map_err(|e| format!("not a JSON object ({e})")));
            let fields = match &object {
                Ok(value) => columns.iter().map(|name| json_field(value, name).map(Cow::Owned)).collect(),
                Err(reason) => vec![Err(reason.clone()); columns.len()],
            };
            each(TableRow { line, fields })?;
        }
        Ok(())
    }
}

/// Line numbers of byte offsets met in increasing order, counted as it goes.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    /// The line (from 1) of the record starting at `offset`; line breaks at the offset belong
    /// to the record before.
    fn line_at(&mut self, bytes: &[u8], mut offset: usize) -> u64 {
        while offset < bytes.len() && matches!(bytes[offset], b'\r' | b'\n') {
            offset += 1;
        }
        let offset = offset.max(self.offset).min(bytes.len());
        self.newlines += bytes[self.offset..offset].iter().filter(|&&b| b == b'\n').count() as u64;
        self.offset = offset;
        self.newlines + 1
    }
}

/// A header cell without a byte-order mark, whitespace or RecBole's `:type` suffix.
fn header_name(header: &str) -> &str {
    let name = header.trim_start_matches('\u{feff}').trim();
    name.rsplit_once(':').map_or(name, |(name, _)| name)
}

/// The lines of a file as raw bytes (UTF-8 is checked per line), numbered from 1.
pub fn numbered_lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    bytes.split(|&b| b == b'\n').enumerate().map(|(i, line)| (i as u64 + 1, line.strip_suffix(b"\r").unwrap_or(line)))
}

fn json_field(value: &serde_json::Value, name: &str) -> Result<String, String> {
    match value.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(other) => Err(format!("field `{name}` is {other}, not text")),
        None => Err(format!("missing field `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(path: &Path, columns: &[&str]) -> Result<Vec<(u64, Vec<Result<String, String>>)>> {
        let mut out = Vec::new();
        Table::new(path)?.read(columns, |row| {
            out.push((row.line, row.fields.into_iter().map(|f| f.map(|v| v.into_owned())).collect()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn csv_with_bom_quotes_newlines_and_short_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.csv");
        std::fs::write(&path, "\u{feff}review,id,label\n\"Great, fast\",1,pos\n\"two\nlines\",2,neg\nshort\n").unwrap();
        let got = rows(&path, &["review", "label"]).unwrap();
        assert_eq!(got[0], (2, vec![Ok("Great, fast".into()), Ok("pos".into())]));
        assert_eq!(got[1].0, 3);
        assert_eq!(got[2], (5, vec![Ok("short".into()), Err("missing column `label`".into())]));
        let err = format!("{:#}", rows(&path, &["text"]).unwrap_err());
        assert!(err.contains("no column `text`") && err.contains("\"review\""), "{err}");
    }

    #[test]
    fn lines_are_counted_alike_with_windows_line_endings() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.csv");
        std::fs::write(&path, "\u{feff}user,item\r\na,1\r\n\"b\r\nc\",2\r\nd,3\r\n").unwrap();
        let got = rows(&path, &["user"]).unwrap();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 5], "a quoted line break spans lines 3 and 4");
    }

    #[test]
    fn recbole_headers_match_without_their_types_and_quotes_are_text() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ml.item");
        std::fs::write(&path, "item_id:token\tmovie_title:token_seq\tclass:token_seq\n1\t\"Toy\" Story\tAnimation Comedy\n").unwrap();
        let got = rows(&path, &["item_id", "class", "movie_title"]).unwrap();
        assert_eq!(got, [(2, vec![Ok("1".into()), Ok("Animation Comedy".into()), Ok("\"Toy\" Story".into())])]);
        assert_eq!(Table::new(&path).unwrap().header().unwrap(), ["item_id", "movie_title", "class"]);
    }

    #[test]
    fn json_lines_report_bad_lines_in_every_field() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.jsonl");
        std::fs::write(&path, "{\"u\": \"a\", \"r\": 4.5}\nnot json\n\n{\"u\": true}\n").unwrap();
        let got = rows(&path, &["u", "r"]).unwrap();
        assert_eq!(got[0], (1, vec![Ok("a".into()), Ok("4.5".into())]));
        assert_eq!(got[1].0, 2);
        assert!(got[1].1.iter().all(|f| f.as_ref().is_err_and(|e| e.contains("not a JSON object"))));
        assert_eq!(got[2], (4, vec![Ok("true".into()), Err("missing field `r`".into())]));
        assert!(Table::new(Path::new("x.xlsx")).unwrap_err().to_string().contains("expected a .csv"));
    }
}
