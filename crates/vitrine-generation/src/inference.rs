//! Using a trained generator: sampling, reconstruction, interpolation, scoring and export.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail, ensure};
use burn::prelude::*;
use serde::Serialize;
use vitrine_core::config::{ConfigFile, DataSource};
use vitrine_core::data::{BatchSource, ClassMatcher, ImageBatches, LoadReport, PixelRange, load_source, read_images};
use vitrine_core::export::{WeightsFormat, export_weights, load_weights};
use vitrine_core::family::UseContext;
use vitrine_core::run_dir::{CONFIG_FILE, RunDir, WEIGHTS_FILE};

use crate::autoencoder::{above, psnr, reconstruction_mse};
use crate::config::{Architecture, GenerationConfig, TASK, resolve};
use crate::data::pixel_range;
use crate::grid::ImageBatchData;
use crate::model::{ConvAe, Gan};
use crate::scoring::{SampleScorer, SampleScores, labels_tensor, normal_noise};

/// A trained generation run, ready for inference.
pub struct GenerationRun {
    pub run: RunDir,
    pub config: GenerationConfig,
    pub classes: Vec<String>,
}

impl GenerationRun {
    /// Opens a finished run folder; other families' runs are a clear error.
    pub fn open(path: &Path) -> Result<Self> {
        let run = RunDir::open(path)?;
        let file = ConfigFile::read(&run.file(CONFIG_FILE))?;
        if file.task() != TASK {
            bail!("{} is a `{}` run, not an image generator", path.display(), file.task());
        }
        Self::open_with(run, &file)
    }

    /// Opens a finished run whose saved config is `file`.
    pub fn open_with(run: RunDir, file: &ConfigFile) -> Result<Self> {
        let classes = run.trained_classes()?;
        let config = resolve(file, &[])?;
        Ok(Self { run, config, classes })
    }

    pub fn architecture(&self) -> Architecture {
        self.config.model.name
    }

    pub fn autoencoder(&self, device: &Device) -> Result<ConvAe> {
        ensure!(self.architecture() == Architecture::ConvAe, "{} is a {} run, not an autoencoder", self.run.root().display(), self.architecture().name());
        let m = &self.config.model;
        let model = ConvAe::new(self.config.data.image, m.latent(), m.variational, device);
        Ok(load_weights(model, &self.run.file(WEIGHTS_FILE), "conv-ae")?.valid())
    }

    pub fn gan(&self, device: &Device) -> Result<Gan> {
        ensure!(self.architecture() == Architecture::Dcgan, "{} is a {} run, not a GAN", self.run.root().display(), self.architecture().name());
        let conditional = self.config.model.conditional.then_some(self.classes.len());
        let model = Gan::new(self.config.data.image, self.config.model.latent(), conditional, device);
        Ok(load_weights(model, &self.run.file(WEIGHTS_FILE), "dcgan")?.valid())
    }
}

/// Generated images (pixels in [0, 1]) and the class each was asked for.
pub struct Generated {
    pub images: ImageBatchData,
    pub classes: Vec<Option<String>>,
    /// Images per row of a grid: one row per class when a conditional GAN drew every class.
    pub columns: usize,
}

/// Generates `n` images from seeded noise: a GAN's (of `class`, or of every class in turn when
/// conditional), or a variational autoencoder's decoded N(0, I) codes.
pub fn generate(trained: &GenerationRun, n: usize, class: Option<&str>, seed: u64, device: &Device) -> Result<Generated> {
    ensure!(n > 0, "--n must be at least 1");
    let latent = trained.config.model.latent();
    let noise = normal_noise(n, latent, seed, device);
    let square = (n as f64).sqrt().ceil() as usize;
    match trained.architecture() {
        Architecture::ConvAe => {
            ensure!(
                trained.config.model.variational,
                "{} is a plain autoencoder, whose codes are not drawn from a known distribution: use \
                 `vitrine reconstruct` or `vitrine interpolate`, or train with model.variational = true to sample",
                trained.run.root().display()
            );
            ensure!(class.is_none(), "--class needs a conditional GAN; {} is an autoencoder", trained.run.root().display());
            let images = trained.autoencoder(device)?.decode(noise);
            Ok(Generated { images: ImageBatchData::from_tensor(images), classes: vec![None; n], columns: square })
        }
        Architecture::Dcgan => {
            let gan = trained.gan(device)?;
            let per_class = n.div_ceil(trained.classes.len());
            let mut columns = square;
            let wanted: Option<Vec<usize>> = match (class, gan.is_conditional()) {
                (Some(name), true) => {
                    let Some(index) = trained.classes.iter().position(|c| c.eq_ignore_ascii_case(name)) else {
                        bail!("unknown class `{name}`; this model knows: {}", trained.classes.join(", "));
                    };
                    Some(vec![index; n])
                }
                (Some(_), false) => bail!("--class needs a conditional GAN (model.conditional = true); {} is unconditional", trained.run.root().display()),
                (None, true) => {
                    columns = per_class;
                    Some((0..n).map(|i| i / per_class).collect())
                }
                (None, false) => None,
            };
            let labels = wanted.as_ref().map(|w| labels_tensor(w, device));
            let images = (gan.generator.forward(noise, labels) + 1.0) / 2.0;
            let classes = match wanted {
                Some(w) => w.into_iter().map(|i| Some(trained.classes[i].clone())).collect(),
                None => vec![None; n],
            };
            Ok(Generated { images: ImageBatchData::from_tensor(images), classes, columns })
        }
    }
}

/// Images read from files and what the autoencoder makes of them.
pub struct Reconstructed {
    pub files: Vec<PathBuf>,
    /// Originals in rows of 8, each above its reconstructions.
    pub grid: ImageBatchData,
    /// Mean squared error per pixel over all the images.
    pub mse: f64,
}

/// Reconstructs image files (folders searched recursively) with an autoencoder run.
pub fn reconstruct(trained: &GenerationRun, inputs: &[PathBuf], ctx: &UseContext) -> Result<Reconstructed> {
    let device = ctx.device();
    let model = trained.autoencoder(device)?;
    let (set, files) = read_images(inputs, trained.config.data.image, ctx.strict, ctx.reporter)?;
    let batches = ImageBatches::ordered(Arc::new(set), files.len(), PixelRange::Unit, device.clone());
    let originals = batches.batches(0).next().expect("at least one image").images;
    let reconstructions = model.forward(originals.clone(), false).images;
    let mse = (reconstructions.clone() - originals.clone()).powi_scalar(2).mean().into_scalar::<f32>() as f64;
    Ok(Reconstructed { files, grid: ImageBatchData::from_tensor(above(originals, reconstructions)), mse })
}

/// Decodes `steps` codes evenly spaced between the codes of two images (both ends included).
pub fn interpolate(trained: &GenerationRun, from: &Path, to: &Path, steps: usize, ctx: &UseContext) -> Result<ImageBatchData> {
    ensure!(steps >= 2, "--steps must be at least 2");
    let device = ctx.device();
    let model = trained.autoencoder(device)?;
    let (set, files) = read_images(&[from.to_path_buf(), to.to_path_buf()], trained.config.data.image, true, ctx.reporter)?;
    ensure!(files.len() == 2, "give exactly two image files to interpolate between");
    let images = ImageBatches::ordered(Arc::new(set), 2, PixelRange::Unit, device.clone()).batches(0).next().expect("two images").images;
    let codes = model.encode(images);
    let (a, b) = (codes.clone().slice(0..1), codes.slice(1..2));
    let weights: Vec<f32> = (0..steps).map(|i| i as f32 / (steps - 1) as f32).collect();
    let t = Tensor::<2>::from_data(TensorData::new(weights, [steps, 1]), device);
    let mixed = a.clone() + (b - a) * t; // [steps, latent] by broadcasting
    Ok(ImageBatchData::from_tensor(model.decode(mixed)))
}

/// Scores of a generator on held-out images.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationScores {
    pub model: String,
    pub examples: usize,
    /// Autoencoders: mean squared error per pixel (pixels in [0, 1]) and PSNR in dB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psnr: Option<f64>,
    /// GANs and variational autoencoders: Fréchet distance of samples (and class match) in the
    /// feature space of `classifier`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<SampleScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<PathBuf>,
}

impl GenerationScores {
    pub fn to_text(&self) -> String {
        let mut out = format!("model {}  held-out images {}\n", self.model, self.examples);
        if let (Some(mse), Some(psnr)) = (self.mse, self.psnr) {
            out += &format!("reconstruction MSE {mse:.5}  PSNR {psnr:.2} dB\n");
        }
        if let (Some(s), Some(c)) = (&self.samples, &self.classifier) {
            out += &format!("{} (features of {})\n", s.summary(), c.display());
        }
        out
    }
}

/// Scores a run on held-out images (an image folder, or IDX images and labels): an
/// autoencoder's reconstruction error, and the Fréchet distance of a GAN's or a variational
/// autoencoder's samples with `classifier` (by default the config's `eval.classifier`; optional
/// for a VAE).
pub fn evaluate(trained: &GenerationRun, paths: &[PathBuf], classifier: Option<&Path>, seed: u64, ctx: &UseContext) -> Result<(GenerationScores, LoadReport)> {
    let source = DataSource::from_paths(paths)?;
    let arch = trained.architecture();
    let device = ctx.device();
    // Autoencoders ignore labels, so any folder of images will do; GANs need the run's classes.
    let classes = (arch == Architecture::Dcgan).then(|| ClassMatcher::new(&trained.classes, ctx.class_map)).transpose()?;
    let (set, report) =
        load_source(&source, trained.config.data.image, classes.as_ref(), ctx.strict || trained.config.run.strict, trained.config.data.stream, ctx.reporter)?;
    let mut scores = GenerationScores { model: arch.name().into(), examples: set.len(), mse: None, psnr: None, samples: None, classifier: None };
    match arch {
        Architecture::ConvAe => {
            let model = trained.autoencoder(device)?;
            let settings = trained.config.eval_settings();
            let classifier = match (classifier, trained.config.model.variational) {
                (Some(_), false) => bail!(
                    "--classifier scores samples, and {} is a plain autoencoder, which cannot be sampled (train with model.variational = true)",
                    trained.run.root().display()
                ),
                (given, true) => given.or(settings.classifier.as_deref()),
                (None, false) => None,
            };
            if let Some(path) = classifier {
                let scorer = SampleScorer::new(path, &set, &trained.classes, &trained.config, device)?;
                scores.samples = Some(scorer.score_by(|noise, _| model.decode(noise), seed)?);
                scores.classifier = Some(path.to_path_buf());
            }
            let batches = ImageBatches::ordered(Arc::new(set), 256, pixel_range(arch), device.clone());
            let mse = reconstruction_mse(&model, &batches);
            (scores.mse, scores.psnr) = (Some(mse), Some(psnr(mse)));
        }
        Architecture::Dcgan => {
            let settings = trained.config.eval_settings();
            let Some(path) = classifier.or(settings.classifier.as_deref()) else {
                bail!("scoring a GAN needs an image classifier: pass --classifier runs/NAME or set eval.classifier in the config");
            };
            let scorer = SampleScorer::new(path, &set, &trained.classes, &trained.config, device)?;
            scores.samples = Some(scorer.score(&trained.gan(device)?.generator, seed)?);
            scores.classifier = Some(path.to_path_buf());
        }
    }
    Ok((scores, report))
}

/// Exports the run's weights (a GAN's as `generator.*` and `discriminator.*`).
pub fn export(trained: &GenerationRun, format: WeightsFormat, out: &Path, device: &Device) -> Result<()> {
    let m = &trained.config.model;
    let metadata = [
        ("architecture", m.name.name().to_string()),
        ("classes", serde_json::to_string(&trained.classes)?),
        ("input_shape", format!("{:?}", trained.config.data.image)),
        ("latent", m.latent().to_string()),
        ("variational", m.variational.to_string()),
        ("conditional", m.conditional.to_string()),
    ];
    match trained.architecture() {
        Architecture::ConvAe => export_weights(&trained.autoencoder(device)?, format, out, &metadata),
        Architecture::Dcgan => export_weights(&trained.gan(device)?, format, out, &metadata),
    }
}
