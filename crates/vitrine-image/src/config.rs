//! The image classifiers' config: the shared image `[data]` section and this family's `[model]`.

use serde::{Deserialize, Serialize};
use vitrine_core::config::{ConfigFile, ExperimentConfig, ImageDataSection, ModelSection, NoEval};

/// The `task` value of image-classification configs.
pub const TASK: &str = "image-classification";

/// A whole image-classification experiment.
pub type ImageConfig = ExperimentConfig<ImageDataSection, ImageModelConfig>;

/// Reads an image-classification config with `--set` overrides.
pub fn resolve(file: &ConfigFile, overrides: &[String]) -> anyhow::Result<ImageConfig> {
    ImageConfig::from_file(file, overrides)
}

/// Which network to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// The reference network of `reference-models.md` (about 0.87 M parameters).
    #[serde(rename = "fashion-cnn")]
    FashionCnn,
    /// A small residual network for the best accuracy (about 0.7 M parameters, ~5x the compute).
    #[serde(rename = "resnet-small")]
    ResnetSmall,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Self::FashionCnn, Self::ResnetSmall];

    pub fn name(self) -> &'static str {
        match self {
            Self::FashionCnn => "fashion-cnn",
            Self::ResnetSmall => "resnet-small",
        }
    }
}

/// The `[model]` section of an image-classification config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageModelConfig {
    pub name: Architecture,
    /// Dropout before the classifier layers (the reference uses 0.25).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// `resnet-small`: channels of its first stage (the next two have 2× and 4×).
    #[serde(default = "default_width")]
    pub width: usize,
}

impl ModelSection for ImageModelConfig {
    type Eval = NoEval;
}

/// `resnet-small`'s first-stage channels unless the config says otherwise.
pub const DEFAULT_WIDTH: usize = 32;

fn default_width() -> usize {
    DEFAULT_WIDTH
}

fn default_dropout() -> f64 {
    0.25
}

