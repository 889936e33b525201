//! Using a trained run: evaluation, prediction and export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;
use serde::Serialize;
use vitrine_core::classifier::{argmax, predict_probabilities, score};
use vitrine_core::config::{DataSource, ImageShape};
use vitrine_core::data::{BatchSource, ImageBatches, ImageSet, LoadReport, PixelRange, load_source};
use vitrine_core::export::{WeightsFormat, export_weights, load_weights};
use vitrine_core::plot::confusion_png;
use vitrine_core::report::ClassificationScores;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir, WEIGHTS_FILE};

use crate::model::{Architecture, FashionCnn, ResnetSmall};
use crate::training::{ImageConfig, ImageNet};

/// A trained run, ready for inference.
pub struct TrainedRun {
    pub run: RunDir,
    pub config: ImageConfig,
    pub classes: Vec<String>,
}

impl TrainedRun {
    pub fn open(path: &Path) -> Result<Self> {
        let run = RunDir::open(path)?;
        let config = ImageConfig::load(&run.file(CONFIG_FILE), &[])?;
        let classes = run.classes()?;
        ensure!(
            run.file(WEIGHTS_FILE).is_file(),
            "{} has no {WEIGHTS_FILE} yet (training did not finish); continue it with `vitrine train --resume {}`",
            path.display(),
            path.display()
        );
        Ok(Self { run, config, classes })
    }

    fn load<M: ImageNet>(&self, device: &Device) -> Result<M> {
        let model = M::build(&self.config, self.classes.len(), device);
        Ok(load_weights(model, &self.run.file(WEIGHTS_FILE), self.config.model.name.name())?.valid())
    }
}

/// Evaluates a run on labelled data: `paths` is an image folder, or an IDX images file and its
/// labels file. Writes the confusion matrix as PNG to `confusion_out` when given.
pub fn evaluate(trained: &TrainedRun, paths: &[PathBuf], device: &Device, confusion_out: Option<&Path>) -> Result<(ClassificationScores, LoadReport)> {
    let source = match paths {
        [folder] if folder.is_dir() => DataSource { folder: Some(folder.clone()), ..Default::default() },
        [images, labels] => DataSource { images: Some(images.clone()), labels: Some(labels.clone()), ..Default::default() },
        [file] => bail!("{} is not a folder; give an image folder, or an IDX images file and its labels file", file.display()),
        _ => bail!("--data takes an image folder, or an IDX images file followed by its labels file"),
    };
    let (set, report) = load_source(&source, trained.config.data.image, Some(&trained.classes), trained.config.run.strict)?;
    let batches = ImageBatches::ordered(Arc::new(set), 256, PixelRange::Unit, device.clone());
    let scores = match trained.config.model.name {
        Architecture::FashionCnn => score(&trained.load::<FashionCnn>(device)?, batches.batches(0), &trained.classes),
        Architecture::ResnetSmall => score(&trained.load::<ResnetSmall>(device)?, batches.batches(0), &trained.classes),
    };
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

/// Predicts the `top_k` classes of each image file (folders are searched recursively).
/// Unreadable files are reported and skipped, or fail the call when `strict`.
pub fn predict(trained: &TrainedRun, inputs: &[PathBuf], top_k: usize, device: &Device, strict: bool) -> Result<Vec<Prediction>> {
    let shape = trained.config.data.image;
    let mut files = Vec::new();
    for input in inputs {
        collect_images(input, &mut files)?;
    }
    ensure!(!files.is_empty(), "no image files found in {inputs:?}");
    let mut kept = Vec::new();
    let mut pixels = Vec::new();
    for file in files {
        match decode(&file, shape) {
            Ok(bytes) => {
                pixels.extend(bytes);
                kept.push(file);
            }
            Err(e) if strict => return Err(e),
            Err(e) => eprintln!("warning: skipping {e:#}"),
        }
    }
    ensure!(!kept.is_empty(), "none of the inputs could be read as images");
    let set = ImageSet { shape, pixels, labels: vec![0; kept.len()], classes: trained.classes.clone() };
    let batches = ImageBatches::ordered(Arc::new(set), 256, PixelRange::Unit, device.clone());
    let inputs = batches.batches(0).map(|b| b.images);
    let probabilities = match trained.config.model.name {
        Architecture::FashionCnn => predict_probabilities(&trained.load::<FashionCnn>(device)?, inputs),
        Architecture::ResnetSmall => predict_probabilities(&trained.load::<ResnetSmall>(device)?, inputs),
    };
    Ok(kept
        .into_iter()
        .zip(probabilities)
        .map(|(path, mut probs)| {
            let mut top = Vec::new();
            for _ in 0..top_k.min(probs.len()) {
                let best = argmax(&probs);
                top.push(ClassProbability { class: trained.classes[best].clone(), probability: probs[best] });
                probs[best] = f32::NEG_INFINITY;
            }
            Prediction { path, top }
        })
        .collect())
}

/// Exports the run's weights; safetensors files carry the class names and architecture.
pub fn export(trained: &TrainedRun, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
    let metadata = [
        ("architecture", trained.config.model.name.name().to_string()),
        ("classes", serde_json::to_string(&trained.classes)?),
        ("input_shape", format!("{:?}", trained.config.data.image)),
    ];
    match trained.config.model.name {
        Architecture::FashionCnn => export_weights(&trained.load::<FashionCnn>(device)?, format, out, &metadata),
        Architecture::ResnetSmall => export_weights(&trained.load::<ResnetSmall>(device)?, format, out, &metadata),
    }
}

fn decode(path: &Path, shape: ImageShape) -> Result<Vec<u8>> {
    let image = image::ImageReader::open(path)
        .with_context(|| format!("{}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    Ok(vitrine_core::data::to_shape(image, shape))
}

fn collect_images(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() || vitrine_core::data::has_image_extension(&entry) {
                collect_images(&entry, out)?;
            }
        }
    } else {
        bail!("{} does not exist", path.display());
    }
    Ok(())
}
