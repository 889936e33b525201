//! Training an image classifier from a config into a run directory.

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::classifier::{ClassifierModel, ClassifierTask, score};
use vitrine_core::config::{ExperimentConfig, ImageDataSection};
use vitrine_core::data::{BatchSource, ImageBatches, ImageSplits, PixelRange, load_image_splits};
use vitrine_core::plot::confusion_png;
use vitrine_core::progress::Progress;
use vitrine_core::report::{DataSummary, RunIdentity, RunReport};
use vitrine_core::run_dir::{RunDir, WEIGHTS_FILE};
use vitrine_core::train::{FitPlan, TrainTask, build_optimizer, fit, resume};

use crate::model::{Architecture, FashionCnn, ImageModelConfig, ResnetSmall};

/// The `task` value of image-classification configs.
pub const TASK: &str = "image-classification";

/// A whole image-classification experiment.
pub type ImageConfig = ExperimentConfig<ImageDataSection, ImageModelConfig>;

/// An image classifier Vitrine can build, train, save and load.
pub trait ImageNet: ClassifierModel<Input = Tensor<4>> + ModuleSnapshot {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self;
}

impl ImageNet for FashionCnn {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self {
        FashionCnn::new(config.data.image, classes, config.model.dropout, device)
    }
}

impl ImageNet for ResnetSmall {
    fn build(config: &ImageConfig, classes: usize, device: &Device) -> Self {
        ResnetSmall::with_width(config.data.image, classes, config.model.dropout, config.model.width, device)
    }
}

/// Loads train / valid / test as configured; validation is split off `train` when not given.
pub fn load_data(config: &ImageConfig) -> Result<ImageSplits> {
    let data = load_image_splits(&config.data, config.run.split_seed(), config.run.strict)?;
    if data.train.classes.len() < 2 {
        bail!("data.train has {} class(es); a classifier needs at least 2", data.train.classes.len());
    }
    Ok(data)
}

/// Trains the configured model into `run`, continuing from its last checkpoint when `resuming`.
pub fn train(config: &ImageConfig, run: &RunDir, compute: &ComputeDevice, resuming: bool) -> Result<RunReport> {
    match config.model.name {
        Architecture::FashionCnn => train_with::<FashionCnn>(config, run, compute, resuming),
        Architecture::ResnetSmall => train_with::<ResnetSmall>(config, run, compute, resuming),
    }
}

fn train_with<M: ImageNet>(config: &ImageConfig, run: &RunDir, compute: &ComputeDevice, resuming: bool) -> Result<RunReport> {
    let data = load_data(config)?;
    let classes = data.train.classes.clone();
    run.record_start(&config.to_toml()?, &classes, resuming)?;
    println!("data: {}", data.describe());

    let device = compute.device.clone();
    let train_device = device.clone().autodiff();
    train_device.seed(config.run.seed);
    let model = M::build(config, classes.len(), &train_device);
    let parameters = model.num_params();
    println!("model: {} ({parameters} parameters)", config.model.name.name());
    let optimizer = build_optimizer(&config.train.optimizer, config.train.grad_clip_norm);
    let mut task = ClassifierTask::new(model, optimizer, &train_device);
    let history = if resuming { resume(&mut task, run)? } else { Vec::new() };
    if resuming {
        println!("resuming {} after epoch {}", run.root().display(), history.len());
    }

    let bs = config.train.batch_size;
    let train_batches = ImageBatches::shuffled(
        data.train.clone(),
        bs,
        config.run.seed,
        config.data.augment,
        PixelRange::Unit,
        train_device.clone(),
    );
    let valid_batches = ImageBatches::ordered(data.valid.clone(), bs, PixelRange::Unit, device.clone());
    let outcome = fit(
        &mut task,
        &train_batches,
        &valid_batches,
        &FitPlan::new(&config.train, &train_device, config.run.seed),
        run,
        history,
        &mut Progress::new(),
    )?;
    task.save_weights(&run.file(WEIGHTS_FILE))?;
    if outcome.stopped_early {
        println!("early stopping: no validation improvement for {} epochs", config.train.early_stopping.as_ref().map_or(0, |e| e.patience));
    }

    let test = match &data.test {
        Some(test) => {
            let model = task.model().valid();
            let batches = ImageBatches::ordered(test.clone(), bs, PixelRange::Unit, device.clone());
            let scores = score(&model, batches.batches(0), &classes);
            confusion_png(&run.file("confusion.png"), &scores.confusion, &classes)?;
            println!("test: accuracy {:.2}%, macro-F1 {:.4}", 100.0 * scores.accuracy, scores.macro_f1);
            Some(scores)
        }
        None => None,
    };
    let who = RunIdentity { task: TASK, model: config.model.name.name(), parameters, device: &compute.description };
    let report = RunReport { test, ..RunReport::of_fit(who, DataSummary::of_images(&data), outcome) };
    report.write(run)?;
    println!("run saved in {}", run.root().display());
    Ok(report)
}
