//! The training recipe every family follows, written once: data → run folder → device and
//! seed → model → resume → fit → final weights → held-out scores → report. A family supplies
//! only what differs, as a [`Recipe`].

use anyhow::{Result, bail};
use burn::prelude::*;

use super::fit::{FitOutcome, FitPlan, fit, resume};
use super::task::TrainTask;
use crate::backend::ComputeDevice;
use crate::config::Settings;
use crate::data::BatchSource;
use crate::history::Monitor;
use crate::report::{ClassificationScores, DataSummary, RunReport};
use crate::reporter::Reporter;
use crate::run_dir::{RunDir, WEIGHTS_FILE};

/// Where and how a run trains: its folder, its device, whether it continues, who watches.
#[derive(Clone, Copy)]
pub struct TrainContext<'a> {
    pub run: &'a RunDir,
    pub compute: &'a ComputeDevice,
    /// Continue from the run's last checkpoint instead of starting afresh.
    pub resuming: bool,
    pub reporter: &'a dyn Reporter,
}

/// A built model ready to train, and how to name it in the log and report.
pub struct Built<T> {
    pub task: T,
    /// The model's name, with its options (`conv-ae, variational`).
    pub description: String,
    pub parameters: usize,
}

/// Batches of one pass, as the driver takes them.
pub type Batches<B> = Box<dyn BatchSource<Batch = B>>;

/// Scores on held-out data after training.
#[derive(Debug, Clone, Default)]
pub struct HeldOut {
    /// A classifier's test scores.
    pub test: Option<ClassificationScores>,
    /// Other models' held-out figures, e.g. `("test MSE", 0.008)` or `("test NDCG@10", 0.31)`.
    pub figures: Vec<(String, f64)>,
    /// Images of the run folder to show in the report: (caption, file name).
    pub images: Vec<(String, String)>,
}

/// What one family does its own way when training; [`train`] does the rest.
pub trait Recipe {
    /// The family's data once loaded (and, for a new run, prepared).
    type Data;
    /// The model with its optimizer(s), as the driver trains it.
    type Task: TrainTask;

    /// The `task` value of the family's configs, for the report.
    fn task_name(&self) -> &'static str;
    /// The resolved config: its `[run]` and `[train]` sections, and the TOML a new run saves.
    fn settings(&self) -> &dyn Settings;

    /// Loads and splits the data, saying what was skipped.
    fn load_data(&self, ctx: &TrainContext) -> Result<Self::Data>;
    /// Class names in label order, recorded in the run (empty for models without classes).
    fn classes(&self, data: &Self::Data) -> Vec<String>;
    /// Work a new run saves beside its config (a tokenizer, the split) and a resumed run
    /// reads back.
    fn prepare(&self, _data: &mut Self::Data, _ctx: &TrainContext) -> Result<()> {
        Ok(())
    }
    /// Builds the model and its optimizer(s) on `train_device` (seeded with the run's seed).
    fn build(&self, data: &Self::Data, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self::Task>>;
    /// Training batches on `train_device`, validation batches on the plain `device`.
    fn batches(
        &self,
        data: &Self::Data,
        train_device: &Device,
        device: &Device,
    ) -> Result<(Batches<<Self::Task as TrainTask>::Batch>, Batches<<Self::Task as TrainTask>::Batch>)>;
    /// What early stopping and `restore_best` watch.
    fn monitor(&self) -> Monitor {
        Monitor::ValidLoss
    }
    /// Scores the trained model on held-out data; `outcome` says how training went.
    fn evaluate(&self, task: &Self::Task, data: &Self::Data, outcome: &FitOutcome, ctx: &TrainContext) -> Result<HeldOut>;
    /// The sizes of the data, for the report.
    fn data_summary(&self, data: &Self::Data) -> DataSummary;
}

/// Trains a family's recipe into `ctx.run`, continuing from its last checkpoint when resuming.
pub fn train<R: Recipe>(recipe: &R, ctx: &TrainContext) -> Result<RunReport> {
    let (run, reporter) = (ctx.run, ctx.reporter);
    if !ctx.compute.replicas.is_empty() && !R::Task::DATA_PARALLEL {
        bail!(
            "run.devices names {} devices, but {} models train on one device: data-parallel training covers \
             the classifiers (image and review tasks) so far; name one device or use `backend`",
            ctx.compute.replicas.len() + 1,
            recipe.task_name()
        );
    }
    let mut data = recipe.load_data(ctx)?;
    run.record_start(&recipe.settings().resolved_toml()?, &recipe.classes(&data), ctx.resuming)?;
    recipe.prepare(&mut data, ctx)?;

    let device = ctx.compute.device.clone();
    let train_device = device.clone().autodiff();
    let replicas: Vec<Device> = ctx.compute.replicas.iter().map(|d| d.clone().autodiff()).collect();
    let seed = recipe.settings().run().seed;
    train_device.seed(seed);
    let Built { mut task, description, parameters } = recipe.build(&data, &train_device, ctx)?;
    if !replicas.is_empty() {
        task.spread_over(replicas.clone())?;
    }
    reporter.info(&format!("model: {description} ({parameters} parameters)"));
    let history = if ctx.resuming { resume(&mut task, run)? } else { Vec::new() };
    if ctx.resuming {
        reporter.info(&format!("resuming {} after epoch {}", run.root().display(), history.len()));
    }
    let (train_batches, valid_batches) = recipe.batches(&data, &train_device, &device)?;
    let settings = recipe.settings().train();
    let plan = FitPlan { monitor: recipe.monitor(), ..FitPlan::new(settings, &[vec![train_device.clone()], replicas].concat(), seed) };
    let outcome: FitOutcome = fit(&mut task, train_batches.as_ref(), valid_batches.as_ref(), &plan, run, history, reporter)?;
    task.save_weights(&run.file(WEIGHTS_FILE))?;
    if outcome.stopped_early {
        let patience = settings.early_stopping.as_ref().map_or(0, |e| e.patience);
        reporter.info(&format!("early stopping: no better {} for {patience} epochs", plan.monitor.describe()));
    }

    let held_out = recipe.evaluate(&task, &data, &outcome, ctx)?;
    let report = RunReport {
        task: recipe.task_name().into(),
        model: description,
        parameters,
        device: ctx.compute.description.clone(),
        data: recipe.data_summary(&data),
        train_seconds: outcome.history.iter().map(|r| r.seconds).sum(),
        epochs: outcome.history,
        stopped_early: outcome.stopped_early,
        restored_epoch: outcome.restored_epoch,
        selected_by: plan.monitor.describe(),
        test: held_out.test,
        held_out: held_out.figures,
        figures: held_out.images,
    };
    report.write(run)?;
    reporter.info(&format!("run saved in {}", run.root().display()));
    Ok(report)
}
