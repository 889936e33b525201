//! The generators' data: the configured image splits, decoded once, in each model's pixel range.

use anyhow::{Result, bail};
use burn::prelude::*;
use vitrine_core::data::{ImageBatches, ImageSet, ImageSplits, PixelRange, load_image_splits};
use vitrine_core::reporter::Reporter;

use crate::config::{Architecture, GenerationConfig};

/// Loads the images; a conditional GAN needs at least two classes.
pub fn load_data(config: &GenerationConfig, reporter: &dyn Reporter) -> Result<ImageSplits> {
    let data = load_image_splits(&config.data, config.run.split_seed(), config.run.strict, reporter)?;
    if config.model.conditional && data.train.classes.len() < 2 {
        bail!("model.conditional needs labelled data with at least 2 classes; data.train has {}", data.train.classes.len());
    }
    reporter.info(&format!("data: {}", data.describe()));
    Ok(data)
}

/// The pixel range each model works in.
pub fn pixel_range(arch: Architecture) -> PixelRange {
    match arch {
        Architecture::ConvAe => PixelRange::Unit,
        Architecture::Dcgan => PixelRange::Symmetric,
    }
}

/// Shuffled, augmented training batches on `train_device` and in-order validation batches on
/// `device`, in the model's pixel range.
pub fn batches(config: &GenerationConfig, data: &ImageSplits, train_device: &Device, device: &Device) -> (ImageBatches, ImageBatches) {
    let (bs, range) = (config.train.batch_size, pixel_range(config.model.name));
    let train = ImageBatches::shuffled(data.train.clone(), bs, config.run.seed, config.data.augment, range, train_device.clone());
    (train, ImageBatches::ordered(data.valid.clone(), bs, range, device.clone()))
}

/// The held-out images scored at the end (the test split when there is one) and their name.
pub fn held_out(data: &ImageSplits) -> (&'static str, std::sync::Arc<ImageSet>) {
    match &data.test {
        Some(test) => ("test", test.clone()),
        None => ("valid", data.valid.clone()),
    }
}
