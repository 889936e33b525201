//! Scoring generated images in the feature space of a trained Vitrine image classifier: the
//! Fréchet distance to real images and, for a conditional GAN, how often samples show the class
//! asked for.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, ensure};
use burn::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use vitrine_core::data::{BatchSource, ImageBatches, ImageSet, PixelRange};
use vitrine_image::inference::{ImageRun, LoadedClassifier};

use crate::config::GenerationConfig;
use crate::frechet::{FeatureStats, frechet_distance};
use crate::model::Generator;

/// Images per forward pass when generating or scoring.
const CHUNK: usize = 250;

/// `n` standard-normal vectors `[n, dim]` from a seeded host generator, so the same seed gives
/// the same samples on every backend.
pub fn normal_noise(n: usize, dim: usize, seed: u64, device: &Device) -> Tensor<2> {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..n * dim)
        .map(|_| {
            // Box–Muller: two uniforms give one standard normal.
            let (u, v): (f32, f32) = (rng.random::<f32>().max(f32::MIN_POSITIVE), rng.random());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [n, dim]), device)
}

/// Sample quality in the feature space of a trained image classifier.
#[derive(Debug, Clone, Serialize)]
pub struct SampleScores {
    /// Fréchet distance between generated and real images' penultimate-layer features.
    pub frechet: f64,
    /// Conditional GANs: the fraction of samples the classifier assigns to the requested class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_match: Option<f64>,
    pub samples: usize,
}

impl SampleScores {
    pub fn summary(&self) -> String {
        let class_match = self.class_match.map(|m| format!(", class match {:.1}%", 100.0 * m)).unwrap_or_default();
        format!("Fréchet distance {:.3} over {} samples{class_match}", self.frechet, self.samples)
    }
}

/// Scores a generator against real images with a classifier run named in the config
/// (`eval.classifier`) or on the command line.
pub struct SampleScorer {
    classifier: LoadedClassifier,
    real: FeatureStats,
    /// Conditional GANs: the classifier's label of each GAN class.
    class_map: Option<Vec<usize>>,
    samples: usize,
    latent: usize,
    device: Device,
}

impl SampleScorer {
    /// Loads the classifier and the features of up to `eval.samples` images of `real`.
    pub fn new(classifier_run: &Path, real: &ImageSet, classes: &[String], config: &GenerationConfig, device: &Device) -> Result<Self> {
        let trained = ImageRun::open(classifier_run).map_err(|e| anyhow::anyhow!("eval.classifier: {e:#}"))?;
        ensure!(
            trained.config.data.image == config.data.image,
            "eval.classifier {} takes {:?} images, the generator makes {:?}",
            classifier_run.display(),
            trained.config.data.image,
            config.data.image
        );
        let class_map = match config.model.conditional {
            false => None,
            true => Some(classes.iter().map(|c| trained.classes.iter().position(|k| k == c)).collect::<Option<Vec<_>>>().ok_or_else(|| {
                anyhow::anyhow!(
                    "eval.classifier {} knows the classes {:?}, which do not include all of the generator's {:?}",
                    classifier_run.display(),
                    trained.classes,
                    classes
                )
            })?),
        };
        let classifier = trained.classifier(device)?;
        let samples = config.eval_settings().samples.min(real.len());
        ensure!(samples >= 2, "the Fréchet distance needs at least 2 real images, got {}", real.len());
        let indices: Vec<usize> = (0..samples).collect();
        let real_set = Arc::new(real.subset(&indices));
        let mut rows = Vec::new();
        for batch in ImageBatches::ordered(real_set, CHUNK, PixelRange::Unit, device.clone()).batches(0) {
            rows.extend(features(&classifier, batch.images));
        }
        let dim = rows.len() / samples;
        Ok(Self { classifier, real: FeatureStats::from_rows(&rows, dim), class_map, samples, latent: config.model.latent(), device: device.clone() })
    }

    /// Generates as many images as there are real ones with a GAN (classes in turn when
    /// conditional) and scores them.
    pub fn score(&self, generator: &Generator, seed: u64) -> Result<SampleScores> {
        self.score_by(|noise, labels| (generator.forward(noise, labels) + 1.0) / 2.0, seed)
    }

    /// Scores images made by `generate` from seeded N(0, I) noise (and class labels when
    /// conditional); `generate` returns pixels in [0, 1].
    pub fn score_by(&self, generate: impl Fn(Tensor<2>, Option<Tensor<1, Int>>) -> Tensor<4>, seed: u64) -> Result<SampleScores> {
        let (mut rows, mut matched) = (Vec::new(), 0usize);
        for start in (0..self.samples).step_by(CHUNK) {
            let n = CHUNK.min(self.samples - start);
            let noise = normal_noise(n, self.latent, seed.wrapping_add(start as u64), &self.device);
            let wanted: Option<Vec<usize>> = self.class_map.as_ref().map(|map| (start..start + n).map(|i| i % map.len()).collect());
            let labels = wanted.as_ref().map(|w| labels_tensor(w, &self.device));
            let images = generate(noise, labels);
            rows.extend(features(&self.classifier, images.clone()));
            if let (Some(wanted), Some(map)) = (&wanted, &self.class_map) {
                let predicted = self.classifier.logits(images).argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().expect("labels");
                matched += wanted.iter().zip(predicted).filter(|&(&w, p)| map[w] as i64 == p).count();
            }
        }
        let generated = FeatureStats::from_rows(&rows, rows.len() / self.samples);
        Ok(SampleScores {
            frechet: frechet_distance(&generated, &self.real),
            class_match: self.class_map.as_ref().map(|_| matched as f64 / self.samples as f64),
            samples: self.samples,
        })
    }
}

fn features(classifier: &LoadedClassifier, images: Tensor<4>) -> Vec<f32> {
    classifier.features(images).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 features")
}

pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(values, [labels.len()]), device)
}
