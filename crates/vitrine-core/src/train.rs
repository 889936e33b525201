//! The training driver: epochs, progress, metrics, checkpoints, resume and early stopping,
//! for any [`TrainTask`] (a classifier, a GAN, ...).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::grad_clipping::GradientClippingConfig;
use serde::{Deserialize, Serialize};

use crate::config::{EarlyStopping, OptimizerConfig, OptimizerKind, ScheduleConfig, TrainSection};
use crate::data::BatchSource;
use crate::plot::{Series, line_chart};
use crate::progress::Progress;
use crate::run_dir::{RunDir, write_atomic};

/// What one training step produced, kept on the device until the driver reads it.
pub struct StepStats {
    /// Loss summed over the batch (detached).
    pub loss_sum: Tensor<1>,
    /// Correct predictions in the batch, for tasks that have them.
    pub correct: Option<Tensor<1, Int>>,
    pub count: usize,
    /// Further losses summed over the batch, e.g. a GAN's generator loss (`g_loss`).
    pub extra: Vec<(&'static str, Tensor<1>)>,
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
    /// One optimisation step at learning rate `lr`.
    fn train_step(&mut self, batch: Self::Batch, lr: f64) -> StepStats;
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
    /// Work after each epoch's validation (sample grids, sample-quality scores); the returned
    /// figures go into the epoch's metrics.
    fn end_epoch(&mut self, _epoch: usize, _run: &RunDir) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }
}

/// Sums step stats on the device and reads them back only when asked.
#[derive(Default)]
struct Running {
    loss: Option<Tensor<1>>,
    correct: Option<Tensor<1, Int>>,
    count: usize,
    extra: Vec<(&'static str, Tensor<1>)>,
}

impl Running {
    fn add(&mut self, s: StepStats) {
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
        for (name, value) in s.extra {
            match self.extra.iter_mut().find(|(n, _)| *n == name) {
                Some((_, sum)) => *sum = sum.clone() + value,
                None => self.extra.push((name, value)),
            }
        }
    }

    fn read(&self) -> PassTotals {
        PassTotals {
            loss_sum: self.loss.clone().map_or(0.0, |l| l.into_scalar::<f32>() as f64),
            correct: self.correct.clone().map(|c| c.into_scalar::<i64>() as u64),
            count: self.count,
            extra: self.extra.iter().map(|(n, v)| (n.to_string(), v.clone().into_scalar::<f32>() as f64)).collect(),
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

/// One row of `metrics.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub valid_loss: f64,
    pub valid_accuracy: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    pub samples_per_sec: f64,
    /// Further figures: extra losses (`train_g_loss`, `valid_g_loss`) and what the task measured
    /// after the epoch (e.g. `frechet`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

/// What the driver needs from the config.
#[derive(Debug, Clone)]
pub struct FitPlan {
    pub epochs: usize,
    pub base_lr: f64,
    pub schedule: ScheduleConfig,
    pub early_stopping: Option<EarlyStopping>,
    pub keep_checkpoints: usize,
    pub restore_best: bool,
    /// The training device and the run's seed: before each epoch the device's random numbers
    /// (dropout masks, GAN noise) are re-seeded from both and the epoch, so a resumed run draws
    /// exactly what an uninterrupted one would have.
    pub reseed: Option<(Device, u64)>,
}

impl FitPlan {
    pub fn new(t: &TrainSection, train_device: &Device, seed: u64) -> Self {
        Self {
            epochs: t.epochs,
            base_lr: t.optimizer.lr,
            schedule: t.schedule.clone(),
            early_stopping: t.early_stopping.clone(),
            keep_checkpoints: t.keep_checkpoints,
            restore_best: t.restore_best,
            reseed: Some((train_device.clone(), seed)),
        }
    }
}

/// The seed of one epoch's random numbers (SplitMix64 of the run's seed and the epoch).
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How training ended.
#[derive(Debug, Clone)]
pub struct FitOutcome {
    pub history: Vec<EpochRecord>,
    pub stopped_early: bool,
    /// The epoch whose weights the model ends with, when `restore_best` chose an earlier one.
    pub restored_epoch: Option<usize>,
}

const STATE_FILE: &str = "state.json";
/// The weights of the epoch with the lowest validation loss so far, kept for `restore_best`.
pub const BEST_WEIGHTS_FILE: &str = "best.bpk";
/// Steps between reads of the running loss (each read waits for the device).
const REFRESH_STEPS: usize = 10;

/// Trains from epoch `history.len() + 1` to `plan.epochs`, writing metrics, curves and a
/// checkpoint every epoch.
pub fn fit<T: TrainTask>(
    task: &mut T,
    train: &dyn BatchSource<Batch = T::Batch>,
    valid: &dyn BatchSource<Batch = T::Batch>,
    plan: &FitPlan,
    run: &RunDir,
    mut history: Vec<EpochRecord>,
    progress: &mut Progress,
) -> Result<FitOutcome> {
    let mut stopped_early = false;
    for epoch in history.len() + 1..=plan.epochs {
        if should_stop(&history, plan.early_stopping.as_ref()) {
            stopped_early = true;
            break;
        }
        if let Some((device, seed)) = &plan.reseed {
            device.seed(epoch_seed(*seed, epoch));
        }
        let lr = plan.schedule.lr_at(plan.base_lr, epoch, plan.epochs);
        let steps = train.num_batches();
        progress.start(&format!("epoch {epoch}/{}", plan.epochs), steps);
        let started = Instant::now();
        let mut running = Running::default();
        for (step, batch) in train.batches(epoch).enumerate() {
            running.add(task.train_step(batch, lr));
            progress.tick(step + 1);
            if (step + 1) % REFRESH_STEPS == 0 || step + 1 == steps {
                let so_far = running.read();
                let losses: Vec<(&str, f64)> = std::iter::once(("loss", so_far.loss())).chain(so_far.extra_means()).collect();
                if let Some((name, value)) = losses.iter().find(|(_, v)| !v.is_finite()) {
                    bail!(
                        "training diverged at epoch {epoch}, step {}: {name} is {value} (try a lower \
                         train.optimizer.lr or train.grad_clip_norm); the last good checkpoint is kept in {}",
                        step + 1,
                        run.root().join("checkpoints").display()
                    );
                }
                let rate = so_far.count as f64 / started.elapsed().as_secs_f64();
                let losses: Vec<String> = losses.iter().map(|(name, v)| format!("{name} {v:.4}")).collect();
                progress.status(format!("{}{} {rate:.0}/s", losses.join(" "), percent(so_far.accuracy())));
            }
        }
        let train_totals = running.read();
        let train_seconds = started.elapsed().as_secs_f64();
        let valid_totals = task.validate(&mut valid.batches(epoch));
        let mut extra = BTreeMap::new();
        for (prefix, totals) in [("train", &train_totals), ("valid", &valid_totals)] {
            extra.extend(totals.extra_means().map(|(name, v)| (format!("{prefix}_{name}"), v)));
        }
        extra.extend(task.end_epoch(epoch, run)?);
        let record = EpochRecord {
            epoch,
            train_loss: train_totals.loss(),
            train_accuracy: train_totals.accuracy(),
            valid_loss: valid_totals.loss(),
            valid_accuracy: valid_totals.accuracy(),
            lr,
            seconds: started.elapsed().as_secs_f64(),
            samples_per_sec: train_totals.count as f64 / train_seconds,
            extra,
        };
        let extra: String = record.extra.iter().map(|(k, v)| format!(" | {k} {v:.4}")).collect();
        progress.finish(&format!(
            "epoch {epoch}/{}: train loss {:.4}{} | valid loss {:.4}{}{extra} | lr {:.2e} | {:.1}s, {:.0} samples/s",
            plan.epochs,
            record.train_loss,
            percent(record.train_accuracy),
            record.valid_loss,
            percent(record.valid_accuracy),
            lr,
            record.seconds,
            record.samples_per_sec
        ));
        let improved = history.iter().all(|r| record.valid_loss < r.valid_loss);
        history.push(record);
        if plan.restore_best && improved {
            task.save_weights(&run.file(BEST_WEIGHTS_FILE))?;
        }

        let dir = run.begin_checkpoint(epoch)?;
        task.save_checkpoint(&dir)?;
        write_atomic(&dir.join(STATE_FILE), serde_json::to_string_pretty(&history)?.as_bytes())?;
        run.commit_checkpoint(epoch, plan.keep_checkpoints)?;
        write_metrics(run, &history)?;
    }
    if !stopped_early && should_stop(&history, plan.early_stopping.as_ref()) && history.len() < plan.epochs {
        stopped_early = true;
    }
    let mut restored_epoch = None;
    let best = history.iter().min_by(|a, b| a.valid_loss.total_cmp(&b.valid_loss)).map(|r| r.epoch);
    if let (true, Some(best), Some(last)) = (plan.restore_best, best, history.last()) {
        if best != last.epoch {
            task.load_weights(&run.file(BEST_WEIGHTS_FILE))
                .with_context(|| format!("restoring the weights of epoch {best} (train.restore_best)"))?;
            progress.finish(&format!("restored the weights of epoch {best}, the lowest validation loss"));
            restored_epoch = Some(best);
        }
    }
    Ok(FitOutcome { history, stopped_early, restored_epoch })
}

/// Restores the newest checkpoint of `run` into `task`; returns the epochs done so far.
pub fn resume<T: TrainTask>(task: &mut T, run: &RunDir) -> Result<Vec<EpochRecord>> {
    let Some(dir) = run.latest_checkpoint()? else {
        return Ok(Vec::new());
    };
    task.load_checkpoint(&dir).with_context(|| format!("loading checkpoint {}", dir.display()))?;
    let text = std::fs::read_to_string(dir.join(STATE_FILE))
        .with_context(|| format!("reading {}", dir.join(STATE_FILE).display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", dir.join(STATE_FILE).display()))
}

/// Early stopping, decided from the history alone so it survives a resume.
fn should_stop(history: &[EpochRecord], rule: Option<&EarlyStopping>) -> bool {
    let Some(rule) = rule else { return false };
    let mut best = f64::INFINITY;
    let mut since_best = 0;
    for r in history {
        if r.valid_loss < best - rule.min_delta {
            best = r.valid_loss;
            since_best = 0;
        } else {
            since_best += 1;
        }
    }
    since_best >= rule.patience.max(1)
}

fn percent(accuracy: Option<f64>) -> String {
    accuracy.map(|a| format!(" acc {:.2}%", 100.0 * a)).unwrap_or_default()
}

/// Rewrites `metrics.csv` and the curves from the whole history.
pub fn write_metrics(run: &RunDir, history: &[EpochRecord]) -> Result<()> {
    let extra_keys = extra_keys(history);
    let mut csv = String::from("epoch,train_loss,train_accuracy,valid_loss,valid_accuracy,lr,seconds,samples_per_sec");
    for key in &extra_keys {
        csv += &format!(",{key}");
    }
    csv.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for r in history {
        let extra: String = extra_keys.iter().map(|k| format!(",{}", opt(r.extra.get(*k).copied()))).collect();
        csv += &format!(
            "{},{:.6},{},{:.6},{},{:e},{:.3},{:.1}{extra}\n",
            r.epoch,
            r.train_loss,
            opt(r.train_accuracy),
            r.valid_loss,
            opt(r.valid_accuracy),
            r.lr,
            r.seconds,
            r.samples_per_sec
        );
    }
    run.write("metrics.csv", csv)?;
    let points = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect()
    };
    let mut losses = vec![
        Series { name: "train", points: points(&|r| Some(r.train_loss)) },
        Series { name: "valid", points: points(&|r| Some(r.valid_loss)) },
    ];
    for key in extra_keys.iter().filter(|k| k.ends_with("loss")) {
        losses.push(Series { name: key, points: points(&|r| r.extra.get(*key).copied()) });
    }
    line_chart(&run.file("loss.png"), "Loss", "loss", &losses)?;
    for key in extra_keys.iter().filter(|k| !k.ends_with("loss")) {
        let series = [Series { name: key, points: points(&|r| r.extra.get(*key).copied()) }];
        line_chart(&run.file(&format!("{key}.png")), key, key, &series)?;
    }
    if history.iter().any(|r| r.train_accuracy.is_some()) {
        line_chart(
            &run.file("accuracy.png"),
            "Accuracy",
            "accuracy",
            &[
                Series { name: "train", points: points(&|r| r.train_accuracy) },
                Series { name: "valid", points: points(&|r| r.valid_accuracy) },
            ],
        )?;
    }
    Ok(())
}

/// The names of the extra figures in `history`, sorted.
pub fn extra_keys(history: &[EpochRecord]) -> Vec<&str> {
    let keys: std::collections::BTreeSet<&str> = history.iter().flat_map(|r| r.extra.keys().map(String::as_str)).collect();
    keys.into_iter().collect()
}

/// Writes a module's weights to `path` atomically.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    crate::run_dir::save_atomic(path, |tmp| module.clone().save_file(tmp).with_context(|| format!("saving weights to {}", path.display())))
}

/// Reads weights from `path` into `module`.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    module.try_load_file(path).with_context(|| format!("loading {}", path.display()))
}

/// Writes an optimizer's state (kept in an `Option` so a step can take it by value).
pub fn save_optimizer(optimizer: &Option<ModuleOptimizer>, path: &Path) -> Result<()> {
    let optimizer = optimizer.as_ref().expect("optimizer present between steps");
    optimizer.save(path).with_context(|| format!("saving optimizer state to {}", path.display()))
}

/// Reads an optimizer's state from `path`; see [`save_optimizer`].
pub fn load_optimizer(optimizer: &mut Option<ModuleOptimizer>, path: &Path) -> Result<()> {
    let state = optimizer.take().expect("optimizer present between steps");
    *optimizer = Some(state.load(path).with_context(|| format!("loading optimizer state from {}", path.display()))?);
    Ok(())
}

/// Builds the configured optimizer, with weight decay and gradient clipping.
pub fn build_optimizer(config: &OptimizerConfig, grad_clip_norm: Option<f32>) -> ModuleOptimizer {
    let clip = grad_clip_norm.map(GradientClippingConfig::Norm);
    let decay = (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32));
    match config.kind {
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(config.beta1 as f32)
            .with_beta_2(config.beta2 as f32)
            .with_epsilon(config.epsilon as f32)
            .with_weight_decay(decay)
            .with_grad_clipping(clip)
            .init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_beta_1(config.beta1 as f32)
            .with_beta_2(config.beta2 as f32)
            .with_epsilon(config.epsilon as f32)
            .with_weight_decay(config.weight_decay as f32)
            .with_grad_clipping(clip)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((config.momentum > 0.0).then(|| {
                MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0)
            }))
            .with_weight_decay(decay)
            .with_gradient_clipping(clip)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            extra: BTreeMap::new(),
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
            stats.extra = vec![("g_loss", Tensor::from_floats([g_loss], &device))];
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
                reseed: None,
            };
            let outcome = fit(&mut task, &OneBatch, &OneBatch, &plan, &run, Vec::new(), &mut Progress::new()).unwrap();
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
            reseed: None,
        };
        let err = fit(&mut task, &OneBatch, &OneBatch, &plan, &run, Vec::new(), &mut Progress::new()).unwrap_err().to_string();
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
        let plan = |epochs| FitPlan {
            epochs,
            base_lr: 1e-3,
            schedule: ScheduleConfig::default(),
            early_stopping: None,
            keep_checkpoints: 1,
            restore_best: false,
            reseed: Some((Device::flex(), 7)),
        };
        let tmp = tempfile::tempdir().unwrap();
        let straight_run = RunDir::create(&tmp.path().join("straight")).unwrap();
        let mut straight = Draws { seen: Vec::new() };
        fit(&mut straight, &OneBatch, &OneBatch, &plan(3), &straight_run, Vec::new(), &mut Progress::new()).unwrap();

        let resumed_run = RunDir::create(&tmp.path().join("resumed")).unwrap();
        let mut first = Draws { seen: Vec::new() };
        let outcome = fit(&mut first, &OneBatch, &OneBatch, &plan(1), &resumed_run, Vec::new(), &mut Progress::new()).unwrap();
        // Something else draws in between, as a crash and restart would.
        let _: Tensor<1> = Tensor::random([100], burn::tensor::Distribution::Default, &Device::flex());
        let mut rest = Draws { seen: Vec::new() };
        fit(&mut rest, &OneBatch, &OneBatch, &plan(3), &resumed_run, outcome.history, &mut Progress::new()).unwrap();

        assert_eq!(straight.seen.len(), 3);
        assert_eq!([first.seen, rest.seen].concat(), straight.seen);
        assert_ne!(straight.seen[0], straight.seen[1], "each epoch draws anew");
    }

    #[test]
    fn early_stopping_counts_epochs_without_improvement() {
        let rule = EarlyStopping { patience: 2, min_delta: 0.01 };
        let h: Vec<_> = [1.0, 0.8, 0.795, 0.81].iter().enumerate().map(|(i, &l)| record(i + 1, l)).collect();
        assert!(!should_stop(&h[..3], Some(&rule)));
        assert!(should_stop(&h, Some(&rule)), "0.795 is within min_delta of 0.8, so two epochs without progress");
        assert!(!should_stop(&h, None));
    }
}
