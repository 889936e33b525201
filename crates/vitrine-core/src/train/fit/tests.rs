//! The driver on scripted tasks: best-epoch restore, divergence, resumed random draws, early stopping.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::{EarlyStopping, ScheduleConfig};
use crate::reporter::Silent;
use crate::train::{Metric, PassTotals, StepStats};

fn record(epoch: usize, valid_loss: f64) -> EpochRecord {
    EpochRecord {
        epoch,
        train_loss: 1.0,
        train_accuracy: None,
        valid_loss,
        valid_accuracy: None,
        lr: 1e-3,
        seconds: 1.0,
        samples_per_sec: 1.0,
        losses: BTreeMap::new(),
        scores: BTreeMap::new(),
    }
}

/// A task whose "weights" are the number of epochs trained, with scripted validation losses.
struct Scripted {
    weights: usize,
    valid_losses: Vec<f64>,
    /// The step (counting from 1) whose extra loss is NaN.
    nan_at: Option<usize>,
}

impl TrainTask for Scripted {
    type Batch = ();
    fn train_step(&mut self, _: (), _lr: f64) -> StepStats {
        self.weights += 1;
        let device = Device::flex();
        let mut stats = StepStats::loss(Tensor::from_floats([1.0], &device), 1);
        let g_loss = if self.nan_at == Some(self.weights) { f32::NAN } else { 0.5 };
        stats.extra = vec![(Metric::loss("g_loss"), Tensor::from_floats([g_loss], &device))];
        stats
    }
    fn validate(&self, _: &mut dyn Iterator<Item = ()>) -> PassTotals {
        PassTotals { loss_sum: self.valid_losses[self.weights], correct: None, count: 1, extra: Vec::new() }
    }
    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_weights(&dir.join("w"))
    }
    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.load_weights(&dir.join("w"))
    }
    fn save_weights(&self, path: &Path) -> Result<()> {
        Ok(std::fs::write(path, self.weights.to_string())?)
    }
    fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.weights = std::fs::read_to_string(path)?.parse()?;
        Ok(())
    }
}

/// One batch per epoch; each step is one more epoch of "training".
struct OneBatch;
impl BatchSource for OneBatch {
    type Batch = ();
    fn len(&self) -> usize {
        1
    }
    fn num_batches(&self) -> usize {
        1
    }
    fn batches(&self, _epoch: usize) -> Box<dyn Iterator<Item = ()> + '_> {
        Box::new(std::iter::once(()))
    }
}

#[test]
fn restore_best_ends_with_the_lowest_validation_loss() {
    for (restore_best, expected) in [(true, 2), (false, 4)] {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(&tmp.path().join("run")).unwrap();
        // valid_losses[w] is the loss after w epochs: best after epoch 2.
        let mut task = Scripted { weights: 0, valid_losses: vec![9.0, 0.5, 0.3, 0.4, 0.35], nan_at: None };
        let plan = FitPlan {
            epochs: 4,
            base_lr: 1e-3,
            schedule: ScheduleConfig::default(),
            early_stopping: None,
            keep_checkpoints: 1,
            restore_best,
            monitor: Monitor::ValidLoss,
            reseed: None,
            step_device: None,
        };
        let outcome = fit(&mut task, &OneBatch, &OneBatch, &plan, &run, Vec::new(), &Silent).unwrap();
        assert_eq!(outcome.history.len(), 4);
        assert_eq!(task.weights, expected, "restore_best = {restore_best}");
        assert_eq!(outcome.restored_epoch, restore_best.then_some(2));
    }
}

#[test]
fn divergence_stops_with_the_epoch_and_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::create(&tmp.path().join("run")).unwrap();
    let mut task = Scripted { weights: 0, valid_losses: vec![1.0; 5], nan_at: Some(3) };
    let plan = FitPlan {
        epochs: 4,
        base_lr: 1e-3,
        schedule: ScheduleConfig::default(),
        early_stopping: None,
        keep_checkpoints: 4,
        restore_best: false,
        monitor: Monitor::ValidLoss,
        reseed: None,
        step_device: None,
    };
    let err = fit(&mut task, &OneBatch, &OneBatch, &plan, &run, Vec::new(), &Silent).unwrap_err().to_string();
    assert!(err.contains("diverged at epoch 3, step 1: g_loss is NaN"), "{err}");
    assert!(run.latest_checkpoint().unwrap().unwrap().ends_with("epoch-2"));
    let metrics = run.read_to_string("metrics.csv").unwrap();
    assert!(metrics.starts_with("epoch,") && metrics.lines().next().unwrap().ends_with(",train_g_loss"), "{metrics}");
    assert_eq!(metrics.lines().count(), 3, "a header and epochs 1 and 2:\n{metrics}");
}

/// Records one random draw of the device per step, like a dropout mask or GAN noise.
struct Draws {
    seen: Vec<f32>,
}

impl TrainTask for Draws {
    type Batch = ();
    fn train_step(&mut self, _: (), _lr: f64) -> StepStats {
        let draw: Tensor<1> = Tensor::random([1], burn::tensor::Distribution::Default, &Device::flex());
        self.seen.push(draw.into_data().try_to_vec::<f32>().unwrap()[0]);
        StepStats::loss(Tensor::from_floats([1.0], &Device::flex()), 1)
    }
    fn validate(&self, _: &mut dyn Iterator<Item = ()>) -> PassTotals {
        PassTotals { loss_sum: 1.0, correct: None, count: 1, extra: Vec::new() }
    }
    fn save_checkpoint(&self, _: &Path) -> Result<()> {
        Ok(())
    }
    fn load_checkpoint(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }
    fn save_weights(&self, _: &Path) -> Result<()> {
        Ok(())
    }
    fn load_weights(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_resumed_run_draws_the_random_numbers_of_an_uninterrupted_one() {
    let _seeded = crate::backend::seeded_draws();
    let plan = |epochs| FitPlan {
        epochs,
        base_lr: 1e-3,
        schedule: ScheduleConfig::default(),
        early_stopping: None,
        keep_checkpoints: 1,
        restore_best: false,
        monitor: Monitor::ValidLoss,
        reseed: Some((vec![Device::flex()], 7)),
        // Its steps on the compute pool, as `vitrine train` runs them on flex.
        step_device: Some(Device::flex()),
    };
    let tmp = tempfile::tempdir().unwrap();
    let straight_run = RunDir::create(&tmp.path().join("straight")).unwrap();
    let mut straight = Draws { seen: Vec::new() };
    fit(&mut straight, &OneBatch, &OneBatch, &plan(3), &straight_run, Vec::new(), &Silent).unwrap();

    let resumed_run = RunDir::create(&tmp.path().join("resumed")).unwrap();
    let mut first = Draws { seen: Vec::new() };
    let outcome = fit(&mut first, &OneBatch, &OneBatch, &plan(1), &resumed_run, Vec::new(), &Silent).unwrap();
    // Something else draws in between, as a crash and restart would.
    let _: Tensor<1> = Tensor::random([100], burn::tensor::Distribution::Default, &Device::flex());
    let mut rest = Draws { seen: Vec::new() };
    fit(&mut rest, &OneBatch, &OneBatch, &plan(3), &resumed_run, outcome.history, &Silent).unwrap();

    assert_eq!(straight.seen.len(), 3);
    assert_eq!([first.seen, rest.seen].concat(), straight.seen);
    assert_ne!(straight.seen[0], straight.seen[1], "each epoch draws anew");
}

#[test]
fn early_stopping_counts_epochs_without_improvement() {
    let rule = EarlyStopping { patience: 2, min_delta: 0.01 };
    let h: Vec<_> = [1.0, 0.8, 0.795, 0.81].iter().enumerate().map(|(i, &l)| record(i + 1, l)).collect();
    assert!(!should_stop(&h[..3], Some(&rule), &Monitor::ValidLoss));
    assert!(should_stop(&h, Some(&rule), &Monitor::ValidLoss), "0.795 is within min_delta of 0.8, so two epochs without progress");
    assert!(!should_stop(&h, None, &Monitor::ValidLoss));
}

/// Reports a score after each epoch: `scores[w]` after `w` epochs of training.
struct Scored {
    inner: Scripted,
    scores: Vec<f64>,
}

impl TrainTask for Scored {
    type Batch = ();
    fn train_step(&mut self, batch: (), lr: f64) -> StepStats {
        self.inner.train_step(batch, lr)
    }
    fn validate(&self, batches: &mut dyn Iterator<Item = ()>) -> PassTotals {
        self.inner.validate(batches)
    }
    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.inner.save_checkpoint(dir)
    }
    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.inner.load_checkpoint(dir)
    }
    fn save_weights(&self, path: &Path) -> Result<()> {
        self.inner.save_weights(path)
    }
    fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.inner.load_weights(path)
    }
    fn end_epoch(&mut self, _: usize, _: &RunDir) -> Result<Vec<(Metric, f64)>> {
        Ok(vec![(Metric::higher("mrr"), self.scores[self.inner.weights])])
    }
}

#[test]
fn a_monitored_score_picks_the_best_epoch_and_stops_early() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::create(&tmp.path().join("run")).unwrap();
    // The validation loss keeps falling, but the score peaks after epoch 2: the score decides.
    let inner = Scripted { weights: 0, valid_losses: vec![9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5], nan_at: None };
    let mut task = Scored { inner, scores: vec![0.0, 0.2, 0.4, 0.3, 0.35, 0.1, 0.1] };
    let plan = FitPlan {
        epochs: 6,
        base_lr: 1e-3,
        schedule: ScheduleConfig::default(),
        early_stopping: Some(EarlyStopping { patience: 2, min_delta: 0.0 }),
        keep_checkpoints: 1,
        restore_best: true,
        monitor: Monitor::Score("mrr".into()),
        reseed: None,
        step_device: None,
    };
    let outcome = fit(&mut task, &OneBatch, &OneBatch, &plan, &run, Vec::new(), &Silent).unwrap();
    assert_eq!(outcome.history.len(), 4, "two epochs without a better score, then stop");
    assert!(outcome.stopped_early);
    assert_eq!((outcome.restored_epoch, task.inner.weights), (Some(2), 2));
    let metrics = run.read_to_string("metrics.csv").unwrap();
    assert!(metrics.lines().next().unwrap().ends_with(",mrr") && run.file("mrr.png").is_file(), "{metrics}");
}
