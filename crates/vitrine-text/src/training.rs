//! Training a review-sentiment classifier from a config into a run directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::classifier::{ClassifierTask, score};
use vitrine_core::config::{ExperimentConfig, TextDataSection, TextSourceConfig};
use vitrine_core::data::{BatchSource, SkippedRow, TextSet, TokenBatches, TokenizedSet, load_text};
use vitrine_core::plot::confusion_png;
use vitrine_core::progress::Progress;
use vitrine_core::report::{DataSummary, RunIdentity, RunReport};
use vitrine_core::run_dir::{RunDir, WEIGHTS_FILE};
use vitrine_core::train::{FitPlan, TrainTask, build_optimizer, fit, resume};

use crate::model::{Architecture, MAX_NGRAM_BUCKETS, TextClassifier, TextModelConfig};
use crate::tokenizer::TextTokenizer;

/// The `task` value of text-classification configs.
pub const TASK: &str = "text-classification";

/// The file a run keeps its tokenizer in.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A whole text-classification experiment.
pub type TextConfig = ExperimentConfig<TextDataSection, TextModelConfig>;

/// The reference model and recipe (`reference-models.md`), where a config is silent.
pub const TRAIN_DEFAULTS: &[&str] = &["model.name=\"text-lstm-attn\"", "train.epochs=5", "train.batch_size=64"];

/// Reads a text config with the family's defaults and `--set` overrides.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<TextConfig> {
    let config = TextConfig::load_with_defaults(path, TRAIN_DEFAULTS, overrides)?;
    let m = &config.model;
    if m.ngram_buckets.max(m.wide_buckets) > MAX_NGRAM_BUCKETS || !(2..=3).contains(&m.ngram_order) {
        bail!("{}: model.ngram_buckets and model.wide_buckets must be at most {MAX_NGRAM_BUCKETS}, model.ngram_order 2 or 3", path.display());
    }
    if m.name == Architecture::Transformer && (m.heads == 0 || m.embedding_dim % m.heads != 0) {
        bail!("{}: model.embedding_dim ({}) must be a multiple of model.heads ({})", path.display(), m.embedding_dim, m.heads);
    }
    Ok(config)
}

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
pub fn load_source(name: &str, source: &TextSourceConfig, classes: Option<&[String]>, section: &TextDataSection, strict: bool, notes: &mut Vec<String>) -> Result<TextSet> {
    let (set, skipped) = load_text(&source.source()?, classes, strict).with_context(|| format!("data.{name}"))?;
    if let Some(line) = skipped_summary(&skipped) {
        println!("data.{name}: {line}");
        for row in skipped.iter().take(5) {
            println!("  {}: line {}: {}", row.path.display(), row.line, row.reason);
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
        println!("data.{name}: {line}");
        notes.push(format!("data.{name}: {line}"));
    }
    Ok(set)
}

fn skipped_summary(skipped: &[SkippedRow]) -> Option<String> {
    (!skipped.is_empty()).then(|| format!("skipped {} bad row(s)", skipped.len()))
}

/// Loads train / valid / test as configured: parts not given are split off `train` with the
/// run's seed after deduplication, and texts of a given valid/test source are removed from `train`.
pub fn load_data(config: &TextConfig) -> Result<TextData> {
    let d = &config.data;
    let strict = config.run.strict;
    let mut notes = Vec::new();
    if !d.dedup {
        let warning = "data.dedup = false: repeated texts can land in both training and test data and inflate test scores";
        eprintln!("WARNING: {warning}");
        notes.push(warning.to_string());
    }
    let all = load_source("train", &d.train, d.classes.as_deref(), d, strict, &mut notes)?;
    let classes = all.classes.clone();
    if classes.len() < 2 {
        bail!("data.train has {} class(es) ({classes:?}); a classifier needs at least 2", classes.len());
    }
    let valid_given = d.valid.as_ref().map(|s| load_source("valid", s, Some(&classes), d, strict, &mut notes)).transpose()?;
    let test_given = d.test.as_ref().map(|s| load_source("test", s, Some(&classes), d, strict, &mut notes)).transpose()?;
    let valid_fraction = if valid_given.is_some() { 0.0 } else { d.valid_fraction };
    let test_fraction = if test_given.is_some() { 0.0 } else { d.test_fraction };
    let (mut train, valid, test) = all.split(valid_fraction, test_fraction, config.run.split_seed());
    let valid = valid_given.unwrap_or(valid);
    let test = test_given.unwrap_or(test);
    if d.dedup && (d.valid.is_some() || d.test.is_some()) {
        let held_out: std::collections::HashSet<&str> =
            valid.examples.iter().chain(&test.examples).map(|e| e.text.as_str()).collect();
        let before = train.len();
        train.examples.retain(|e| !held_out.contains(e.text.as_str()));
        if train.len() < before {
            let line = format!("dropped {} training text(s) that also appear in valid/test", before - train.len());
            println!("data.train: {line}");
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

/// The tokenizer of a run: the configured file, or one trained on the training texts.
fn tokenizer_for(config: &TextConfig, train: &TextSet) -> Result<TextTokenizer> {
    let t = &config.data.tokenizer;
    match &t.path {
        Some(path) => TextTokenizer::load(path, t.max_len).context("data.tokenizer.path"),
        None => TextTokenizer::train(train.examples.iter().map(|e| e.text.as_str()), t),
    }
}

/// Token ids of every text of `set`, cut to the configured length.
pub fn tokenize(tokenizer: &TextTokenizer, set: &TextSet) -> Result<TokenizedSet> {
    let texts: Vec<&str> = set.examples.iter().map(|e| e.text.as_str()).collect();
    Ok(TokenizedSet { ids: tokenizer.encode_all(&texts)?, labels: set.examples.iter().map(|e| e.label).collect() })
}

/// The run's train, valid and test texts.
pub const SPLIT_FILES: [&str; 3] = ["split-train.jsonl", "split-valid.jsonl", "split-test.jsonl"];

/// Trains the configured model into `run`, continuing from its last checkpoint when `resuming`.
pub fn train(config: &TextConfig, run: &RunDir, compute: &ComputeDevice, resuming: bool) -> Result<RunReport> {
    let data = load_data(config)?;
    let classes = data.classes.clone();
    run.record_start(&config.to_toml()?, &classes, resuming)?;
    let tokenizer = if resuming {
        TextTokenizer::load(&run.file(TOKENIZER_FILE), config.data.tokenizer.max_len)?
    } else {
        let tokenizer = tokenizer_for(config, &data.train)?;
        tokenizer.save(&run.file(TOKENIZER_FILE))?;
        // Exactly which texts trained, validated and tested this model, in a form `vitrine eval`
        // and other tools read back.
        let (text_key, label_key) = (&config.data.train.text_column, &config.data.train.label_column);
        for (set, file) in [(&data.train, SPLIT_FILES[0]), (&data.valid, SPLIT_FILES[1]), (&data.test, SPLIT_FILES[2])] {
            run.write(file, set.to_jsonl(text_key, label_key))?;
        }
        tokenizer
    };
    let (train_set, valid_set, test_set) = (
        Arc::new(tokenize(&tokenizer, &data.train)?),
        Arc::new(tokenize(&tokenizer, &data.valid)?),
        Arc::new(tokenize(&tokenizer, &data.test)?),
    );
    let mean_len = train_set.ids.iter().map(Vec::len).sum::<usize>() as f64 / train_set.len() as f64;
    println!(
        "data: {} train / {} valid / {} test texts, {} classes {classes:?}; vocabulary {}, {mean_len:.1} tokens per text (max {})",
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        classes.len(),
        tokenizer.vocab_size(),
        config.data.tokenizer.max_len
    );

    let device = compute.device.clone();
    let train_device = device.clone().autodiff();
    train_device.seed(config.run.seed);
    let model = TextClassifier::new(&config.model, tokenizer.vocab_size(), config.data.tokenizer.max_len, classes.len(), &train_device);
    let parameters = model.num_params();
    println!("model: {} ({parameters} parameters)", config.model.name.name());
    let optimizer = build_optimizer(&config.train.optimizer, config.train.grad_clip_norm);
    let mut task = ClassifierTask::new(model, optimizer, &train_device);
    let history = if resuming { resume(&mut task, run)? } else { Vec::new() };
    if resuming {
        println!("resuming {} after epoch {}", run.root().display(), history.len());
    }

    let bs = config.train.batch_size;
    let pad = tokenizer.pad_id();
    let train_batches = TokenBatches::shuffled(train_set, bs, config.run.seed, pad, train_device.clone());
    let valid_batches = TokenBatches::ordered(valid_set, bs, pad, device.clone());
    let outcome = fit(&mut task, &train_batches, &valid_batches, &FitPlan::new(&config.train, &train_device, config.run.seed), run, history, &mut Progress::new())?;
    task.save_weights(&run.file(WEIGHTS_FILE))?;
    if outcome.stopped_early {
        println!("early stopping: no validation improvement for {} epochs", config.train.early_stopping.as_ref().map_or(0, |e| e.patience));
    }

    let model = task.model().valid();
    let scores = score(&model, TokenBatches::ordered(test_set, bs, pad, device.clone()).batches(0), &classes);
    confusion_png(&run.file("confusion.png"), &scores.confusion, &classes)?;
    println!(
        "test: accuracy {:.2}%, macro-F1 {:.4}{}",
        100.0 * scores.accuracy,
        scores.macro_f1,
        scores.auroc.map(|a| format!(", AUROC {a:.4}")).unwrap_or_default()
    );
    let who = RunIdentity { task: TASK, model: config.model.name.name(), parameters, device: &compute.description };
    let summary = DataSummary { train: data.train.len(), valid: data.valid.len(), test: Some(data.test.len()), classes, skipped: data.notes };
    let report = RunReport { test: Some(scores), ..RunReport::of_fit(who, summary, outcome) };
    report.write(run)?;
    println!("run saved in {}", run.root().display());
    Ok(report)
}
