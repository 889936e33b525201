//! The text family's config: where labelled reviews come from, how they become tokens, and the
//! networks' `[model]` section.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use vitrine_core::config::{ClassMapSetting, ConfigFile, DataConfig, ExperimentConfig, ModelSection, NoEval};

/// The most hashed n-gram buckets the model's hashing can address without integer overflow.
pub const MAX_NGRAM_BUCKETS: usize = 200_000;

/// Where labelled text comes from.
#[derive(Debug, Clone)]
pub enum TextSource {
    /// One file per class, one text per line: `(class name, file)`.
    LinesPerClass(Vec<(String, PathBuf)>),
    /// A table (CSV, TSV or JSON Lines, by extension) with a text and a label column.
    Table { path: PathBuf, text_column: String, label_column: String },
}

/// The `task` value of text-classification configs.
pub const TASK: &str = "text-classification";

/// A whole text-classification experiment.
pub type TextConfig = ExperimentConfig<TextDataSection, TextModelConfig>;

/// Fine-tuning a pretrained encoder: a few epochs at a small learning rate, the best kept.
/// The head learns at 10× the encoder's rate (1e-4 and 1e-5).
pub const BERT_DEFAULTS: &[&str] =
    &["model.dropout=0.1", "model.encoder_lr=0.1", "train.epochs=3", "train.batch_size=32", "train.optimizer.lr=1e-4", "train.restore_best=true"];

/// The reference recipe (`reference-models.md`) for the networks, where a config is silent.
pub const TRAIN_DEFAULTS: &[&str] = &["train.epochs=5", "train.batch_size=64"];

/// `text-ngram`'s recipe, also what a config that names no model gets: many short epochs with
/// weight decay, stopped when the validation loss stops falling, the best epoch kept.
pub const NGRAM_DEFAULTS: &[&str] = &[
    "model.name=\"text-ngram\"",
    "model.embedding_dim=16",
    "model.hidden=0",
    "model.dropout=0.5",
    "model.embedding_dropout=0.3",
    "model.ngram_min_count=2",
    "model.ngram_order=3",
    "train.epochs=30",
    "train.batch_size=32",
    "train.optimizer.lr=0.005",
    "train.optimizer.weight_decay=1e-6",
    "train.early_stopping.patience=3",
    "train.restore_best=true",
];

/// Reads a text config with the family's defaults and `--set` overrides, and checks the model.
pub fn resolve(file: &ConfigFile, overrides: &[String]) -> Result<TextConfig> {
    let mut config = TextConfig::from_file(file, overrides)?;
    match (config.model.name, &config.model.pretrained) {
        (Architecture::Bert, None) => bail!(
            "{}: text-bert needs model.pretrained = \"DIR\" (a Hugging Face BERT directory: config.json, model.safetensors, tokenizer.json)",
            file.path.display()
        ),
        (Architecture::Bert, Some(dir)) => {
            config.data.tokenizer.path.get_or_insert_with(|| dir.join("tokenizer.json"));
        }
        (_, Some(_)) => bail!("{}: model.pretrained applies to text-bert only", file.path.display()),
        (_, None) => {}
    }
    let m = &config.model;
    if !(m.encoder_lr > 0.0 && m.encoder_lr <= 10.0) {
        bail!("{}: model.encoder_lr must be in (0, 10], a factor of train.optimizer.lr, got {}", file.path.display(), m.encoder_lr);
    }
    if !(m.layer_decay > 0.0 && m.layer_decay <= 1.0) {
        bail!("{}: model.layer_decay must be in (0, 1], got {}", file.path.display(), m.layer_decay);
    }
    if m.name != Architecture::Bert && (m.pooling != Pooling::Cls || m.layer_decay != 1.0) {
        bail!("{}: model.pooling and model.layer_decay apply to text-bert only (the other networks pool by attention already)", file.path.display());
    }
    if m.ngram_buckets.max(m.wide_buckets) > MAX_NGRAM_BUCKETS || !(2..=3).contains(&m.ngram_order) {
        bail!("{}: model.ngram_buckets and model.wide_buckets must be at most {MAX_NGRAM_BUCKETS}, model.ngram_order 2 or 3", file.path.display());
    }
    if m.name == Architecture::Transformer && (m.heads == 0 || m.embedding_dim % m.heads != 0) {
        bail!("{}: model.embedding_dim ({}) must be a multiple of model.heads ({})", file.path.display(), m.embedding_dim, m.heads);
    }
    Ok(config)
}

/// The `[model]` section a config naming only `arch` resolves to.
pub fn model_defaults(arch: Architecture) -> TextModelConfig {
    let text = format!("task = \"{TASK}\"\n[data]\ntrain = {{ file = \"texts.csv\" }}\n[model]\nname = \"{}\"\n", arch.name());
    TextConfig::parse(&text, &[]).expect("every model's defaults resolve").model
}

fn default_valid_fraction() -> f64 {
    0.1
}

/// Where labelled text comes from, how it is split, and how it becomes tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextDataSection {
    pub train: TextSourceConfig,
    /// Validation data; when absent, `valid_fraction` of `train` is held out with the run's seed.
    #[serde(default)]
    pub valid: Option<TextSourceConfig>,
    /// Test data; when absent, `test_fraction` of `train` is held out with the run's seed.
    #[serde(default)]
    pub test: Option<TextSourceConfig>,
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    #[serde(default = "default_valid_fraction")]
    pub test_fraction: f64,
    /// Drop repeated texts and texts with conflicting labels before splitting, so no text is
    /// both trained and tested on. Turning it off inflates test scores (and is logged loudly).
    #[serde(default = "default_true")]
    pub dedup: bool,
    /// Class names in label order; by default the sorted distinct labels of `train`.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Labels that differ from the class names (beyond case, spaces, hyphens, underscores and
    /// slashes): a TOML file or inline table of `"label" = "class"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_map: Option<ClassMapSetting>,
    /// Use only the first N training texts after the split (quick experiments).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
}

fn default_true() -> bool {
    true
}

/// One text data set on disk: a CSV/TSV/JSONL `file`, or `per_class` files of one text per line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextSourceConfig {
    /// `.csv`, `.tsv` (with a header row) or `.jsonl` (one object per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Class name → file with one text per line, e.g. `{ pos = "pos.txt", neg = "neg.txt" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_class: Option<std::collections::BTreeMap<String, PathBuf>>,
    /// The text column (CSV/TSV) or field (JSONL) of `file`.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// The label column (CSV/TSV) or field (JSONL) of `file`.
    #[serde(default = "default_label_column")]
    pub label_column: String,
}

fn default_text_column() -> String {
    "text".into()
}

fn default_label_column() -> String {
    "label".into()
}

impl TextSourceConfig {
    /// The loader's view of this source, or what is missing.
    pub fn source(&self) -> Result<TextSource> {
        match (&self.file, &self.per_class) {
            (Some(file), None) => {
                let ext = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                match ext.as_str() {
                    "csv" | "tsv" | "jsonl" | "ndjson" => {
                        Ok(TextSource::Table { path: file.clone(), text_column: self.text_column.clone(), label_column: self.label_column.clone() })
                    }
                    _ => bail!("{}: expected a .csv, .tsv or .jsonl file (or `per_class` text files)", file.display()),
                }
            }
            (None, Some(files)) if files.len() >= 2 => Ok(TextSource::LinesPerClass(files.iter().map(|(c, p)| (c.clone(), p.clone())).collect())),
            (None, Some(_)) => bail!("`per_class` needs a file for each of at least two classes"),
            (None, None) => bail!("give `file = \"reviews.csv\"` (or .tsv/.jsonl) or `per_class = {{ pos = \"pos.txt\", neg = \"neg.txt\" }}`"),
            (Some(_), Some(_)) => bail!("give either `file` or `per_class`, not both"),
        }
    }
}

/// The tokenizer: trained on the training split, or an existing `tokenizer.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    pub kind: TokenizerKind,
    /// Vocabulary size to train, special tokens included.
    pub vocab_size: usize,
    /// Tokens seen fewer times in the training split do not enter the vocabulary.
    pub min_frequency: u64,
    /// Longer texts are cut to their first `max_len` tokens.
    pub max_len: usize,
    /// Lower-case before tokenizing (CJK text is unaffected).
    pub lowercase: bool,
    /// Use this Hugging Face `tokenizer.json` instead of training one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self { kind: TokenizerKind::Wordpiece, vocab_size: 8000, min_frequency: 2, max_len: 128, lowercase: true, path: None }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    Wordpiece,
    Bpe,
    /// Whole words (every CJK character its own): the most frequent ones, ties in alphabetical
    /// order. Like the other two (with the workspace's patched `tokenizers`), the same texts
    /// always give the same vocabulary.
    Word,
}

impl DataConfig for TextDataSection {
    fn check(&self) -> Result<()> {
        for (name, f, given) in [("valid", self.valid_fraction, self.valid.is_some()), ("test", self.test_fraction, self.test.is_some())] {
            if !given && !(0.0 < f && f < 1.0) {
                bail!("data.{name}_fraction must be between 0 and 1 (exclusive), got {f}");
            }
        }
        let held_out = [(self.valid_fraction, self.valid.is_none()), (self.test_fraction, self.test.is_none())]
            .iter()
            .filter(|(_, split)| *split)
            .map(|(f, _)| f)
            .sum::<f64>();
        if held_out >= 0.9 {
            bail!("data.valid_fraction + data.test_fraction leave almost nothing to train on ({held_out})");
        }
        let t = &self.tokenizer;
        if t.max_len == 0 {
            bail!("data.tokenizer.max_len must be at least 1");
        }
        if t.path.is_none() && t.vocab_size < 16 {
            bail!("data.tokenizer.vocab_size must be at least 16, got {}", t.vocab_size);
        }
        for (name, source) in [("train", Some(&self.train)), ("valid", self.valid.as_ref()), ("test", self.test.as_ref())] {
            if let Some(source) = source {
                source.source().with_context(|| format!("data.{name}"))?;
            }
        }
        Ok(())
    }
}

/// Which network to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// The reference of `reference-models.md`: embedding, bidirectional LSTM, attention pooling.
    #[serde(rename = "text-lstm-attn")]
    LstmAttention,
    /// The same with a bidirectional GRU (fewer parameters, a little faster).
    #[serde(rename = "text-gru-attn")]
    GruAttention,
    /// A small Transformer encoder with learned positions, then the same attention pooling.
    #[serde(rename = "text-transformer")]
    Transformer,
    /// fastText-style: token and n-gram embeddings averaged over the text, then linear
    /// (or one small hidden layer). The default for a config that names no model.
    #[serde(rename = "text-ngram")]
    Ngram,
    /// A pretrained BERT-family encoder (`model.pretrained`), its `[CLS]` vector (or attention
    /// pooling), dropout, linear.
    #[serde(rename = "text-bert")]
    Bert,
}

/// How `text-bert` turns its hidden states into one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The `[CLS]` token's state through BERT's own pooler (dense + tanh), as `BertForSequenceClassification`.
    Cls,
    /// Additive attention over every real token's final state, learnt with the head.
    Attention,
}

impl Architecture {
    pub const ALL: [Architecture; 5] = [Self::Ngram, Self::LstmAttention, Self::GruAttention, Self::Transformer, Self::Bert];

    pub fn name(self) -> &'static str {
        match self {
            Self::LstmAttention => "text-lstm-attn",
            Self::GruAttention => "text-gru-attn",
            Self::Transformer => "text-transformer",
            Self::Ngram => "text-ngram",
            Self::Bert => "text-bert",
        }
    }
}

/// The `[model]` section of a text-classification config; the defaults are the reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextModelConfig {
    pub name: Architecture,
    pub embedding_dim: usize,
    /// Hidden size per direction (recurrent), model width (transformer), or the width of
    /// `text-ngram`'s hidden layer (0: none, a linear model over the averaged embeddings).
    pub hidden: usize,
    /// Width of the attention scorer `W`.
    pub attention_dim: usize,
    /// Dropout before the output layer.
    pub dropout: f64,
    /// Hashed n-gram embeddings added to the token embeddings (0: off, the reference). Gives
    /// the network Chinese words (runs of characters) directly.
    pub ngram_buckets: usize,
    /// N-gram embeddings from a dictionary of the training split's n-grams seen at least this
    /// many times, one row each (no collisions; kept in the run as `ngrams.txt`); 0: off. Used
    /// when `ngram_buckets` is 0 (`text-ngram`'s default), so hashing wins where both are set.
    pub ngram_min_count: usize,
    /// Longest n-gram embedded: 2 (bigrams) or 3 (bigrams and trigrams).
    pub ngram_order: usize,
    /// A "wide" linear path beside the network: class scores of hashed tokens and n-grams (up to
    /// `ngram_order`), averaged over the text and added to the logits (0 buckets: off, the reference).
    pub wide_buckets: usize,
    /// With a wide path: average the wide path's and the network's class probabilities (a
    /// two-model ensemble trained together) instead of adding their logits.
    pub ensemble: bool,
    /// Average the trained model's class probabilities with those of the classical baseline
    /// (TF-IDF + logistic regression, fitted on the run's training split and kept in the run).
    pub blend_baseline: bool,
    /// `text-bert`: a directory with a Hugging Face BERT's `config.json`, `model.safetensors` and
    /// `tokenizer.json` (its tokenizer is the run's unless `data.tokenizer.path` names another).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// `text-bert`: the encoder's learning rate as a factor of the new head's (`train.optimizer.lr`).
    pub encoder_lr: f64,
    /// `text-bert`: each encoder layer learns at this factor times the rate of the layer above
    /// (layer-wise decay; the embeddings below the lowest layer); 1: one rate for the encoder.
    pub layer_decay: f64,
    /// `text-bert`: `cls` or `attention`.
    pub pooling: Pooling,
    /// Dropout on the (summed) input embeddings (0: off, the reference).
    pub embedding_dropout: f64,
    /// Transformer only: encoder layers, heads, feed-forward width.
    pub layers: usize,
    pub heads: usize,
    pub feed_forward: usize,
}

impl ModelSection for TextModelConfig {
    type Eval = NoEval;

    /// `text-ngram`'s recipe for it and for a config naming no model; the reference recipe
    /// (`reference-models.md`) for the networks.
    fn defaults(model: Option<&str>) -> &'static [&'static str] {
        match model {
            None | Some("text-ngram") => NGRAM_DEFAULTS,
            Some("text-bert") => BERT_DEFAULTS,
            Some(_) => TRAIN_DEFAULTS,
        }
    }
}

impl TextModelConfig {
    /// Whether the n-gram embeddings come from a dictionary of the training split's n-grams
    /// (rather than hashed buckets, or none).
    pub fn ngram_dictionary(&self) -> bool {
        self.ngram_buckets == 0 && self.ngram_min_count > 0
    }
}

impl Default for TextModelConfig {
    fn default() -> Self {
        Self {
            name: Architecture::LstmAttention,
            embedding_dim: 128,
            hidden: 128,
            attention_dim: 128,
            dropout: 0.3,
            ngram_buckets: 0,
            ngram_min_count: 0,
            ngram_order: 2,
            wide_buckets: 0,
            ensemble: false,
            blend_baseline: false,
            pretrained: None,
            encoder_lr: 1.0,
            layer_decay: 1.0,
            pooling: Pooling::Cls,
            embedding_dropout: 0.0,
            layers: 2,
            heads: 4,
            feed_forward: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_sources_say_what_is_wrong() {
        let parse = |train: &str| {
            let text = format!("task = \"t\"\n[data]\ntrain = {train}\n");
            TextConfig::parse(&text, &[]).map_err(|e| format!("{e:#}"))
        };
        let c = parse("{ file = \"r.csv\", text_column = \"review\" }").unwrap();
        assert_eq!(c.data.train.label_column, "label");
        assert_eq!((c.data.tokenizer.vocab_size, c.data.tokenizer.max_len, c.data.dedup), (8000, 128, true));
        assert_eq!(
            (c.model.name, c.model.hidden, c.train.epochs, c.train.restore_best),
            (Architecture::Ngram, 0, 30, true),
            "no model named: text-ngram's recipe"
        );
        let named =
            |name: &str| TextConfig::parse(&format!("task = \"t\"\n[data]\ntrain = {{ file = \"r.csv\" }}\n[model]\nname = \"{name}\"\n"), &[]).unwrap();
        let reference = named("text-lstm-attn");
        assert_eq!(
            (reference.model.hidden, reference.train.epochs, reference.train.batch_size, reference.train.restore_best),
            (128, 5, 64, false),
            "the reference recipe"
        );
        assert!(parse("{ file = \"r.xlsx\" }").unwrap_err().contains("expected a .csv, .tsv or .jsonl"));
        assert!(parse("{ per_class = { pos = \"p.txt\" } }").unwrap_err().contains("at least two classes"));
        assert!(parse("{ }").unwrap_err().contains("give `file"));
        assert!(parse("{ file = \"r.csv\", text_colum = \"x\" }").unwrap_err().contains("did you mean `text_column`?"));
    }
}
