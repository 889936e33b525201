//! The training loop: epochs, progress, metrics, checkpoints, resume and early stopping, for any
//! [`TrainTask`].

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::task::{MetricKind, Running, TrainTask};
use crate::config::{EarlyStopping, ScheduleConfig, TrainSection};
use crate::data::BatchSource;
use crate::history::{EpochRecord, Monitor, Score, write_metrics};
use crate::reporter::Reporter;
use crate::run_dir::{RunDir, write_atomic};

/// What the driver needs from the config.
#[derive(Debug, Clone)]
pub struct FitPlan {
    pub epochs: usize,
    pub base_lr: f64,
    pub schedule: ScheduleConfig,
    pub early_stopping: Option<EarlyStopping>,
    pub keep_checkpoints: usize,
    pub restore_best: bool,
    /// What early stopping and `restore_best` watch.
    pub monitor: Monitor,
    /// The training device and the run's seed: before each epoch the device's random numbers
    /// (dropout masks, GAN noise) are re-seeded from both and the epoch, so a resumed run draws
    /// exactly what an uninterrupted one would have.
    /// The devices are the training device and any data-parallel replicas (each its own seed).
    pub reseed: Option<(Vec<Device>, u64)>,
    /// The one training device, whose steps then run where it computes
    /// ([`crate::backend::train_on_compute_pool`]); `None` with data-parallel replicas, whose steps
    /// start threads of their own.
    pub step_device: Option<Device>,
}

impl FitPlan {
    pub fn new(t: &TrainSection, train_devices: &[Device], seed: u64) -> Self {
        Self {
            epochs: t.epochs,
            base_lr: t.optimizer.lr,
            schedule: t.schedule.clone(),
            early_stopping: t.early_stopping.clone(),
            keep_checkpoints: t.keep_checkpoints,
            restore_best: t.restore_best,
            monitor: Monitor::ValidLoss,
            reseed: Some((train_devices.to_vec(), seed)),
            step_device: match train_devices {
                [device] => Some(device.clone()),
                _ => None,
            },
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
/// The weights of the best epoch so far, kept for `restore_best`.
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
    reporter: &dyn Reporter,
) -> Result<FitOutcome> {
    let mut stopped_early = false;
    for epoch in history.len() + 1..=plan.epochs {
        if should_stop(&history, plan.early_stopping.as_ref(), &plan.monitor) {
            stopped_early = true;
            break;
        }
        if let Some((devices, seed)) = &plan.reseed {
            for (i, device) in devices.iter().enumerate() {
                device.seed(epoch_seed(*seed, epoch).wrapping_add(i as u64));
            }
        }
        let lr = plan.schedule.lr_at(plan.base_lr, epoch, plan.epochs);
        let steps = train.num_batches();
        let bar = reporter.progress(&format!("epoch {epoch}/{}", plan.epochs), steps);
        let started = Instant::now();
        let mut running = Running::default();
        for (step, batch) in train.batches(epoch).enumerate() {
            running.add(match &plan.step_device {
                Some(device) => task.train_step_on(device, batch, lr),
                None => task.train_step(batch, lr),
            });
            bar.set(step + 1);
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
                bar.message(format!("{}{} {rate:.0}/s", losses.join(" "), percent(so_far.accuracy())));
            }
        }
        bar.finish();
        let train_totals = running.read();
        let train_seconds = started.elapsed().as_secs_f64();
        let valid_totals = task.validate(&mut valid.batches(epoch));
        let mut record = EpochRecord {
            epoch,
            train_loss: train_totals.loss(),
            train_accuracy: train_totals.accuracy(),
            valid_loss: valid_totals.loss(),
            valid_accuracy: valid_totals.accuracy(),
            lr,
            seconds: 0.0,
            samples_per_sec: train_totals.count as f64 / train_seconds,
            losses: Default::default(),
            scores: Default::default(),
        };
        for (prefix, totals) in [("train", &train_totals), ("valid", &valid_totals)] {
            for (name, value) in totals.extra_means() {
                record.losses.insert(format!("{prefix}_{name}"), value);
            }
        }
        for (metric, value) in task.end_epoch(epoch, run)? {
            let name = metric.name.into_owned();
            match metric.kind {
                MetricKind::Loss => {
                    record.losses.insert(name, value);
                }
                MetricKind::Score { higher_is_better } => {
                    record.scores.insert(name, Score { value, higher_is_better });
                }
            }
        }
        record.seconds = started.elapsed().as_secs_f64();
        reporter.info(&epoch_line(&record, plan.epochs));
        let score = plan.monitor.lower_is_better(&record);
        let improved = history.iter().filter_map(|r| plan.monitor.lower_is_better(r)).all(|best| score.is_some_and(|s| s < best));
        history.push(record);
        if plan.restore_best && improved && score.is_some() {
            task.save_weights(&run.file(BEST_WEIGHTS_FILE))?;
        }

        let dir = run.begin_checkpoint(epoch)?;
        task.save_checkpoint(&dir)?;
        write_atomic(&dir.join(STATE_FILE), serde_json::to_string_pretty(&history)?.as_bytes())?;
        run.commit_checkpoint(epoch, plan.keep_checkpoints)?;
        write_metrics(run, &history)?;
    }
    if !stopped_early && should_stop(&history, plan.early_stopping.as_ref(), &plan.monitor) && history.len() < plan.epochs {
        stopped_early = true;
    }
    let mut restored_epoch = None;
    if let (true, Some(best), Some(last)) = (plan.restore_best, plan.monitor.best_epoch(&history), history.last())
        && best != last.epoch
    {
        task.load_weights(&run.file(BEST_WEIGHTS_FILE)).with_context(|| format!("restoring the weights of epoch {best} (train.restore_best)"))?;
        reporter.info(&format!("restored the weights of epoch {best}, the best {}", plan.monitor.describe()));
        restored_epoch = Some(best);
    }
    Ok(FitOutcome { history, stopped_early, restored_epoch })
}

/// `epoch 3/10: train loss 0.41 acc 86.20% | valid loss … | lr … | 5.1s, 546 samples/s`.
fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let losses: String = r.losses.iter().map(|(k, v)| format!(" | {k} {v:.4}")).collect();
    let scores: String = r.scores.iter().map(|(k, s)| format!(" | {k} {:.4}", s.value)).collect();
    format!(
        "epoch {}/{epochs}: train loss {:.4}{} | valid loss {:.4}{}{losses}{scores} | lr {:.2e} | {:.1}s, {:.0} samples/s",
        r.epoch,
        r.train_loss,
        percent(r.train_accuracy),
        r.valid_loss,
        percent(r.valid_accuracy),
        r.lr,
        r.seconds,
        r.samples_per_sec
    )
}

/// Restores the newest checkpoint of `run` into `task`; returns the epochs done so far.
pub fn resume<T: TrainTask>(task: &mut T, run: &RunDir) -> Result<Vec<EpochRecord>> {
    let Some(dir) = run.latest_checkpoint()? else {
        return Ok(Vec::new());
    };
    task.load_checkpoint(&dir).with_context(|| format!("loading checkpoint {}", dir.display()))?;
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).with_context(|| format!("reading {}", dir.join(STATE_FILE).display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", dir.join(STATE_FILE).display()))
}

/// Early stopping, decided from the history alone so it survives a resume.
fn should_stop(history: &[EpochRecord], rule: Option<&EarlyStopping>, monitor: &Monitor) -> bool {
    let Some(rule) = rule else { return false };
    let mut best = f64::INFINITY;
    let mut since_best = 0;
    for value in history.iter().filter_map(|r| monitor.lower_is_better(r)) {
        if value < best - rule.min_delta {
            best = value;
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

#[cfg(test)]
mod tests;
