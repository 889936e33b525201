//! torchvision's image backbones (ResNet-18/34/50, MobileNetV3), built in burn with torchvision's
//! parameter names so that its weights load from `.safetensors` or `.pth` files and export back.
//!
//! - [`resnet`] and [`mobilenet`]: the networks.
//! - [`Backbone`]: either, with ImageNet normalisation in front, freezing and learning-rate groups.
//! - [`load_torchvision`] / [`save_torchvision`]: weights in torchvision's layout.

pub mod mobilenet;
pub mod resnet;

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::{ApplyResult, KeyRemapper, ModuleSnapshot, PathFilter, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use burn::tensor::Gradients;
use vitrine_core::classifier::ClassifierModel;
use vitrine_core::export::{WeightsFormat, export_weights_renamed};

pub use mobilenet::{Mobilenet, MobilenetSize};
pub use resnet::{Resnet, ResnetDepth};

/// ImageNet's channel means and standard deviations, which torchvision's weights expect.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Images in [0, 1] normalised as torchvision's pretrained weights expect; grey images are
/// repeated to three channels.
pub fn imagenet_normalize(x: Tensor<4>) -> Tensor<4> {
    let x = if x.dims()[1] == 1 { x.repeat_dim(1, 3) } else { x };
    let device = x.device();
    let mean = Tensor::<1>::from_floats(IMAGENET_MEAN, &device).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(IMAGENET_STD, &device).reshape([1, 3, 1, 1]);
    (x - mean) / std
}

/// A torchvision name and this crate's name for the same module (prefixes of parameter names).
#[derive(Debug, Clone)]
pub struct NamePair {
    torch: String,
    ours: String,
}

impl NamePair {
    pub fn new(torch: impl Into<String>, ours: impl Into<String>) -> Self {
        Self { torch: torch.into(), ours: ours.into() }
    }

    fn pattern(prefix: &str) -> String {
        format!("^{}\\.", regex_escape(prefix))
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// A torchvision network with ImageNet normalisation in front: the image family's pretrained
/// models.
#[derive(Module, Debug)]
pub enum Backbone {
    Resnet(Resnet),
    Mobilenet(Mobilenet),
}

impl Backbone {
    /// Logits of images in [0, 1] (normalised here).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_normalized(imagenet_normalize(x))
    }

    /// Logits of images already normalised, exactly as torchvision's `forward`.
    pub fn forward_normalized(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Resnet(m) => m.forward(x),
            Self::Mobilenet(m) => m.forward(x),
        }
    }

    /// The activations before the classification layer, of images in [0, 1].
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = imagenet_normalize(x);
        match self {
            Self::Resnet(m) => m.features(x),
            Self::Mobilenet(m) => m.features(x),
        }
    }

    /// The first `n` stages frozen; `n` past the last stage freezes everything but the head.
    pub fn freeze(self, n: usize) -> Self {
        match self {
            Self::Resnet(m) => Self::Resnet(m.freeze(n)),
            Self::Mobilenet(m) => Self::Mobilenet(m.freeze(n)),
        }
    }

    fn head(&self) -> &burn::nn::Linear {
        match self {
            Self::Resnet(m) => m.head(),
            Self::Mobilenet(m) => m.head(),
        }
    }

    /// Everything but the head trains at `factor` times the run's learning rate.
    pub fn with_backbone_lr(self, factor: f64) -> Self {
        match self {
            Self::Resnet(mut m) => {
                m.backbone_lr = factor;
                Self::Resnet(m)
            }
            Self::Mobilenet(mut m) => {
                m.backbone_lr = factor;
                Self::Mobilenet(m)
            }
        }
    }

    fn backbone_lr(&self) -> f64 {
        match self {
            Self::Resnet(m) => m.backbone_lr,
            Self::Mobilenet(m) => m.backbone_lr,
        }
    }

    fn name_pairs(&self) -> Vec<NamePair> {
        match self {
            Self::Resnet(m) => m.name_pairs(),
            Self::Mobilenet(m) => m.name_pairs(),
        }
    }
}

/// Loads torchvision weights (a `state_dict` as `.safetensors`, or a `.pth`/`.pt` checkpoint) into
/// `model`. With `head`, the classification layer too (same class count); without, it keeps its
/// fresh initialisation for the run's classes. Anything else missing is an error.
pub fn load_torchvision(mut model: Backbone, path: &Path, head: bool) -> Result<Backbone> {
    if !path.is_file() {
        bail!("pretrained weights {} do not exist", path.display());
    }
    let remaps: Vec<(String, String)> = model.name_pairs().iter().map(|p| (NamePair::pattern(&p.torch), format!("{}.", p.ours))).collect();
    let remapper = KeyRemapper::from_patterns(remaps).expect("escaped prefixes are valid patterns");
    // The head is `fc` (ResNet) or `classifier` (MobileNet) in this crate's names.
    let not_head: fn(&str, &str) -> bool = |path, _| !path.split('.').any(|part| part == "fc" || part == "classifier");
    let filter = if head { PathFilter::all() } else { PathFilter::new().with_predicate(not_head) };
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
    let is_pickle = path.extension().is_some_and(|e| e == "pth" || e == "pt" || e == "bin");
    let result: ApplyResult = if is_pickle {
        let mut store = PytorchStore::from_file(path).map_indices_contiguous(false).allow_partial(true).remap(remapper).filter(filter);
        model.load_from(&mut store).map_err(|e| failed(&e))?
    } else {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .skip_enum_variants(true)
            .allow_partial(true)
            .remap(remapper)
            .filter(filter);
        model.load_from(&mut store).map_err(|e| failed(&e))?
    };
    let missing: Vec<&String> = result.missing.iter().map(|(name, _)| name).filter(|name| head || not_head(name, "")).collect();
    if !missing.is_empty() {
        bail!(
            "{}: not torchvision weights of this architecture and width: {} parameter(s) missing, e.g. {:?}",
            path.display(),
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    if !result.errors.is_empty() {
        bail!("{}: {:?}", path.display(), result.errors.iter().take(5).collect::<Vec<_>>());
    }
    Ok(model)
}

/// Writes `model` in `format`; safetensors files in torchvision's layout: its `state_dict` names,
/// linear weights `[out, in]`, batch norm `weight`/`bias`, so that torchvision's `load_state_dict`
/// takes it as it is; `metadata` goes into the file's header.
pub fn save_torchvision(model: &Backbone, format: WeightsFormat, out: &Path, metadata: &[(&str, String)]) -> Result<()> {
    // Applied in turn: reversed so that `classifier.` → `classifier.3.` runs before `hidden.` →
    // `classifier.0.` and never renames its result.
    let renames: Vec<(String, String)> = model.name_pairs().iter().rev().map(|p| (NamePair::pattern(&p.ours), format!("{}.", p.torch))).collect();
    export_weights_renamed(model, format, out, metadata, &renames)
}

impl ClassifierModel for Backbone {
    type Input = Tensor<4>;
    fn logits(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward(input)
    }

    /// The head at ×1, the rest at `backbone_lr` times the learning rate.
    fn learning_rate_groups(&self, grads: &mut Gradients) -> Vec<(f64, GradientsParams)> {
        if self.backbone_lr() == 1.0 {
            return vec![(1.0, GradientsParams::from_module(grads, self))];
        }
        let head = GradientsParams::from_module(grads, self.head());
        vec![(1.0, head), (self.backbone_lr(), GradientsParams::from_module(grads, self))]
    }
}

#[cfg(test)]
mod tests;
