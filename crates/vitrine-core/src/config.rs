//! Experiment configuration: TOML files parsed with serde, `--set key=value` overrides,
//! unknown keys rejected with the nearest valid key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::backend::BackendChoice;

/// A whole experiment: what to run, on which data, with which model and training settings.
///
/// `D` and `M` are the data and model sections of one family: images for the classifiers and
/// generators ([`ImageDataSection`]), text for the sentiment models.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig<D, M> {
    /// Which model family trains this config, e.g. `image-classification`.
    pub task: String,
    #[serde(default)]
    pub run: RunSection,
    pub data: D,
    pub model: M,
    #[serde(default)]
    pub train: TrainSection,
    /// How generated images are scored: generation configs only (see [`ModelSection`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSection>,
}

/// What a family's `[model]` section tells the shared config code.
pub trait ModelSection {
    /// Whether the family scores generated images, and so takes an `[eval]` section.
    const TAKES_EVAL_SECTION: bool = false;
}

/// Scoring generated images in the feature space of a trained image classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// A Vitrine image-classifier run (e.g. `runs/fashion-cnn`) whose penultimate layer is the
    /// feature space of the Fréchet distance, and whose predictions check conditional samples.
    pub classifier: Option<PathBuf>,
    /// Generated and real images compared each time.
    pub samples: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self { classifier: None, samples: 2000 }
    }
}


/// Run-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Seed for weights, shuffling, splits and augmentation.
    pub seed: u64,
    /// Seed of the train/valid/test split alone, when it must stay fixed while `seed` varies
    /// (comparing initialisations on the same split). By default `seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// Where the model runs: `auto`, `flex`, `ndarray` or `wgpu`.
    pub backend: BackendChoice,
    /// Fail on the first unreadable input file instead of skipping it.
    pub strict: bool,
}

impl Default for RunSection {
    fn default() -> Self {
        Self { seed: 42, split_seed: None, backend: BackendChoice::Auto, strict: false }
    }
}

impl RunSection {
    /// The seed that draws held-out examples.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }
}

/// A `[data]` section, checked once parsed.
pub trait DataConfig {
    fn check(&self) -> Result<()>;
}

/// Where image data comes from and how images are shaped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataSection {
    pub train: DataSource,
    /// Validation data; when absent, `valid_fraction` of `train` is held out with the run's seed.
    #[serde(default)]
    pub valid: Option<DataSource>,
    /// Held-out test data, evaluated once at the end of training.
    #[serde(default)]
    pub test: Option<DataSource>,
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// Class names in label order (IDX files carry none; image folders name their own).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Use only the first N training examples (quick experiments).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub image: ImageShape,
    #[serde(default)]
    pub augment: Augment,
}

fn default_valid_fraction() -> f64 {
    0.1
}

/// One data set on disk: IDX image + label files, or a folder with one sub-folder per class.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
}

/// A data source with its layout decided.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceLayout {
    Idx { images: PathBuf, labels: PathBuf },
    Folder(PathBuf),
}

impl DataSource {
    /// The source a command line names: an image folder, or an IDX images file and its labels.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self> {
        match paths {
            [folder] if folder.is_dir() => Ok(Self { folder: Some(folder.clone()), ..Default::default() }),
            [images, labels] => Ok(Self { images: Some(images.clone()), labels: Some(labels.clone()), ..Default::default() }),
            [file] => bail!("{} is not a folder; give an image folder, or an IDX images file and its labels file", file.display()),
            _ => bail!("--data takes an image folder, or an IDX images file followed by its labels file"),
        }
    }

    /// Decides the layout, or says exactly what is missing.
    pub fn layout(&self) -> Result<SourceLayout> {
        match (&self.images, &self.labels, &self.folder) {
            (Some(images), Some(labels), None) => {
                Ok(SourceLayout::Idx { images: images.clone(), labels: labels.clone() })
            }
            (None, None, Some(folder)) => Ok(SourceLayout::Folder(folder.clone())),
            (Some(_), None, None) => bail!("`images` is set but `labels` is missing"),
            (None, Some(_), None) => bail!("`labels` is set but `images` is missing"),
            (None, None, None) => {
                bail!("give either `folder = \"...\"` or both `images` and `labels` (IDX files)")
            }
            _ => bail!("give either `folder` or `images` + `labels`, not both"),
        }
    }
}

/// The image shape the model takes; every input is converted to it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Default for ImageShape {
    fn default() -> Self {
        Self { channels: 1, height: 28, width: 28 }
    }
}

impl ImageShape {
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Training-time augmentation (off by default, as in the reference recipe).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Mirror images left-right with probability 0.5.
    pub flip: bool,
    /// Shift images by up to this many pixels in each direction (zero padding), like a random crop.
    pub shift: usize,
    /// Probability of random erasing (Zhong et al. 2017): one rectangle of 2–40% of the image, of
    /// aspect ratio 0.3–3.3, filled with random pixels.
    pub erase: f64,
}

/// Optimisation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Clip the gradient of each parameter to this L2 norm.
    pub grad_clip_norm: Option<f32>,
    pub early_stopping: Option<EarlyStopping>,
    /// How many epoch checkpoints to keep on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// End with the weights of the epoch with the lowest validation loss instead of the last.
    pub restore_best: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            grad_clip_norm: None,
            early_stopping: None,
            keep_checkpoints: 2,
            restore_best: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    /// SGD momentum (0 turns it off).
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        // PyTorch's defaults, so results compare.
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Step,
    Cosine,
}

/// Learning rate per epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// `step`: multiply by `gamma` every `step_size` epochs.
    pub step_size: usize,
    pub gamma: f64,
    /// `cosine`: the learning rate reached at the last epoch.
    pub min_lr: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { kind: ScheduleKind::Constant, step_size: 5, gamma: 0.1, min_lr: 0.0 }
    }
}

impl ScheduleConfig {
    /// The learning rate of `epoch` (1-based) out of `epochs`. A pure function of the epoch,
    /// so a resumed run needs no scheduler state.
    pub fn lr_at(&self, base_lr: f64, epoch: usize, epochs: usize) -> f64 {
        let done = epoch.saturating_sub(1);
        match self.kind {
            ScheduleKind::Constant => base_lr,
            ScheduleKind::Step => base_lr * self.gamma.powi((done / self.step_size.max(1)) as i32),
            ScheduleKind::Cosine => {
                let span = epochs.saturating_sub(1).max(1) as f64;
                let t = (done as f64 / span).min(1.0);
                self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Stop when the validation loss has not improved by `min_delta` for `patience` epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
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
    pub fn source(&self) -> Result<crate::data::TextSource> {
        use crate::data::TextSource;
        match (&self.file, &self.per_class) {
            (Some(file), None) => {
                let ext = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                match ext.as_str() {
                    "csv" | "tsv" => Ok(TextSource::Table {
                        path: file.clone(),
                        text_column: self.text_column.clone(),
                        label_column: self.label_column.clone(),
                    }),
                    "jsonl" | "ndjson" => Ok(TextSource::JsonLines {
                        path: file.clone(),
                        text_field: self.text_column.clone(),
                        label_field: self.label_column.clone(),
                    }),
                    _ => bail!("{}: expected a .csv, .tsv or .jsonl file (or `per_class` text files)", file.display()),
                }
            }
            (None, Some(files)) if files.len() >= 2 => {
                Ok(TextSource::LinesPerClass(files.iter().map(|(c, p)| (c.clone(), p.clone())).collect()))
            }
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

impl DataConfig for ImageDataSection {
    fn check(&self) -> Result<()> {
        let f = self.valid_fraction;
        if self.valid.is_none() && !(0.0 < f && f < 1.0) {
            bail!("data.valid_fraction must be between 0 and 1 (exclusive), got {f}");
        }
        let shape = self.image;
        if ![1, 3].contains(&shape.channels) || shape.height == 0 || shape.width == 0 {
            bail!("data.image must have 1 or 3 channels and a non-zero size, got {shape:?}");
        }
        let erase = self.augment.erase;
        if !(0.0..=1.0).contains(&erase) {
            bail!("data.augment.erase is a probability between 0 and 1, got {erase}");
        }
        for (name, source) in [("train", Some(&self.train)), ("valid", self.valid.as_ref()), ("test", self.test.as_ref())] {
            if let Some(source) = source {
                source.layout().with_context(|| format!("data.{name}"))?;
            }
        }
        Ok(())
    }
}

impl<D: DataConfig + Serialize + DeserializeOwned, M: ModelSection + Serialize + DeserializeOwned> ExperimentConfig<D, M> {
    /// Reads a config file, applies `--set key=value` overrides, and checks it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        Self::load_with_defaults(path, &[], overrides)
    }

    /// Like [`ExperimentConfig::load`], with a family's own defaults (`key=value`, e.g. the
    /// text reference's `train.epochs=5`) filled in where the file is silent.
    pub fn load_with_defaults(path: &Path, defaults: &[&str], overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse_with_defaults(&text, defaults, overrides).with_context(|| format!("in config {}", path.display()))
    }

    /// Parses config text; see [`ExperimentConfig::load`].
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        Self::parse_with_defaults(text, &[], overrides)
    }

    /// Parses config text; see [`ExperimentConfig::load_with_defaults`].
    pub fn parse_with_defaults(text: &str, defaults: &[&str], overrides: &[String]) -> Result<Self> {
        // Straight from the text, so errors point at its lines; through a table when defaults
        // or overrides apply (a section the defaults fill may be missing from the text).
        let straight = toml::from_str::<Self>(text).map_err(explain_toml_error);
        let config = if overrides.is_empty() && defaults.is_empty() {
            straight?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(explain_toml_error)?;
            for item in defaults {
                apply_default(&mut table, item)?;
            }
            for item in overrides {
                apply_override(&mut table, item)?;
            }
            let value = toml::Value::Table(table);
            match (value.try_into::<Self>(), straight) {
                (Ok(config), _) => config,
                (Err(_), Err(located)) => return Err(located),
                (Err(e), Ok(_)) => return Err(explain_toml_error(e)),
            }
        };
        config.check()?;
        Ok(config)
    }

    /// The resolved config, defaults included, as TOML.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// The `[eval]` settings, defaults where the file has none.
    pub fn eval_settings(&self) -> EvalSection {
        self.eval.clone().unwrap_or_default()
    }

    fn check(&self) -> Result<()> {
        if self.eval.is_some() && !M::TAKES_EVAL_SECTION {
            bail!(
                "`[eval]` scores generated images and belongs in image-generation configs only; \
                 this config's task is `{}`: remove the section",
                self.task
            );
        }
        let t = &self.train;
        if t.epochs == 0 {
            bail!("train.epochs must be at least 1");
        }
        if t.batch_size == 0 {
            bail!("train.batch_size must be at least 1");
        }
        if !(t.optimizer.lr > 0.0 && t.optimizer.lr.is_finite()) {
            bail!("train.optimizer.lr must be a positive number, got {}", t.optimizer.lr);
        }
        self.data.check()
    }
}

/// Reads only the `task` key, to pick the model family before the full parse.
pub fn peek_task(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(explain_toml_error)
        .with_context(|| format!("in config {}", path.display()))?;
    match table.get("task") {
        Some(toml::Value::String(task)) => Ok(task.clone()),
        Some(other) => bail!("{}: `task` must be a string, got {other}", path.display()),
        None => bail!("{}: missing `task` (e.g. task = \"image-classification\")", path.display()),
    }
}

/// Sets `a.b.c=value` only where the table has no value yet.
fn apply_default(table: &mut toml::Table, item: &str) -> Result<()> {
    let key = item.split_once('=').map_or(item, |(k, _)| k.trim());
    let mut node = &*table;
    for part in key.split('.') {
        match node.get(part) {
            Some(toml::Value::Table(inner)) => node = inner,
            Some(_) => return Ok(()), // the file sets it
            None => return apply_override(table, item),
        }
    }
    Ok(())
}

/// Applies one `a.b.c=value` override. The value is read as TOML (`3`, `1e-4`, `true`,
/// `[1, 2]`), and as a plain string when it is not valid TOML.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .with_context(|| format!("--set {item}: expected key=value"))?;
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {item}: `{key}` is not a valid key");
    }
    let mut node = table;
    for part in &parts[..parts.len() - 1] {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .with_context(|| format!("--set {item}: `{part}` is a value, not a section"))?;
    }
    node.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Adds "did you mean" to serde's unknown-field errors.
fn explain_toml_error(err: toml::de::Error) -> anyhow::Error {
    let text = err.to_string();
    match nearest_key_hint(&text) {
        Some(hint) => anyhow::anyhow!("{}\n{hint}", text.trim_end()),
        None => anyhow::anyhow!("{}", text.trim_end()),
    }
}

/// From serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the
/// valid name closest to `x`.
fn nearest_key_hint(message: &str) -> Option<String> {
    let (what, rest) = [("key", "unknown field `"), ("value", "unknown variant `")]
        .into_iter()
        .find_map(|(what, marker)| Some((what, message.split(marker).nth(1)?)))?;
    let (unknown, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (strsim::levenshtein(unknown, c), *c))
        .min()?;
    Some(format!("unknown {what} `{unknown}`: did you mean `{}`?", best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Model {
        name: String,
    }

    impl ModelSection for Model {}

    type Config = ExperimentConfig<ImageDataSection, Model>;

    const MINIMAL: &str = r#"
task = "image-classification"
[data.train]
folder = "x"
[model]
name = "m"
"#;

    #[test]
    fn defaults_fill_the_rest() {
        let c = Config::parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.train.epochs, 10);
        assert_eq!(c.train.batch_size, 128);
        assert_eq!(c.run.seed, 42);
        assert_eq!(c.data.train.layout().unwrap(), SourceLayout::Folder("x".into()));
        // The resolved config round-trips.
        let again = Config::parse(&c.to_toml().unwrap(), &[]).unwrap();
        assert_eq!(again.train.epochs, 10);
    }

    #[test]
    fn unknown_key_names_the_nearest_valid_one() {
        let text = format!("{MINIMAL}\n[train]\nepoch = 3\n");
        let err = format!("{:#}", Config::parse(&text, &[]).unwrap_err());
        assert!(err.contains("unknown key `epoch`: did you mean `epochs`?"), "{err}");
        assert!(err.contains("line"), "error should point at the line: {err}");
    }

    #[test]
    fn eval_section_only_where_the_family_takes_it() {
        let text = format!("{MINIMAL}\n[eval]\nsamples = 100\n");
        let err = format!("{:#}", Config::parse(&text, &[]).unwrap_err());
        assert!(err.contains("`[eval]`") && err.contains("image-classification"), "{err}");
        assert!(Config::parse(MINIMAL, &["eval.samples=100".into()]).is_err());

        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct Generator {
            name: String,
        }
        impl ModelSection for Generator {
            const TAKES_EVAL_SECTION: bool = true;
        }
        let config = ExperimentConfig::<ImageDataSection, Generator>::parse(&text, &[]).unwrap();
        assert_eq!(config.eval_settings().samples, 100);
        let config = ExperimentConfig::<ImageDataSection, Generator>::parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.eval_settings(), EvalSection::default());
    }

    #[test]
    fn overrides_are_typed_and_checked() {
        let sets = ["train.epochs=3".to_string(), "train.optimizer.lr=1e-4".to_string()];
        let c = Config::parse(MINIMAL, &sets).unwrap();
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.optimizer.lr, 1e-4);
        let err = Config::parse(MINIMAL, &["train.epohcs=3".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("did you mean `epochs`"), "{err:#}");
        let err = Config::parse(MINIMAL, &["train.optimizer.kind=adan".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown value `adan`: did you mean `adam`?"), "{err:#}");
        let err = Config::parse(MINIMAL, &["train.epochs=0".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("epochs must be at least 1"));
    }

    #[test]
    fn half_specified_sources_are_rejected() {
        let text = MINIMAL.replace("folder = \"x\"", "images = \"a.gz\"");
        let err = format!("{:#}", Config::parse(&text, &[]).unwrap_err());
        assert!(err.contains("data.train") && err.contains("`labels` is missing"), "{err}");
    }

    #[test]
    fn family_defaults_fill_only_what_the_file_leaves_out() {
        let defaults = ["train.epochs=5", "train.batch_size=64"];
        let c = Config::parse_with_defaults(MINIMAL, &defaults, &[]).unwrap();
        assert_eq!((c.train.epochs, c.train.batch_size), (5, 64));
        let text = format!("{MINIMAL}\n[train]\nepochs = 7\n");
        let c = Config::parse_with_defaults(&text, &defaults, &["train.batch_size=32".into()]).unwrap();
        assert_eq!((c.train.epochs, c.train.batch_size), (7, 32), "the file and --set win over defaults");
    }

    #[test]
    fn text_sources_say_what_is_wrong() {
        type TextConfig = ExperimentConfig<TextDataSection, Model>;
        let parse = |train: &str| {
            let text = format!("task = \"t\"\n[data]\ntrain = {train}\n[model]\nname = \"m\"\n");
            TextConfig::parse(&text, &[]).map_err(|e| format!("{e:#}"))
        };
        let c = parse("{ file = \"r.csv\", text_column = \"review\" }").unwrap();
        assert_eq!(c.data.train.label_column, "label");
        assert_eq!((c.data.tokenizer.vocab_size, c.data.tokenizer.max_len, c.data.dedup), (8000, 128, true));
        assert!(parse("{ file = \"r.xlsx\" }").unwrap_err().contains("expected a .csv, .tsv or .jsonl"));
        assert!(parse("{ per_class = { pos = \"p.txt\" } }").unwrap_err().contains("at least two classes"));
        assert!(parse("{ }").unwrap_err().contains("give `file"));
        assert!(parse("{ file = \"r.csv\", text_colum = \"x\" }").unwrap_err().contains("did you mean `text_column`?"));
    }

    #[test]
    fn schedules() {
        let step = ScheduleConfig { kind: ScheduleKind::Step, step_size: 2, gamma: 0.5, min_lr: 0.0 };
        assert_eq!(step.lr_at(1.0, 1, 10), 1.0);
        assert_eq!(step.lr_at(1.0, 3, 10), 0.5);
        assert_eq!(step.lr_at(1.0, 5, 10), 0.25);
        let cos = ScheduleConfig { kind: ScheduleKind::Cosine, min_lr: 0.1, ..Default::default() };
        assert!((cos.lr_at(1.0, 1, 5) - 1.0).abs() < 1e-12);
        assert!((cos.lr_at(1.0, 5, 5) - 0.1).abs() < 1e-12);
        assert!((cos.lr_at(1.0, 3, 5) - 0.55).abs() < 1e-12);
    }
}
