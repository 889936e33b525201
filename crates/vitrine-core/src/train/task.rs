//! What the driver trains: a [`TrainTask`], one step at a time, and the figures each step and
//! each validation pass produce.

use std::borrow::Cow;
use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::run_dir::RunDir;

/// A figure a task reports beside its main loss: what it is called and which way is better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: Cow<'static, str>,
    pub kind: MetricKind,
}

/// Whether a figure is a loss (drawn with the losses; lower is better) or a score of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Loss,
    Score { higher_is_better: bool },
}

impl Metric {
    /// A further loss, e.g. a GAN's generator loss.
    pub const fn loss(name: &'static str) -> Self {
        Self { name: Cow::Borrowed(name), kind: MetricKind::Loss }
    }

    /// A score that is better when higher (accuracy, NDCG).
    pub const fn higher(name: &'static str) -> Self {
        Self { name: Cow::Borrowed(name), kind: MetricKind::Score { higher_is_better: true } }
    }

    /// A score that is better when lower (a Fréchet distance).
    pub const fn lower(name: &'static str) -> Self {
        Self { name: Cow::Borrowed(name), kind: MetricKind::Score { higher_is_better: false } }
    }

    /// A score named at run time (`ndcg@20`), better when higher.
    pub fn higher_named(name: String) -> Self {
        Self { name: Cow::Owned(name), kind: MetricKind::Score { higher_is_better: true } }
    }
}

/// What one training step produced, kept on the device until the driver reads it.
pub struct StepStats {
    /// Loss summed over the batch (detached).
    pub loss_sum: Tensor<1>,
    /// Correct predictions in the batch, for tasks that have them.
    pub correct: Option<Tensor<1, Int>>,
    pub count: usize,
    /// Further losses summed over the batch, e.g. a GAN's generator loss.
    pub extra: Vec<(Metric, Tensor<1>)>,
}

impl StepStats {
    /// Stats with a summed loss only.
    pub fn loss(loss_sum: Tensor<1>, count: usize) -> Self {
        Self { loss_sum, correct: None, count, extra: Vec::new() }
    }
}

/// Totals of a pass over data, read back to the host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassTotals {
    pub loss_sum: f64,
    pub correct: Option<u64>,
    pub count: usize,
    /// Sums of the extra losses, by name.
    pub extra: Vec<(String, f64)>,
}

impl PassTotals {
    /// The extra losses as means per example.
    pub fn extra_means(&self) -> impl Iterator<Item = (&str, f64)> {
        self.extra.iter().map(|(name, sum)| (name.as_str(), sum / self.count.max(1) as f64))
    }

    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    pub fn accuracy(&self) -> Option<f64> {
        self.correct.map(|c| c as f64 / self.count.max(1) as f64)
    }
}

/// A model (or models) the driver can train: one step at a time, validation, checkpoints.
pub trait TrainTask {
    type Batch: Send + 'static;
    /// Whether [`TrainTask::spread_over`] splits batches between devices (`run.devices`).
    const DATA_PARALLEL: bool = false;
    /// Whether a training step gains from running on `flex`'s compute pool
    /// ([`crate::backend::train_on_compute_pool`]): a step of no parallel operation only pays
    /// the hand-over there.
    const STEPS_ON_COMPUTE_POOL: bool = true;
    /// One optimisation step at learning rate `lr`.
    fn train_step(&mut self, batch: Self::Batch, lr: f64) -> StepStats;
    /// [`TrainTask::train_step`] for `device`, on its compute pool where the task's steps gain
    /// from it ([`TrainTask::STEPS_ON_COMPUTE_POOL`]).
    fn train_step_on(&mut self, device: &Device, batch: Self::Batch, lr: f64) -> StepStats {
        match Self::STEPS_ON_COMPUTE_POOL {
            true => crate::backend::train_on_compute_pool(device, || self.train_step(batch, lr)),
            false => self.train_step(batch, lr),
        }
    }
    /// A pass over validation data in inference mode.
    fn validate(&self, batches: &mut dyn Iterator<Item = Self::Batch>) -> PassTotals;
    /// Writes everything needed to continue (weights and optimizer state) into `dir`.
    fn save_checkpoint(&self, dir: &Path) -> Result<()>;
    /// Restores what [`TrainTask::save_checkpoint`] wrote.
    fn load_checkpoint(&mut self, dir: &Path) -> Result<()>;
    /// Writes the weights used for inference.
    fn save_weights(&self, path: &Path) -> Result<()>;
    /// Replaces the model's weights with those [`TrainTask::save_weights`] wrote.
    fn load_weights(&mut self, path: &Path) -> Result<()>;
    /// From now on, splits each training batch between the task's device and `replicas`
    /// (autodiff devices), summing the gradients on its own. Tasks whose
    /// [`TrainTask::DATA_PARALLEL`] is true override it.
    fn spread_over(&mut self, _replicas: Vec<Device>) -> Result<()> {
        anyhow::bail!("this model trains on one device")
    }
    /// Work after each epoch's validation (sample grids, ranking scores); the returned scores
    /// go into the epoch's record.
    fn end_epoch(&mut self, _epoch: usize, _run: &RunDir) -> Result<Vec<(Metric, f64)>> {
        Ok(Vec::new())
    }
}

/// Sums step stats on the device and reads them back only when asked.
#[derive(Default)]
pub(super) struct Running {
    loss: Option<Tensor<1>>,
    correct: Option<Tensor<1, Int>>,
    count: usize,
    extra: Vec<(Metric, Tensor<1>)>,
}

impl Running {
    pub(super) fn add(&mut self, s: StepStats) {
        self.loss = Some(match self.loss.take() {
            Some(l) => l + s.loss_sum,
            None => s.loss_sum,
        });
        if let Some(c) = s.correct {
            self.correct = Some(match self.correct.take() {
                Some(acc) => acc + c,
                None => c,
            });
        }
        self.count += s.count;
        for (metric, value) in s.extra {
            match self.extra.iter_mut().find(|(m, _)| *m == metric) {
                Some((_, sum)) => *sum = sum.clone() + value,
                None => self.extra.push((metric, value)),
            }
        }
    }

    pub(super) fn read(&self) -> PassTotals {
        PassTotals {
            loss_sum: self.loss.clone().map_or(0.0, |l| l.into_scalar::<f32>() as f64),
            correct: self.correct.clone().map(|c| c.into_scalar::<i64>() as u64),
            count: self.count,
            extra: self.extra.iter().map(|(m, v)| (m.name.to_string(), v.clone().into_scalar::<f32>() as f64)).collect(),
        }
    }
}

/// Sums a validation pass of a task's steps; for [`TrainTask::validate`] implementations.
pub fn sum_steps(steps: impl Iterator<Item = StepStats>) -> PassTotals {
    let mut running = Running::default();
    for s in steps {
        running.add(s);
    }
    running.read()
}
