//! The sections every family shares: `[run]` and `[train]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendChoice;

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
    /// Where the model runs: `auto`, `flex`, `ndarray`, `wgpu` or `cuda`.
    pub backend: BackendChoice,
    /// Several devices for data-parallel training instead of `backend`'s one, e.g.
    /// `["cuda:0", "cuda:1"]`: each batch is split between them, the gradients summed on the
    /// first, which steps the optimizer and validates. Empty: `backend` alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Fail on the first unreadable input file instead of skipping it.
    pub strict: bool,
}

impl Default for RunSection {
    fn default() -> Self {
        Self { seed: 42, split_seed: None, backend: BackendChoice::Auto, devices: Vec::new(), strict: false }
    }
}

impl RunSection {
    /// The seed that draws held-out examples.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }
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
        Self { kind: OptimizerKind::Adam, lr: 1e-3, weight_decay: 0.0, momentum: 0.9, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
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

/// `data.class_map`: a TOML file of `"name in the data" = "run class"` lines, or that table
/// inline, for class names in the data that differ from the run's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ClassMapSetting {
    File(PathBuf),
    Inline(BTreeMap<String, String>),
}
