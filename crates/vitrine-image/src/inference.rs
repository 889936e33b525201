//! Using a trained run: evaluation, prediction and export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;
use vitrine_core::backend::on_compute_pool;
use vitrine_core::classifier::{argmax, predict_probabilities_by, score_by};
use vitrine_core::config::{ConfigFile, DataSource};
use vitrine_core::data::{BatchSource, ClassMatcher, ImageBatches, LoadReport, PixelRange, load_source, read_images};
use vitrine_core::export::{WeightsFormat, export_weights, load_weights};
use vitrine_core::family::UseContext;
use vitrine_core::plot::confusion_png;
use vitrine_core::report::ClassificationScores;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir, WEIGHTS_FILE};

use crate::backbones::{Backbone, save_torchvision};
use crate::config::{Architecture, ImageConfig, TASK};
use crate::data::INFERENCE_BATCH;
use crate::model::{FashionCnn, ResnetSmall};
use crate::training::ImageNet;

/// A trained image-classification run, ready for inference.
pub struct ImageRun {
    pub run: RunDir,
    pub config: ImageConfig,
    pub classes: Vec<String>,
}

impl ImageRun {
    /// Opens a finished run folder; other families' runs are a clear error.
    pub fn open(path: &Path) -> Result<Self> {
        let run = RunDir::open(path)?;
        let file = ConfigFile::read(&run.file(CONFIG_FILE))?;
        if file.task() != TASK {
            bail!("{} is a `{}` run, not an image classifier", path.display(), file.task());
        }
        Self::open_with(run, &file)
    }

    /// Opens a finished run whose saved config is `file`.
    pub fn open_with(run: RunDir, file: &ConfigFile) -> Result<Self> {
        let classes = run.trained_classes()?;
        let config = ImageConfig::from_file(file, &[])?;
        Ok(Self { run, config, classes })
    }

    fn load<M: ImageNet>(&self, device: &Device) -> Result<M> {
        let model = M::build(&self.config, self.classes.len(), device);
        Ok(load_weights(model, &self.run.file(WEIGHTS_FILE), self.config.model.name.name())?.valid())
    }

    /// The trained network, in inference mode.
    pub fn classifier(&self, device: &Device) -> Result<LoadedClassifier> {
        Ok(match self.config.model.name {
            Architecture::FashionCnn => LoadedClassifier::FashionCnn(self.load(device)?),
            Architecture::ResnetSmall => LoadedClassifier::ResnetSmall(self.load(device)?),
            _ => LoadedClassifier::Backbone(self.load(device)?),
        })
    }
}

/// A trained image classifier of either architecture, for other families to use (e.g. to
/// score generated images).
pub enum LoadedClassifier {
    FashionCnn(FashionCnn),
    ResnetSmall(ResnetSmall),
    Backbone(Backbone),
}

impl LoadedClassifier {
    /// Class logits of images scaled to [0, 1].
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::FashionCnn(m) => m.forward(images),
            Self::ResnetSmall(m) => m.forward(images),
            Self::Backbone(m) => m.forward(images),
        }
    }

    /// Class logits, averaged with those of the mirror images when `mirror` (test-time
    /// augmentation for models trained with flips).
    pub fn logits_mirrored(&self, images: Tensor<4>, mirror: bool) -> Tensor<2> {
        match mirror {
            true => (self.logits(images.clone()) + self.logits(images.flip([3]))) / 2.0,
            false => self.logits(images),
        }
    }

    /// Penultimate-layer features of images scaled to [0, 1].
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::FashionCnn(m) => m.features(images),
            Self::ResnetSmall(m) => m.features(images),
            Self::Backbone(m) => m.features(images),
        }
    }
}

/// Evaluates a run on labelled data: `paths` is an image folder, or an IDX images file and its
/// labels file. With `mirror`, each image's logits are averaged with its mirror image's
/// (test-time augmentation). Writes the confusion matrix as PNG to `confusion_out` when given.
pub fn evaluate(
    trained: &ImageRun,
    paths: &[PathBuf],
    mirror: bool,
    confusion_out: Option<&Path>,
    ctx: &UseContext,
) -> Result<(ClassificationScores, LoadReport)> {
    let source = DataSource::from_paths(paths)?;
    let strict = ctx.strict || trained.config.run.strict;
    let classes = ClassMatcher::new(&trained.classes, ctx.class_map)?;
    let (set, report) = load_source(&source, trained.config.data.image, Some(&classes), strict, trained.config.data.stream, ctx.reporter)?;
    let device = ctx.device();
    let batches = ImageBatches::ordered(Arc::new(set), INFERENCE_BATCH, PixelRange::Unit, device.clone());
    let model = trained.classifier(device)?;
    let scores = score_by(|images| on_compute_pool(device, || model.logits_mirrored(images, mirror)), batches.batches(0), &trained.classes);
    if let Some(path) = confusion_out {
        confusion_png(path, &scores.confusion, &trained.classes)?;
    }
    Ok((scores, report))
}

/// The most likely classes of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    pub top: Vec<ClassProbability>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f32,
}

/// Predicts the `top_k` classes of each image file (folders are searched recursively), with
/// `mirror` as in [`evaluate`], classes named as `--class-map` names them. Unreadable files are
/// reported and skipped, or fail the call when `strict`.
pub fn predict(trained: &ImageRun, inputs: &[PathBuf], top_k: usize, mirror: bool, ctx: &UseContext) -> Result<Vec<Prediction>> {
    let (set, kept) = read_images(inputs, trained.config.data.image, ctx.strict || trained.config.run.strict, ctx.reporter)?;
    let device = ctx.device();
    let batches = ImageBatches::ordered(Arc::new(set), INFERENCE_BATCH, PixelRange::Unit, device.clone());
    let model = trained.classifier(device)?;
    let probabilities =
        predict_probabilities_by(|images| on_compute_pool(device, || model.logits_mirrored(images, mirror)), batches.batches(0).map(|b| b.images));
    Ok(kept
        .into_iter()
        .zip(probabilities)
        .map(|(path, mut probs)| {
            let mut top = Vec::new();
            for _ in 0..top_k.min(probs.len()) {
                let best = argmax(&probs);
                top.push(ClassProbability { class: ctx.class_map.name_of(&trained.classes[best]).to_string(), probability: probs[best] });
                probs[best] = f32::NEG_INFINITY;
            }
            Prediction { path, top }
        })
        .collect())
}

/// Exports the run's weights; safetensors files carry the class names and architecture, and a
/// torchvision backbone's are in torchvision's layout (its `state_dict` names).
pub fn export(trained: &ImageRun, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
    let metadata = [
        ("architecture", trained.config.model.name.name().to_string()),
        ("classes", serde_json::to_string(&trained.classes)?),
        ("input_shape", format!("{:?}", trained.config.data.image)),
    ];
    match trained.config.model.name {
        Architecture::FashionCnn => export_weights(&trained.load::<FashionCnn>(device)?, format, out, &metadata),
        Architecture::ResnetSmall => export_weights(&trained.load::<ResnetSmall>(device)?, format, out, &metadata),
        _ => save_torchvision(&trained.load::<Backbone>(device)?, format, out, &metadata),
    }
}
