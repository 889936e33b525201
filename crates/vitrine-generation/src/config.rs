//! The generation family's config: the shared image `[data]` section, the generators' `[model]`
//! section, and `[eval]`, how generated images are scored.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use vitrine_core::config::{ConfigFile, ExperimentConfig, ImageDataSection, ModelSection};

/// The `task` value of generation configs.
pub const TASK: &str = "image-generation";

/// A whole generation experiment.
pub type GenerationConfig = ExperimentConfig<ImageDataSection, GenerationModelConfig>;

/// Reads a generation config with its model's defaults and `--set` overrides, and checks it.
pub fn resolve(file: &ConfigFile, overrides: &[String]) -> Result<GenerationConfig> {
    let mut config = GenerationConfig::from_file(file, overrides)?;
    check(&config).with_context(|| format!("in config {}", file.path.display()))?;
    config.model.latent = Some(config.model.latent());
    Ok(config)
}

fn check(config: &GenerationConfig) -> Result<()> {
    let (m, shape) = (&config.model, config.data.image);
    ensure!(
        shape.height % 4 == 0 && shape.width % 4 == 0,
        "data.image height and width must be multiples of 4 for {} (two stride-2 layers), got {}x{}",
        m.name.name(),
        shape.height,
        shape.width
    );
    ensure!(m.latent() > 0, "model.latent must be at least 1");
    ensure!(!m.variational || m.name == Architecture::ConvAe, "model.variational applies to conv-ae only");
    ensure!(!m.conditional || m.name == Architecture::Dcgan, "model.conditional applies to dcgan only");
    ensure!(m.kl_weight >= 0.0 && m.kl_weight.is_finite(), "model.kl_weight must be 0 or more, got {}", m.kl_weight);
    if m.name == Architecture::Dcgan && (config.train.early_stopping.is_some() || config.train.restore_best) {
        bail!(
            "train.early_stopping and train.restore_best watch the validation loss, which for a GAN does not \
             measure sample quality; remove them (the Fréchet distance per epoch is in metrics.csv)"
        );
    }
    Ok(())
}

/// Scoring generated images in the feature space of a trained image classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// A Vitrine image-classifier run (e.g. `runs/fashion-cnn`) whose penultimate layer is the
    /// feature space of the Fréchet distance, and whose predictions check conditional samples.
    pub classifier: Option<PathBuf>,
    /// Generated and real images compared each time.
    pub samples: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self { classifier: None, samples: 2000 }
    }
}

/// Which generator to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// The convolutional autoencoder (pixels in [0, 1], MSE loss).
    #[serde(rename = "conv-ae")]
    ConvAe,
    /// The DCGAN (pixels in [-1, 1], binary cross-entropy on logits).
    #[serde(rename = "dcgan")]
    Dcgan,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Self::ConvAe, Self::Dcgan];

    pub fn name(self) -> &'static str {
        match self {
            Self::ConvAe => "conv-ae",
            Self::Dcgan => "dcgan",
        }
    }

    /// The reference size of the code (autoencoder) or noise vector (GAN).
    pub fn default_latent(self) -> usize {
        match self {
            Self::ConvAe => 32,
            Self::Dcgan => 64,
        }
    }
}

/// The `[model]` section of a generation config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationModelConfig {
    pub name: Architecture,
    /// Size of the code (conv-ae, default 32) or of the noise vector (dcgan, default 64).
    #[serde(default)]
    pub latent: Option<usize>,
    /// conv-ae: a variational autoencoder (the encoder gives a mean and a log-variance).
    #[serde(default)]
    pub variational: bool,
    /// conv-ae with `variational`: weight of the KL term (see [`kl_per_pixel`]).
    #[serde(default = "default_kl_weight")]
    pub kl_weight: f64,
    /// dcgan: condition the generator and the discriminator on the class label.
    #[serde(default)]
    pub conditional: bool,
}

impl ModelSection for GenerationModelConfig {
    type Eval = EvalSection;
    const TAKES_EVAL_SECTION: bool = true;

    /// Each model's reference recipe: the autoencoder's Adam 1e-3 for 10 epochs, the GAN's Adam
    /// 2e-4 with β₁ = 0.5 for 20.
    fn defaults(model: Option<&str>) -> &'static [&'static str] {
        match model {
            Some(name) if name == Architecture::Dcgan.name() => &["train.epochs=20", "train.optimizer.lr=2e-4", "train.optimizer.beta1=0.5"],
            _ => &["train.epochs=10"],
        }
    }
}

fn default_kl_weight() -> f64 {
    1.0
}

impl GenerationModelConfig {
    pub fn latent(&self) -> usize {
        self.latent.unwrap_or(self.name.default_latent())
    }
}
