//! The image classifiers' config: the shared image `[data]` section and this family's `[model]`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use vitrine_core::config::{ConfigFile, ExperimentConfig, ImageDataSection, ModelSection, NoEval};

/// The `task` value of image-classification configs.
pub const TASK: &str = "image-classification";

/// A whole image-classification experiment.
pub type ImageConfig = ExperimentConfig<ImageDataSection, ImageModelConfig>;

/// Reads an image-classification config with `--set` overrides.
pub fn resolve(file: &ConfigFile, overrides: &[String]) -> Result<ImageConfig> {
    let config = ImageConfig::from_file(file, overrides)?;
    let m = &config.model;
    let name = m.name.name();
    if !m.name.is_torchvision() {
        let set: Vec<&str> = [
            ("model.pretrained", m.pretrained.is_some()),
            ("model.freeze_stages", m.freeze_stages > 0),
            ("model.freeze_backbone", m.freeze_backbone),
            ("model.backbone_lr", m.backbone_lr.is_some()),
            ("model.width_mult", m.width_mult != 1.0),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect();
        if !set.is_empty() {
            bail!("{}: {} appl(y) to the torchvision backbones ({}) only, not {name}", file.path.display(), set.join(", "), TORCHVISION.join(", "));
        }
    }
    if let Some(lr) = m.backbone_lr.filter(|lr| !(0.0..=1.0).contains(lr)) {
        bail!("{}: model.backbone_lr is a factor of the head's learning rate between 0 and 1, got {lr}", file.path.display());
    }
    if !(m.width_mult > 0.0) || (m.width_mult != 1.0 && !matches!(m.name, Architecture::MobilenetV3Large | Architecture::MobilenetV3Small)) {
        bail!("{}: model.width_mult applies to the MobileNetV3s and must be positive, got {}", file.path.display(), m.width_mult);
    }
    Ok(config)
}

/// The architectures built as torchvision builds them, which load its weights.
pub const TORCHVISION: [&str; 5] = ["resnet18", "resnet34", "resnet50", "mobilenet-v3-large", "mobilenet-v3-small"];

/// Fine-tuning where a config is silent: a few epochs at Adam's 1e-3 for the new head, the best
/// epoch kept.
const FINE_TUNING_DEFAULTS: &[&str] = &["train.epochs=5", "train.batch_size=32", "train.restore_best=true", "model.dropout=0.2"];

/// Which network to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// The reference network of `reference-models.md` (about 0.87 M parameters).
    #[serde(rename = "fashion-cnn")]
    FashionCnn,
    /// A small residual network for the best accuracy (about 0.7 M parameters, ~5x the compute).
    #[serde(rename = "resnet-small")]
    ResnetSmall,
    /// torchvision's ResNet-18 (11.7 M parameters at full width), for pretrained weights.
    #[serde(rename = "resnet18")]
    Resnet18,
    /// torchvision's ResNet-34 (21.8 M).
    #[serde(rename = "resnet34")]
    Resnet34,
    /// torchvision's ResNet-50 (25.6 M, bottleneck blocks).
    #[serde(rename = "resnet50")]
    Resnet50,
    /// torchvision's MobileNetV3-Large (5.5 M).
    #[serde(rename = "mobilenet-v3-large")]
    MobilenetV3Large,
    /// torchvision's MobileNetV3-Small (2.5 M).
    #[serde(rename = "mobilenet-v3-small")]
    MobilenetV3Small,
}

impl Architecture {
    pub const ALL: [Architecture; 7] =
        [Self::FashionCnn, Self::ResnetSmall, Self::Resnet18, Self::Resnet34, Self::Resnet50, Self::MobilenetV3Large, Self::MobilenetV3Small];

    pub fn name(self) -> &'static str {
        match self {
            Self::FashionCnn => "fashion-cnn",
            Self::ResnetSmall => "resnet-small",
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
            Self::Resnet50 => "resnet50",
            Self::MobilenetV3Large => "mobilenet-v3-large",
            Self::MobilenetV3Small => "mobilenet-v3-small",
        }
    }

    /// Whether torchvision builds it (and its weights load).
    pub fn is_torchvision(self) -> bool {
        TORCHVISION.contains(&self.name())
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
    /// Channels of the first stage (each next stage doubles them): `resnet-small` 32, the
    /// torchvision ResNets 64 unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// MobileNetV3: torchvision's `width_mult` (channels scaled and rounded to multiples of 8).
    #[serde(default = "one")]
    pub width_mult: f64,
    /// torchvision weights to start from: a `state_dict` as `.safetensors`, or a `.pth` file.
    /// Every layer but the classification head is loaded; the head is new, for the run's classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Freeze the first N stages (the stem counts as one; ResNets have 5, MobileNets 1 + blocks).
    #[serde(default)]
    pub freeze_stages: usize,
    /// Freeze everything but the new classification head.
    #[serde(default)]
    pub freeze_backbone: bool,
    /// The backbone's learning rate as a factor of the head's (`train.optimizer.lr`): 0.1 with
    /// `pretrained` unless set, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_lr: Option<f64>,
}

impl ImageModelConfig {
    /// `arch` with every setting at its default.
    pub fn of(arch: Architecture) -> Self {
        Self {
            name: arch,
            dropout: default_dropout(),
            width: None,
            width_mult: 1.0,
            pretrained: None,
            freeze_stages: 0,
            freeze_backbone: false,
            backbone_lr: None,
        }
    }

    /// The first stage's channels.
    pub fn width(&self) -> usize {
        self.width.unwrap_or(if self.name == Architecture::ResnetSmall { DEFAULT_WIDTH } else { 64 })
    }

    /// The backbone's learning-rate factor.
    pub fn backbone_lr(&self) -> f64 {
        self.backbone_lr.unwrap_or(if self.pretrained.is_some() { 0.1 } else { 1.0 })
    }
}

impl ModelSection for ImageModelConfig {
    type Eval = NoEval;

    fn defaults(model: Option<&str>) -> &'static [&'static str] {
        match model {
            Some(name) if TORCHVISION.contains(&name) => FINE_TUNING_DEFAULTS,
            _ => &[],
        }
    }
}

/// `resnet-small`'s first-stage channels unless the config says otherwise.
pub const DEFAULT_WIDTH: usize = 32;

fn one() -> f64 {
    1.0
}

fn default_dropout() -> f64 {
    0.25
}
