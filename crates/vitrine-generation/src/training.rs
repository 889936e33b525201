//! Training a generator: this family's part of the shared recipe. Both models read the same
//! images; each supplies its own task ([`crate::autoencoder`], [`crate::gan`]) through
//! [`GeneratorTask`].

use std::marker::PhantomData;

use anyhow::Result;
use burn::prelude::*;
use vitrine_core::config::{RunSection, TrainSection};
use vitrine_core::data::{ImageBatch, ImageSplits};
use vitrine_core::report::{DataSummary, RunReport};
use vitrine_core::train::{Batches, Built, FitOutcome, HeldOut, Recipe, TrainContext, TrainTask, recipe};

use crate::autoencoder::AutoencoderTask;
use crate::config::{Architecture, GenerationConfig, TASK};
use crate::data::{batches, load_data};
use crate::gan::GanTask;

/// Sample grids of each epoch, `samples/epoch-NNN.png`.
pub const SAMPLES_DIR: &str = "samples";
/// Images per grid row, and rows of a GAN's grid when unconditional.
pub const GRID_COLUMNS: usize = 8;

/// The run-relative path of an epoch's sample grid.
pub fn sample_grid_name(epoch: usize) -> String {
    format!("{SAMPLES_DIR}/epoch-{epoch:03}.png")
}

/// Trains the configured model into `ctx.run`, continuing from its last checkpoint when resuming.
pub fn train(config: &GenerationConfig, ctx: &TrainContext) -> Result<RunReport> {
    match config.model.name {
        Architecture::ConvAe => recipe::train(&GenerationRecipe::<AutoencoderTask>::new(config), ctx),
        Architecture::Dcgan => recipe::train(&GenerationRecipe::<GanTask>::new(config), ctx),
    }
}

/// What each generator's task adds to the shared generation recipe.
pub trait GeneratorTask: TrainTask<Batch = ImageBatch> + Sized {
    /// The model and its optimizer(s) on `train_device`.
    fn build(config: &GenerationConfig, data: &ImageSplits, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self>>;
    /// Held-out figures after training (`test MSE`, `test Fréchet distance`).
    fn evaluate(&self, config: &GenerationConfig, data: &ImageSplits, ctx: &TrainContext) -> Result<Vec<(String, f64)>>;
}

/// The held-out images scored at the end (the test split when there is one) and their name.
pub fn held_out(data: &ImageSplits) -> (&'static str, std::sync::Arc<vitrine_core::data::ImageSet>) {
    match &data.test {
        Some(test) => ("test", test.clone()),
        None => ("valid", data.valid.clone()),
    }
}

struct GenerationRecipe<'a, T> {
    config: &'a GenerationConfig,
    _task: PhantomData<T>,
}

impl<'a, T> GenerationRecipe<'a, T> {
    fn new(config: &'a GenerationConfig) -> Self {
        Self { config, _task: PhantomData }
    }
}

impl<T: GeneratorTask> Recipe for GenerationRecipe<'_, T> {
    type Data = ImageSplits;
    type Task = T;

    fn task_name(&self) -> &'static str {
        TASK
    }

    fn run_settings(&self) -> &RunSection {
        &self.config.run
    }

    fn train_settings(&self) -> &TrainSection {
        &self.config.train
    }

    fn resolved_toml(&self) -> Result<String> {
        self.config.to_toml()
    }

    fn load_data(&self, ctx: &TrainContext) -> Result<ImageSplits> {
        load_data(self.config, ctx.reporter)
    }

    fn classes(&self, data: &ImageSplits) -> Vec<String> {
        data.train.classes.clone()
    }

    fn build(&self, data: &ImageSplits, train_device: &Device, ctx: &TrainContext) -> Result<Built<T>> {
        T::build(self.config, data, train_device, ctx)
    }

    fn batches(&self, data: &ImageSplits, train_device: &Device, device: &Device) -> Result<(Batches<ImageBatch>, Batches<ImageBatch>)> {
        let (train, valid) = batches(self.config, data, train_device, device);
        Ok((Box::new(train), Box::new(valid)))
    }

    fn evaluate(&self, task: &T, data: &ImageSplits, outcome: &FitOutcome, ctx: &TrainContext) -> Result<HeldOut> {
        let figures = task.evaluate(self.config, data, ctx)?;
        let last = outcome.history.last().map_or(0, |r| r.epoch);
        Ok(HeldOut { figures, images: vec![(format!("Samples after epoch {last}"), sample_grid_name(last))], test: None })
    }

    fn data_summary(&self, data: &ImageSplits) -> DataSummary {
        DataSummary::of_images(data)
    }
}
