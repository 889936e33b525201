//! The image classifiers' data: the configured splits, decoded once, and their batches.

use anyhow::{Result, bail};
use burn::prelude::*;
use vitrine_core::data::{ImageBatches, ImageSplits, PixelRange, load_image_splits};
use vitrine_core::reporter::Reporter;

use crate::config::ImageConfig;

/// Batch size for evaluation and prediction, where no gradient is kept.
pub const INFERENCE_BATCH: usize = 256;

/// Loads train / valid / test as configured; validation is split off `train` when not given.
pub fn load_data(config: &ImageConfig, reporter: &dyn Reporter) -> Result<ImageSplits> {
    let data = load_image_splits(&config.data, config.run.split_seed(), config.run.strict, reporter)?;
    if data.train.classes.len() < 2 {
        bail!("data.train has {} class(es); a classifier needs at least 2", data.train.classes.len());
    }
    reporter.info(&format!("data: {}", data.describe()));
    Ok(data)
}

/// Shuffled, augmented training batches on `train_device` and in-order validation batches on
/// `device`, pixels in [0, 1].
pub fn batches(config: &ImageConfig, data: &ImageSplits, train_device: &Device, device: &Device) -> (ImageBatches, ImageBatches) {
    let bs = config.train.batch_size;
    let seed = config.run.seed;
    let train = ImageBatches::shuffled(data.train.clone(), bs, seed, config.data.augment, PixelRange::Unit, train_device.clone());
    (train, ImageBatches::ordered(data.valid.clone(), bs, PixelRange::Unit, device.clone()))
}
