//! Training an image classifier from a config into a run directory.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::classifier::{ClassifierModel, ClassifierTask, score};
use vitrine_core::config::{ExperimentConfig, ImageDataSection};
use vitrine_core::data::{BatchSource, ImageBatches, ImageSet, LoadReport, PixelRange, load_source};
use vitrine_core::plot::confusion_png;
use vitrine_core::progress::Progress;
use vitrine_core::report::{DataSummary, RunReport};
use vitrine_core::run_dir::{CLASSES_FILE, CONFIG_FILE, RunDir, WEIGHTS_FILE};
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

/// The data of a run, decoded once.
pub struct ImageData {
    pub train: Arc<ImageSet>,
    pub valid: Arc<ImageSet>,
    pub test: Option<Arc<ImageSet>>,
    pub skipped: Vec<String>,
}

/// Loads train / valid / test as configured; validation is split off `train` when not given.
pub fn load_data(config: &ImageConfig) -> Result<ImageData> {
    let d = &config.data;
    let strict = config.run.strict;
    let mut skipped = Vec::new();
    let mut note = |name: &str, report: &LoadReport| {
        if let Some(line) = report.summary() {
            println!("data.{name}: {line}");
            skipped.push(format!("data.{name}: {line}"));
        }
    };
    let (mut train, report) = load_source(&d.train, d.image, d.classes.as_deref(), strict).context("data.train")?;
    note("train", &report);
    if let Some(limit) = d.limit {
        train = train.truncate(limit);
    }
    let classes = train.classes.clone();
    let (train, valid) = match &d.valid {
        Some(source) => {
            let (valid, report) = load_source(source, d.image, Some(&classes), strict).context("data.valid")?;
            note("valid", &report);
            (train, valid)
        }
        None => train.split(d.valid_fraction, config.run.seed),
    };
    let test = match &d.test {
        Some(source) => {
            let (test, report) = load_source(source, d.image, Some(&classes), strict).context("data.test")?;
            note("test", &report);
            Some(Arc::new(test))
        }
        None => None,
    };
    if train.classes.len() < 2 {
        bail!("data.train has {} class(es); a classifier needs at least 2", train.classes.len());
    }
    if train.is_empty() || valid.is_empty() {
        bail!("too little data: {} training and {} validation images", train.len(), valid.len());
    }
    Ok(ImageData { train: Arc::new(train), valid: Arc::new(valid), test, skipped })
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
    if resuming {
        let saved = run.classes()?;
        if saved != classes {
            bail!("the data's classes {classes:?} differ from the run's {saved:?}");
        }
    } else {
        run.write(CONFIG_FILE, config.to_toml()?)?;
        run.write(CLASSES_FILE, serde_json::to_string_pretty(&classes)?)?;
    }
    println!(
        "data: {} train / {} valid{} images, {} classes, {}x{}x{}",
        data.train.len(),
        data.valid.len(),
        data.test.as_ref().map(|t| format!(" / {} test", t.len())).unwrap_or_default(),
        classes.len(),
        config.data.image.channels,
        config.data.image.height,
        config.data.image.width
    );

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
        &FitPlan::from(&config.train),
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
    let report = RunReport {
        task: TASK.into(),
        model: config.model.name.name().into(),
        parameters,
        device: compute.description.clone(),
        data: DataSummary {
            train: data.train.len(),
            valid: data.valid.len(),
            test: data.test.as_ref().map(|t| t.len()),
            classes,
            skipped: data.skipped,
        },
        train_seconds: outcome.history.iter().map(|r| r.seconds).sum(),
        epochs: outcome.history,
        stopped_early: outcome.stopped_early,
        restored_epoch: outcome.restored_epoch,
        test,
    };
    report.write(run)?;
    println!("run saved in {}", run.root().display());
    Ok(report)
}
