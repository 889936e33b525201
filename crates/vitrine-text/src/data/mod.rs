//! The text family's data: labelled reviews read and deduplicated ([`sources`]), split, turned
//! into token ids, and batched ([`tokens`]), with the rows of their n-grams when the model has a
//! dictionary of them ([`ngrams`]).

mod ngrams;
mod sources;
mod tokens;

pub use crate::config::TextSource;
pub use ngrams::{MAX_NGRAMS, NGRAMS_FILE, NgramDictionary};
pub use sources::{DedupReport, TextExample, TextSet, load_text};
pub use tokens::{TokenBatch, TokenBatches, TokenInput, TokenizedSet};

use anyhow::{Context, Result, bail};
use vitrine_core::data::{ClassMap, ClassMatcher, SkippedRow};
use vitrine_core::reporter::Reporter;

use crate::config::{TextConfig, TextDataSection, TextSourceConfig};
use crate::tokenizer::TextTokenizer;

/// The run's train, valid and test texts, kept in the run so `vitrine eval` and other tools can
/// score exactly the same split.
pub const SPLIT_FILES: [&str; 3] = ["split-train.jsonl", "split-valid.jsonl", "split-test.jsonl"];

/// The labelled texts of a run: deduplicated, split, and what was dropped on the way.
pub struct TextData {
    pub train: TextSet,
    pub valid: TextSet,
    pub test: TextSet,
    pub classes: Vec<String>,
    /// One line per source: bad rows skipped, duplicates dropped.
    pub notes: Vec<String>,
}

/// Loads one configured source, deduplicated when configured, and notes what was dropped.
fn load_source(
    name: &str,
    source: &TextSourceConfig,
    classes: Option<&ClassMatcher>,
    section: &TextDataSection,
    strict: bool,
    notes: &mut Vec<String>,
    reporter: &dyn Reporter,
) -> Result<TextSet> {
    let (set, skipped) = load_text(&source.source()?, classes, strict).with_context(|| format!("data.{name}"))?;
    if let Some(line) = skipped_summary(&skipped) {
        reporter.info(&format!("data.{name}: {line}"));
        for row in skipped.iter().take(5) {
            reporter.info(&format!("  {row}"));
        }
        notes.push(format!("data.{name}: {line}"));
    }
    if !section.dedup {
        return Ok(set);
    }
    let before = set.len();
    let (set, report) = set.dedup();
    if report.duplicates + report.conflicting > 0 {
        let line = format!(
            "dedup dropped {} repeated row(s) and {} row(s) of texts with conflicting labels ({before} → {} texts)",
            report.duplicates,
            report.conflicting,
            set.len()
        );
        reporter.info(&format!("data.{name}: {line}"));
        notes.push(format!("data.{name}: {line}"));
    }
    Ok(set)
}

fn skipped_summary(skipped: &[SkippedRow]) -> Option<String> {
    (!skipped.is_empty()).then(|| format!("skipped {} bad row(s)", skipped.len()))
}

/// Loads train / valid / test as configured: parts not given are split off `train` with the
/// run's seed after deduplication, and texts of a given valid/test source are removed from `train`.
pub fn load_data(config: &TextConfig, reporter: &dyn Reporter) -> Result<TextData> {
    let d = &config.data;
    let strict = config.run.strict;
    let mut notes = Vec::new();
    if !d.dedup {
        let warning = "data.dedup = false: repeated texts can land in both training and test data and inflate test scores";
        reporter.warn(warning);
        notes.push(warning.to_string());
    }
    let map = ClassMap::from_setting(d.class_map.as_ref())?;
    let named = d.classes.as_deref().map(|classes| ClassMatcher::new(classes, &map)).transpose().context("data.classes")?;
    let all = load_source("train", &d.train, named.as_ref(), d, strict, &mut notes, reporter)?;
    let classes = all.classes.clone();
    let matcher = ClassMatcher::new(&classes, &map)?;
    if classes.len() < 2 {
        bail!("data.train has {} class(es) ({classes:?}); a classifier needs at least 2", classes.len());
    }
    let mut given =
        |name, source: &Option<TextSourceConfig>| source.as_ref().map(|s| load_source(name, s, Some(&matcher), d, strict, &mut notes, reporter)).transpose();
    let (valid_given, test_given) = (given("valid", &d.valid)?, given("test", &d.test)?);
    let valid_fraction = if valid_given.is_some() { 0.0 } else { d.valid_fraction };
    let test_fraction = if test_given.is_some() { 0.0 } else { d.test_fraction };
    let (mut train, valid, test) = all.split(valid_fraction, test_fraction, config.run.split_seed());
    let valid = valid_given.unwrap_or(valid);
    let test = test_given.unwrap_or(test);
    if d.dedup && (d.valid.is_some() || d.test.is_some()) {
        let held_out: std::collections::HashSet<&str> = valid.examples.iter().chain(&test.examples).map(|e| e.text.as_str()).collect();
        let before = train.len();
        train.examples.retain(|e| !held_out.contains(e.text.as_str()));
        if train.len() < before {
            let line = format!("dropped {} training text(s) that also appear in valid/test", before - train.len());
            reporter.info(&format!("data.train: {line}"));
            notes.push(format!("data.train: {line}"));
        }
    }
    if let Some(limit) = d.limit {
        train.examples.truncate(limit);
    }
    if train.is_empty() || valid.is_empty() || test.is_empty() {
        bail!("too little data: {} training, {} validation and {} test texts", train.len(), valid.len(), test.len());
    }
    Ok(TextData { train, valid, test, classes, notes })
}

/// Token ids of every text of `set`, cut to the configured length.
pub fn tokenize(tokenizer: &TextTokenizer, set: &TextSet) -> Result<TokenizedSet> {
    let texts: Vec<&str> = set.examples.iter().map(|e| e.text.as_str()).collect();
    Ok(TokenizedSet { ids: tokenizer.encode_all(&texts)?, labels: set.examples.iter().map(|e| e.label).collect() })
}
