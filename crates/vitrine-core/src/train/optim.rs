//! Optimizers from the config, and saving and loading weights and optimizer state.

use std::path::Path;

use anyhow::{Context, Result};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};

use crate::config::{OptimizerConfig, OptimizerKind};

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
            .with_momentum((config.momentum > 0.0).then(|| MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0)))
            .with_weight_decay(decay)
            .with_gradient_clipping(clip)
            .init(),
    }
}
