//! What each generator's training task (the autoencoder's, the GAN's) adds to the shared
//! generation recipe of [`crate::training`].

use anyhow::Result;
use burn::prelude::*;
use vitrine_core::data::{ImageBatch, ImageSplits};
use vitrine_core::train::{Built, TrainContext, TrainTask};

use crate::config::GenerationConfig;

/// What each generator's task adds to the shared generation recipe.
pub trait GeneratorTask: TrainTask<Batch = ImageBatch> + Sized {
    /// The model and its optimizer(s) on `train_device`.
    fn build(config: &GenerationConfig, data: &ImageSplits, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self>>;
    /// Held-out figures after training (`test MSE`, `test Fréchet distance`).
    fn evaluate(&self, config: &GenerationConfig, data: &ImageSplits, ctx: &TrainContext) -> Result<Vec<(String, f64)>>;
}
