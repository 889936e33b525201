//! Labelled text: one file per class, or a table (CSV/TSV with a header, JSON Lines) read through
//! the core's table reader; deduplicated before splitting so that no text is both trained and
//! tested on.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use vitrine_core::data::{ClassMatcher, SkippedRow, Table, numbered_lines};

use crate::config::TextSource;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    pub text: String,
    pub label: u32,
}

/// Labelled texts and the class names their labels index.
#[derive(Debug, Clone)]
pub struct TextSet {
    pub examples: Vec<TextExample>,
    pub classes: Vec<String>,
}

/// Loads a source. Labels are matched to `known_classes` when given (an unknown label is a bad
/// row); otherwise the sorted distinct labels are the classes. Bad rows (missing column, empty
/// text, unknown label, invalid UTF-8) are skipped and returned with file and line, or fail the
/// load when `strict`.
pub fn load_text(source: &TextSource, known_classes: Option<&ClassMatcher>, strict: bool) -> Result<(TextSet, Vec<SkippedRow>)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut skipped: Vec<SkippedRow> = Vec::new();
    let mut bad = |path: &PathBuf, line: u64, reason: String| -> Result<()> {
        if strict {
            bail!("{}: line {line}: {reason}", path.display());
        }
        skipped.push(SkippedRow { path: path.clone(), line, reason });
        Ok(())
    };
    match source {
        TextSource::LinesPerClass(files) => {
            for (class, path) in files {
                let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                for (line_no, line) in numbered_lines(&bytes) {
                    match std::str::from_utf8(line) {
                        Ok(text) if text.trim().is_empty() => {} // blank lines are not rows
                        Ok(text) => rows.push((text.trim().to_string(), class.clone())),
                        Err(e) => bad(path, line_no, format!("invalid UTF-8 ({e})"))?,
                    }
                }
            }
        }
        TextSource::Table { path, text_column, label_column } => {
            Table::new(path)?.read(&[text_column, label_column], |row| {
                match (row.text(0, text_column), row.text(1, label_column)) {
                    (Ok(text), Ok(label)) => rows.push((text.to_string(), label.to_string())),
                    (Err(reason), _) | (_, Err(reason)) => bad(path, row.line, reason)?,
                }
                Ok(())
            })?;
        }
    }

    let matcher = match known_classes {
        Some(known) => known.clone(),
        None => ClassMatcher::exact(&rows.iter().map(|(_, l)| l.clone()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>()),
    };
    let classes = matcher.classes().to_vec();
    // Each distinct label matched once (a data set has few labels and many rows).
    let mut index: HashMap<String, Result<u32, String>> = HashMap::new();
    let mut examples = Vec::with_capacity(rows.len());
    let mut unknown: Vec<String> = Vec::new();
    for (text, label) in rows {
        let found = index.entry(label.clone()).or_insert_with(|| matcher.find(&label).map(|i| i as u32));
        match found {
            Ok(l) => examples.push(TextExample { text, label: *l }),
            Err(_) => unknown.push(label),
        }
    }
    if !unknown.is_empty() {
        let distinct: BTreeSet<&String> = unknown.iter().collect();
        let reasons: Vec<&String> = distinct.iter().filter_map(|l| index[l.as_str()].as_ref().err()).collect();
        let message = format!(
            "{} row(s) with labels {distinct:?} not among the classes: {}",
            unknown.len(),
            reasons.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        );
        if strict {
            bail!("{}: {message}", source_name(source));
        }
        skipped.push(SkippedRow { path: source_name(source).into(), line: 0, reason: message });
    }
    ensure!(!examples.is_empty(), "{}: no usable rows", source_name(source));
    Ok((TextSet { examples, classes }, skipped))
}

fn source_name(source: &TextSource) -> String {
    match source {
        TextSource::LinesPerClass(files) => files.iter().map(|(_, p)| p.display().to_string()).collect::<Vec<_>>().join(", "),
        TextSource::Table { path, .. } => path.display().to_string(),
    }
}

/// What deduplication removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupReport {
    /// Repeats of a text with the same label (one copy is kept).
    pub duplicates: usize,
    /// Rows of texts that carry more than one label (all are dropped).
    pub conflicting: usize,
}

impl TextSet {
    /// The texts and their labels, in order.
    pub fn texts_and_labels(&self) -> (Vec<&str>, Vec<u32>) {
        self.examples.iter().map(|e| (e.text.as_str(), e.label)).unzip()
    }

    /// The set as JSON Lines, one `{text_key: …, label_key: class name}` object per text: a file
    /// the JSONL reader (and so `vitrine eval`) takes back with the same keys.
    pub fn to_jsonl(&self, text_key: &str, label_key: &str) -> String {
        let mut out = String::new();
        for e in &self.examples {
            let mut row = serde_json::Map::new();
            row.insert(text_key.to_string(), e.text.clone().into());
            row.insert(label_key.to_string(), self.classes[e.label as usize].clone().into());
            out.push_str(&serde_json::Value::Object(row).to_string());
            out.push('\n');
        }
        out
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Keeps one copy of each text (already trimmed) and drops texts labelled differently in
    /// different rows, so that a split cannot put the same text in training and test data.
    pub fn dedup(self) -> (TextSet, DedupReport) {
        let mut labels: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        for e in &self.examples {
            labels.entry(e.text.as_str()).or_default().insert(e.label);
        }
        let conflicted: BTreeSet<String> = labels.iter().filter(|(_, l)| l.len() > 1).map(|(t, _)| t.to_string()).collect();
        let mut seen = std::collections::HashSet::new();
        let mut report = DedupReport::default();
        let mut kept = Vec::new();
        for e in self.examples {
            if conflicted.contains(&e.text) {
                report.conflicting += 1;
            } else if seen.insert(e.text.clone()) {
                kept.push(e);
            } else {
                report.duplicates += 1;
            }
        }
        (TextSet { examples: kept, classes: self.classes }, report)
    }

    /// Shuffles with `seed` and cuts into train / valid / test by the two fractions.
    pub fn split(&self, valid: f64, test: f64, seed: u64) -> (TextSet, TextSet, TextSet) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let n_valid = (self.len() as f64 * valid).round() as usize;
        let n_test = (self.len() as f64 * test).round() as usize;
        let pick = |idx: &[usize]| TextSet { examples: idx.iter().map(|&i| self.examples[i].clone()).collect(), classes: self.classes.clone() };
        let (valid_idx, rest) = order.split_at(n_valid.min(order.len()));
        let (test_idx, train_idx) = rest.split_at(n_test.min(rest.len()));
        (pick(train_idx), pick(valid_idx), pick(test_idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn one_file_per_class_reports_invalid_utf8_by_line() {
        let tmp = tempfile::tempdir().unwrap();
        let pos = write(tmp.path(), "pos.txt", "质量很好\n\n  great phone  \n".as_bytes());
        let neg = write(tmp.path(), "neg.txt", b"bad\n\xff\xfe broken\nawful\n");
        let source = TextSource::LinesPerClass(vec![("pos".into(), pos), ("neg".into(), neg.clone())]);
        let (set, skipped) = load_text(&source, None, false).unwrap();
        assert_eq!(set.classes, ["neg", "pos"]);
        assert_eq!(set.len(), 4);
        assert_eq!(set.examples[1], TextExample { text: "great phone".into(), label: 1 });
        assert_eq!(skipped.len(), 1);
        assert_eq!((skipped[0].path.clone(), skipped[0].line), (neg, 2));
        assert!(skipped[0].reason.contains("UTF-8"));
        let err = load_text(&source, None, true).unwrap_err().to_string();
        assert!(err.contains("neg.txt: line 2"), "{err}");
    }

    #[test]
    fn csv_with_bom_quotes_newlines_and_extra_columns() {
        let tmp = tempfile::tempdir().unwrap();
        let csv = "\u{feff}review,id,stars,sentiment\n\
                   \"Great, fast delivery\",1,5,positive\n\
                   \"Broke after\na week\",2,1,negative\n\
                   ,3,3,positive\n\
                   missing label column,4\n\
                   so-so,5,3,neutral\n";
        let path = write(tmp.path(), "reviews.csv", csv.as_bytes());
        let source = TextSource::Table { path: path.clone(), text_column: "review".into(), label_column: "sentiment".into() };
        let known: Vec<String> = vec!["negative".into(), "positive".into()];
        let (set, skipped) = load_text(&source, Some(&ClassMatcher::exact(&known)), false).unwrap();
        assert_eq!(
            set.examples,
            [TextExample { text: "Great, fast delivery".into(), label: 1 }, TextExample { text: "Broke after\na week".into(), label: 0 },]
        );
        let reasons: Vec<(u64, &str)> = skipped.iter().map(|s| (s.line, s.reason.as_str())).collect();
        assert!(reasons.contains(&(5, "`review` is empty")), "{reasons:?}");
        assert!(reasons.contains(&(6, "missing column `sentiment`")), "{reasons:?}");
        assert!(reasons.iter().any(|(_, r)| r.contains("\"neutral\"")), "unknown label reported: {reasons:?}");
        let wrong = TextSource::Table { path, text_column: "text".into(), label_column: "sentiment".into() };
        let err = load_text(&wrong, None, false).unwrap_err().to_string();
        assert!(err.contains("no column `text`") && err.contains("review"), "{err}");
    }

    #[test]
    fn labels_match_the_classes_ignoring_case_and_through_a_class_map() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(tmp.path(), "r.csv", b"text,label\ngood,Positive\nbad,NEG\nmeh,mixed\nfine,pos\n");
        let source = TextSource::Table { path, text_column: "text".into(), label_column: "label".into() };
        let known: Vec<String> = vec!["negative".into(), "positive".into()];
        let map: vitrine_core::data::ClassMap = {
            let file = write(tmp.path(), "map.toml", b"neg = \"negative\"\n");
            vitrine_core::data::ClassMap::read(&file).unwrap()
        };
        let matcher = ClassMatcher::new(&known, &map).unwrap();
        let (set, skipped) = load_text(&source, Some(&matcher), false).unwrap();
        let labels: Vec<u32> = set.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, [1, 0], "Positive by case, NEG through the map");
        let reason = &skipped[0].reason;
        assert!(reason.contains("\"mixed\"") && reason.contains("\"pos\"") && reason.contains("nearest is \"positive\""), "{reason}");
        assert!(load_text(&source, Some(&matcher), true).unwrap_err().to_string().contains("nearest"));
    }

    #[test]
    fn json_lines_with_bad_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let jsonl = "{\"body\": \"love it\", \"y\": 1}\n\
                     {\"body\": \"meh\"}\n\
                     not json\n\
                     \n\
                     {\"body\": \"hate it\", \"y\": 0}\n";
        let path = write(tmp.path(), "r.jsonl", jsonl.as_bytes());
        let source = TextSource::Table { path, text_column: "body".into(), label_column: "y".into() };
        let (set, skipped) = load_text(&source, None, false).unwrap();
        assert_eq!(set.classes, ["0", "1"]);
        assert_eq!(set.len(), 2);
        assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [2, 3]);
        assert!(skipped[0].reason.contains("missing field `y`"));
    }

    #[test]
    fn dedup_drops_repeats_and_conflicts_before_any_split() {
        let ex = |t: &str, l| TextExample { text: t.into(), label: l };
        let set = TextSet { examples: vec![ex("a", 0), ex("b", 1), ex("a", 0), ex("c", 0), ex("c", 1), ex("a", 0)], classes: vec!["n".into(), "p".into()] };
        let (kept, report) = set.dedup();
        assert_eq!(kept.examples, [ex("a", 0), ex("b", 1)]);
        assert_eq!(report, DedupReport { duplicates: 2, conflicting: 2 });

        let many = TextSet { examples: (0..100).map(|i| ex(&i.to_string(), i % 2)).collect(), classes: kept.classes };
        let (train, valid, test) = many.split(0.1, 0.1, 42);
        assert_eq!((train.len(), valid.len(), test.len()), (80, 10, 10));
        let mut all: Vec<String> = [train, valid, test].iter().flat_map(|s| s.examples.iter().map(|e| e.text.clone())).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100, "the parts are disjoint and cover the set");
        assert_eq!(many.split(0.1, 0.1, 42).2.examples, many.split(0.1, 0.1, 42).2.examples, "seeded");
    }
}
