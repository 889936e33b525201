//! Training a generator: this family's part of the shared recipe. Both models read the same
//! images; each supplies its own task ([`crate::autoencoder`], [`crate::gan`]) through
//! [`crate::task::GeneratorTask`].

use std::marker::PhantomData;

use anyhow::Result;
use burn::prelude::*;
use vitrine_core::config::Settings;
use vitrine_core::data::{ImageBatch, ImageSplits};
use vitrine_core::report::{DataSummary, RunReport};
use vitrine_core::train::{Batches, Built, FitOutcome, HeldOut, Recipe, TrainContext, recipe};

use crate::autoencoder::AutoencoderTask;
use crate::config::{Architecture, GenerationConfig, TASK};
use crate::data::{batches, load_data};
use crate::gan::GanTask;
use crate::grid::sample_grid_name;
use crate::task::GeneratorTask;

/// Trains the configured model into `ctx.run`, continuing from its last checkpoint when resuming.
pub fn train(config: &GenerationConfig, ctx: &TrainContext) -> Result<RunReport> {
    match config.model.name {
        Architecture::ConvAe => recipe::train(&GenerationRecipe::<AutoencoderTask>::new(config), ctx),
        Architecture::Dcgan => recipe::train(&GenerationRecipe::<GanTask>::new(config), ctx),
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

    fn settings(&self) -> &dyn Settings {
        self.config
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
