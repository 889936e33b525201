//! Experiment configuration: TOML files read once, parsed with serde, `--set key=value`
//! overrides and family defaults applied, unknown keys rejected with the nearest valid key.

mod image;
mod overrides;
mod sections;

pub use image::{Augment, DataSource, ImageDataSection, ImageShape, SourceLayout};
pub use sections::{ClassMapSetting, EarlyStopping, OptimizerConfig, OptimizerKind, RunSection, ScheduleConfig, ScheduleKind, TrainSection};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use overrides::{apply_default, apply_override, explain_toml_error};

/// A whole experiment: what to run, on which data, with which model and training settings.
///
/// `D` and `M` are the data and model sections of one family (e.g. [`ImageDataSection`] and
/// the image classifiers' model section); `M::Eval` is its `[eval]` section, if it has one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(serialize = "D: Serialize, M: ModelSection", deserialize = "D: DeserializeOwned, M: ModelSection"))]
pub struct ExperimentConfig<D, M: ModelSection> {
    /// Which model family trains this config, e.g. `image-classification`.
    pub task: String,
    #[serde(default)]
    pub run: RunSection,
    pub data: D,
    pub model: M,
    #[serde(default)]
    pub train: TrainSection,
    /// How a trained model is scored, for families that take such settings (see [`ModelSection`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<M::Eval>,
}

/// What a family's `[model]` section tells the shared config code.
pub trait ModelSection: Serialize + DeserializeOwned {
    /// The family's `[eval]` section; [`NoEval`] for families without one.
    type Eval: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug;
    /// Whether the family takes an `[eval]` section at all.
    const TAKES_EVAL_SECTION: bool = false;
    /// The family's recipe where a file is silent (`key=value`, e.g. `train.epochs=5`), given the
    /// model named by the file or `--set` (`None` when none is).
    fn defaults(_model: Option<&str>) -> &'static [&'static str] {
        &[]
    }
}

/// The `[eval]` section of a family that takes none: whatever is written there is refused
/// after parsing, with a message that says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoEval;

impl Serialize for NoEval {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoEval {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| NoEval)
    }
}

/// A `[data]` section, checked once parsed.
pub trait DataConfig {
    fn check(&self) -> Result<()>;
}

/// A config file, read once: its path, its text, and the task it names.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: String,
    task: String,
}

impl ConfigFile {
    /// Reads `path` and finds its `task`, with errors that name the file and line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::from_text(path, text)
    }

    /// A config whose text is already in memory (`path` names it in errors).
    pub fn from_text(path: &Path, text: String) -> Result<Self> {
        let table: toml::Table = toml::from_str(&text).map_err(explain_toml_error).with_context(|| format!("in config {}", path.display()))?;
        let task = match table.get("task") {
            Some(toml::Value::String(task)) => task.clone(),
            Some(other) => bail!("{}: `task` must be a string, got {other}", path.display()),
            None => bail!("{}: missing `task` (e.g. task = \"image-classification\")", path.display()),
        };
        Ok(Self { path: path.to_path_buf(), text, task })
    }

    /// The `task` key: which family reads this config.
    pub fn task(&self) -> &str {
        &self.task
    }
}

/// What the shared training recipe reads of any family's resolved config.
pub trait Settings {
    fn run(&self) -> &RunSection;
    fn run_mut(&mut self) -> &mut RunSection;
    fn train(&self) -> &TrainSection;
    /// The resolved config, defaults included, as TOML (saved in a new run).
    fn resolved_toml(&self) -> Result<String>;
}

impl<D: DataConfig + Serialize + DeserializeOwned, M: ModelSection> Settings for ExperimentConfig<D, M> {
    fn run(&self) -> &RunSection {
        &self.run
    }

    fn run_mut(&mut self) -> &mut RunSection {
        &mut self.run
    }

    fn train(&self) -> &TrainSection {
        &self.train
    }

    fn resolved_toml(&self) -> Result<String> {
        self.to_toml()
    }
}

impl<D: DataConfig + Serialize + DeserializeOwned, M: ModelSection> ExperimentConfig<D, M> {
    /// Parses a config file with `--set key=value` overrides and the family's defaults, and
    /// checks it; errors name the file.
    pub fn from_file(file: &ConfigFile, overrides: &[String]) -> Result<Self> {
        Self::parse(&file.text, overrides).with_context(|| format!("in config {}", file.path.display()))
    }

    /// Reads and parses a config file; see [`ExperimentConfig::from_file`].
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        Self::from_file(&ConfigFile::read(path)?, overrides)
    }

    /// Parses config text; see [`ExperimentConfig::from_file`].
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        // Straight from the text, so errors point at its lines; through a table when defaults
        // or overrides apply (a section the defaults fill may be missing from the text).
        let straight = toml::from_str::<Self>(text).map_err(explain_toml_error);
        let mut table: toml::Table = toml::from_str(text).map_err(explain_toml_error)?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        let model = table.get("model").and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        let defaults = M::defaults(model.as_deref());
        let config = if overrides.is_empty() && defaults.is_empty() {
            straight?
        } else {
            for item in defaults {
                apply_default(&mut table, item)?;
            }
            match (toml::Value::Table(table).try_into::<Self>(), straight) {
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
    pub fn eval_settings(&self) -> M::Eval {
        self.eval.clone().unwrap_or_default()
    }

    fn check(&self) -> Result<()> {
        if self.eval.is_some() && !M::TAKES_EVAL_SECTION {
            bail!("this config's task `{}` takes no `[eval]` section: remove it", self.task);
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

#[cfg(test)]
mod tests;
