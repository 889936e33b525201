//! The one extension point: a model family. Each family crate implements [`Family`] once, and
//! the `vitrine` binary lists the families in one registry; every command reaches a family only
//! through these traits. Adding a family is a crate and a line in that list.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::{Arg, ArgMatches};

use crate::backend::ComputeDevice;
use crate::bench::{BenchResult, Timing};
use crate::config::{ConfigFile, RunSection, Settings};
use crate::data::ClassMap;
use crate::export::WeightsFormat;
use crate::report::RunReport;
use crate::reporter::Reporter;
use crate::run_dir::RunDir;
use crate::train::TrainContext;

/// A model family: the configs of one task, how they train, and what a trained run can do.
pub trait Family: Sync {
    /// The `task` value of its configs, e.g. `image-classification`.
    fn task(&self) -> &'static str;
    /// The models it builds, by the names configs and `vitrine bench --model` use.
    fn models(&self) -> Vec<&'static str>;
    /// Parses and checks one of its configs with `--set` overrides, once.
    fn resolve(&self, file: &ConfigFile, overrides: &[String]) -> Result<Box<dyn Experiment>>;
    /// Opens a finished run of this family (`config` is its saved config) for evaluation,
    /// prediction, export and its own commands.
    fn open(&self, run: RunDir, config: &ConfigFile) -> Result<Box<dyn TrainedRun>>;
    /// Measures training and inference throughput of one of its models.
    fn bench(&self, model: &str, request: &BenchRequest) -> Result<BenchResult>;
    /// Flags the family adds to `vitrine eval` (read back from the matches it is given).
    fn eval_args(&self) -> Vec<Arg> {
        Vec::new()
    }
    /// Flags the family adds to `vitrine predict`.
    fn predict_args(&self) -> Vec<Arg> {
        Vec::new()
    }
    /// Flags the family adds to `vitrine bench`.
    fn bench_args(&self) -> Vec<Arg> {
        Vec::new()
    }
    /// Commands of its own (`generate`, `recommend`, ...), each applied to one of its runs: the
    /// binary adds the run argument and calls [`TrainedRun::command`] with the matches.
    fn commands(&self) -> Vec<clap::Command> {
        Vec::new()
    }
}

/// A config resolved by its family, ready to train.
pub trait Experiment {
    /// The resolved config, every default filled in, as TOML.
    fn to_toml(&self) -> Result<String>;
    /// The `[run]` section, for the command line to apply `--strict` and read the backend.
    fn run_section_mut(&mut self) -> &mut RunSection;
    /// Trains into `ctx.run` (continuing it when `ctx.resuming`).
    fn train(&self, ctx: &TrainContext) -> Result<RunReport>;
}

/// A family's resolved config with the function that trains it: every family's [`Experiment`].
pub struct Configured<C: Settings> {
    pub config: C,
    pub train: fn(&C, &TrainContext) -> Result<RunReport>,
}

impl<C: Settings> Experiment for Configured<C> {
    fn to_toml(&self) -> Result<String> {
        self.config.resolved_toml()
    }

    fn run_section_mut(&mut self) -> &mut RunSection {
        self.config.run_mut()
    }

    fn train(&self, ctx: &TrainContext) -> Result<RunReport> {
        (self.train)(&self.config, ctx)
    }
}

/// What a command on a trained run needs besides its arguments.
#[derive(Clone, Copy)]
pub struct UseContext<'a> {
    pub compute: &'a ComputeDevice,
    pub reporter: &'a dyn Reporter,
    /// Fail on the first unreadable input instead of skipping it.
    pub strict: bool,
    /// Names in the data (folders, labels) for the run's classes, from `--class-map`.
    pub class_map: &'a ClassMap,
}

impl UseContext<'_> {
    pub fn device(&self) -> &Device {
        &self.compute.device
    }
}

/// What a command found, for people (`text`) and machines (`json`, printed with `--json`).
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub json: serde_json::Value,
}

impl Output {
    /// The same value as text and as JSON.
    pub fn of<T: serde::Serialize>(text: String, value: &T) -> Result<Self> {
        Ok(Self { text, json: serde_json::to_value(value)? })
    }
}

/// A finished run of some family.
pub trait TrainedRun {
    /// The run's folder.
    fn run(&self) -> &RunDir;
    /// The run's `[run]` section (its backend, its strictness).
    fn run_section(&self) -> &RunSection;
    /// Scores the run on held-out data given on the command line.
    fn evaluate(&self, data: &[PathBuf], args: &ArgMatches, ctx: &UseContext) -> Result<Output>;
    /// Predicts for the inputs and flags given on the command line.
    fn predict(&self, inputs: &[PathBuf], args: &ArgMatches, ctx: &UseContext) -> Result<Output>;
    /// Writes the run's weights in `format` to `out`.
    fn export(&self, format: WeightsFormat, out: &Path, device: &Device) -> Result<()>;
    /// One of the family's own commands (see [`Family::commands`]).
    fn command(&self, name: &str, _args: &ArgMatches, _ctx: &UseContext) -> Result<Output> {
        bail!("`{name}` does not apply to {}", self.run().root().display())
    }
}

/// What `vitrine bench` asks of one model.
pub struct BenchRequest<'a> {
    pub compute: &'a ComputeDevice,
    /// Examples per step; `None` for the model's reference batch size.
    pub batch_size: Option<usize>,
    pub timing: Timing,
    /// The family's own bench flags (see [`Family::bench_args`]).
    pub args: &'a ArgMatches,
}

/// The family whose configs name `task`, or an error listing the tasks this build knows.
pub fn family_of_task<'a>(families: &[&'a dyn Family], task: &str, source: &Path) -> Result<&'a dyn Family> {
    match families.iter().find(|f| f.task() == task) {
        Some(family) => Ok(*family),
        None => {
            let known: Vec<&str> = families.iter().map(|f| f.task()).collect();
            bail!("{}: unknown task `{task}`; this build supports: {}", source.display(), known.join(", "))
        }
    }
}

/// Reading the flags of [`ArgMatches`] that a family declared, and the flags several families share.
pub mod args {
    use std::path::PathBuf;

    use clap::{Arg, ArgAction, ArgMatches, value_parser};

    /// Whether a flag was given (false when the command has no such flag).
    pub fn flag(matches: &ArgMatches, id: &str) -> bool {
        matches.try_get_one::<bool>(id).ok().flatten().copied().unwrap_or(false)
    }

    /// The value of an option, when given (or defaulted) and declared.
    pub fn value<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Option<T> {
        matches.try_get_one::<T>(id).ok().flatten().cloned()
    }

    /// Every value of a repeatable option.
    pub fn values<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Vec<T> {
        matches.try_get_many::<T>(id).ok().flatten().map(|v| v.cloned().collect()).unwrap_or_default()
    }

    /// A count where 0 means nothing (texts a batch, tokens a text, pixels): refused by the
    /// parser with a clear error, not met later by a tensor operation that panics.
    pub fn at_least_one(text: &str) -> Result<usize, String> {
        match text.parse::<usize>() {
            Ok(count) if count >= 1 => Ok(count),
            _ => Err(format!("`{text}` is not a whole number of at least 1")),
        }
    }

    /// A number of seconds, positive and finite (`Duration::from_secs_f64` panics on the others).
    pub fn positive_seconds(text: &str) -> Result<f64, String> {
        match text.parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
            _ => Err(format!("`{text}` is not a positive number of seconds")),
        }
    }

    /// `--confusion-png FILE`: where a classifier's evaluation draws its confusion matrix.
    pub fn confusion_png() -> Arg {
        Arg::new("confusion_png")
            .long("confusion-png")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .help("Classifiers: where to draw the confusion matrix [default: <run>/eval-confusion.png]")
    }

    /// `--mirror`: test-time averaging of each image with its mirror image.
    pub fn mirror() -> Arg {
        Arg::new("mirror")
            .long("mirror")
            .action(ArgAction::SetTrue)
            .help("Image classifiers: average each image's prediction with its mirror image's (test-time augmentation)")
    }

    /// `--seed N`: the seed of anything a command draws at random.
    pub fn seed() -> Arg {
        Arg::new("seed").long("seed").value_parser(value_parser!(u64)).default_value("7").help("Seed of what the command draws at random (generated samples)")
    }
}
