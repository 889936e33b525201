//! torchvision's MobileNetV3 (large and small), layer for layer, so that torchvision's weights
//! load by name.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{hard_sigmoid, hard_swish, relu};
use vitrine_core::batch_norm::conv_batch_norm;
use vitrine_core::dropout::dropout;

use super::NamePair;

/// Which of the two published networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MobilenetSize {
    Large,
    Small,
}

/// One inverted-residual block of the published tables: input, kernel, expanded and output
/// channels, squeeze-and-excitation, hard-swish (else ReLU), stride.
struct BlockSpec(usize, usize, usize, usize, bool, bool, usize);

const LARGE: [BlockSpec; 15] = [
    BlockSpec(16, 3, 16, 16, false, false, 1),
    BlockSpec(16, 3, 64, 24, false, false, 2),
    BlockSpec(24, 3, 72, 24, false, false, 1),
    BlockSpec(24, 5, 72, 40, true, false, 2),
    BlockSpec(40, 5, 120, 40, true, false, 1),
    BlockSpec(40, 5, 120, 40, true, false, 1),
    BlockSpec(40, 3, 240, 80, false, true, 2),
    BlockSpec(80, 3, 200, 80, false, true, 1),
    BlockSpec(80, 3, 184, 80, false, true, 1),
    BlockSpec(80, 3, 184, 80, false, true, 1),
    BlockSpec(80, 3, 480, 112, true, true, 1),
    BlockSpec(112, 3, 672, 112, true, true, 1),
    BlockSpec(112, 5, 672, 160, true, true, 2),
    BlockSpec(160, 5, 960, 160, true, true, 1),
    BlockSpec(160, 5, 960, 160, true, true, 1),
];

const SMALL: [BlockSpec; 11] = [
    BlockSpec(16, 3, 16, 16, true, false, 2),
    BlockSpec(16, 3, 72, 24, false, false, 2),
    BlockSpec(24, 3, 88, 24, false, false, 1),
    BlockSpec(24, 5, 96, 40, true, true, 2),
    BlockSpec(40, 5, 240, 40, true, true, 1),
    BlockSpec(40, 5, 240, 40, true, true, 1),
    BlockSpec(40, 5, 120, 48, true, true, 1),
    BlockSpec(48, 5, 144, 48, true, true, 1),
    BlockSpec(48, 5, 288, 96, true, true, 2),
    BlockSpec(96, 5, 576, 96, true, true, 1),
    BlockSpec(96, 5, 576, 96, true, true, 1),
];

/// torchvision's `_make_divisible`: channels rounded to a multiple of 8, never down by over 10%.
fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let rounded = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v { rounded + divisor } else { rounded }
}

/// The activation after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    None,
    Relu,
    HardSwish,
}

/// torchvision's `Conv2dNormActivation`: convolution (`.0`), batch norm (`.1`), activation.
#[derive(Module, Debug)]
pub struct ConvNorm {
    conv: Conv2d,
    bn: BatchNorm,
    /// 0: none, 1: ReLU, 2: hard swish (a plain number: module fields are modules or numbers).
    activation: usize,
}

impl ConvNorm {
    fn new(input: usize, output: usize, kernel: usize, stride: usize, groups: usize, activation: Activation, device: &Device) -> Self {
        let pad = (kernel - 1) / 2;
        Self {
            conv: Conv2dConfig::new([input, output], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_groups(groups)
                .with_bias(false)
                .init(device),
            // MobileNetV3's batch norm: eps 0.001, momentum 0.01.
            bn: BatchNormConfig::new(output).with_epsilon(1e-3).with_momentum(0.01).init(device),
            activation: activation as usize,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv_batch_norm(&self.conv, &self.bn, x);
        match self.activation {
            1 => relu(x),
            2 => hard_swish(x),
            _ => x,
        }
    }
}

/// Squeeze and excitation: channel weights from the pooled activations (`fc1`, ReLU, `fc2`,
/// hard sigmoid).
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    fc1: Conv2d,
    fc2: Conv2d,
}

impl SqueezeExcitation {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let scale = x.clone().mean_dim(3).mean_dim(2); // [b, c, 1, 1]
        let scale = self.fc2.forward(relu(self.fc1.forward(scale)));
        x * hard_sigmoid(scale, 1.0 / 6.0, 0.5)
    }
}

/// torchvision's `InvertedResidual`: optional 1×1 expansion, depthwise convolution, optional
/// squeeze and excitation, 1×1 projection, and the identity shortcut where shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    expand: Option<ConvNorm>,
    depthwise: ConvNorm,
    se: Option<SqueezeExcitation>,
    project: ConvNorm,
    residual: bool,
}

impl InvertedResidual {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(y);
        }
        y = self.depthwise.forward(y);
        if let Some(se) = &self.se {
            y = se.forward(y);
        }
        y = self.project.forward(y);
        if self.residual { y + x } else { y }
    }

    /// torchvision's index in `block` of each part: (expand, depthwise, se, project).
    fn indices(&self) -> (Option<usize>, usize, Option<usize>, usize) {
        let depthwise = self.expand.is_some() as usize;
        let se = self.se.as_ref().map(|_| depthwise + 1);
        (self.expand.as_ref().map(|_| 0), depthwise, se, depthwise + 1 + se.is_some() as usize)
    }
}

/// torchvision's `MobileNetV3`: a stem (`features.0`), the inverted residual blocks, a 1×1
/// convolution (the last of `features`), global average pooling, and the classifier `Linear`,
/// hard swish, dropout, `Linear` (`classifier.0` and `classifier.3`).
#[derive(Module, Debug)]
pub struct Mobilenet {
    stem: ConvNorm,
    blocks: Vec<InvertedResidual>,
    last: ConvNorm,
    hidden: Linear,
    dropout: Dropout,
    classifier: Linear,
    /// The learning rate of everything but `classifier`, as a multiple of the run's (fine-tuning).
    pub(super) backbone_lr: f64,
}

impl Mobilenet {
    /// Channels scaled by `width_mult` as torchvision's `width_mult` does.
    pub fn new(size: MobilenetSize, width_mult: f64, classes: usize, dropout: f64, device: &Device) -> Self {
        let adjust = |c: usize| make_divisible(c as f64 * width_mult, 8);
        let (specs, last_channel): (&[BlockSpec], usize) = match size {
            MobilenetSize::Large => (&LARGE, 1280),
            MobilenetSize::Small => (&SMALL, 1024),
        };
        let blocks: Vec<InvertedResidual> = specs
            .iter()
            .map(|&BlockSpec(input, kernel, expanded, output, se, hs, stride)| {
                let (input, expanded, output) = (adjust(input), adjust(expanded), adjust(output));
                let act = if hs { Activation::HardSwish } else { Activation::Relu };
                InvertedResidual {
                    expand: (expanded != input).then(|| ConvNorm::new(input, expanded, 1, 1, 1, act, device)),
                    depthwise: ConvNorm::new(expanded, expanded, kernel, stride, expanded, act, device),
                    se: se.then(|| {
                        let squeeze = make_divisible((expanded / 4) as f64, 8);
                        SqueezeExcitation {
                            fc1: Conv2dConfig::new([expanded, squeeze], [1, 1]).init(device),
                            fc2: Conv2dConfig::new([squeeze, expanded], [1, 1]).init(device),
                        }
                    }),
                    project: ConvNorm::new(expanded, output, 1, 1, 1, Activation::None, device),
                    residual: stride == 1 && input == output,
                }
            })
            .collect();
        let first = adjust(specs[0].0);
        let last_input = adjust(specs[specs.len() - 1].3);
        let hidden = adjust(last_channel);
        Self {
            stem: ConvNorm::new(3, first, 3, 2, 1, Activation::HardSwish, device),
            blocks,
            last: ConvNorm::new(last_input, 6 * last_input, 1, 1, 1, Activation::HardSwish, device),
            hidden: LinearConfig::new(6 * last_input, hidden).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            classifier: LinearConfig::new(hidden, classes).init(device),
            backbone_lr: 1.0,
        }
    }

    /// Logits of ImageNet-normalised images `[b, 3, h, w]`, as torchvision's `forward`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, self.features(x)))
    }

    /// The activations before the last `Linear` (after `classifier.0` and hard swish).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let pooled = self.last.forward(x).mean_dim(3).mean_dim(2).flatten(1, 3);
        hard_swish(self.hidden.forward(pooled))
    }

    /// The first `n` of (stem, blocks...) frozen, and with `n` past the blocks the last
    /// convolution and `classifier.0` too (the whole backbone).
    pub fn freeze(mut self, n: usize) -> Self {
        if n >= 1 {
            self.stem = self.stem.no_grad();
        }
        self.blocks = self.blocks.into_iter().enumerate().map(|(i, b)| if n >= i + 2 { b.no_grad() } else { b }).collect();
        if n > self.blocks.len() + 1 {
            self.last = self.last.no_grad();
            self.hidden = self.hidden.no_grad();
        }
        self
    }

    pub fn head(&self) -> &Linear {
        &self.classifier
    }

    /// torchvision's names for this module's: `features.N[.block.M].0/.1`, `classifier.0/.3`.
    pub fn name_pairs(&self) -> Vec<NamePair> {
        let conv_norm =
            |torch: &str, ours: &str| [NamePair::new(format!("{torch}.0"), format!("{ours}.conv")), NamePair::new(format!("{torch}.1"), format!("{ours}.bn"))];
        let mut pairs: Vec<NamePair> = conv_norm("features.0", "stem").into();
        for (b, block) in self.blocks.iter().enumerate() {
            let (torch, ours) = (format!("features.{}.block", b + 1), format!("blocks.{b}"));
            let (expand, depthwise, se, project) = block.indices();
            if let Some(i) = expand {
                pairs.extend(conv_norm(&format!("{torch}.{i}"), &format!("{ours}.expand")));
            }
            pairs.extend(conv_norm(&format!("{torch}.{depthwise}"), &format!("{ours}.depthwise")));
            if let Some(i) = se {
                pairs.push(NamePair::new(format!("{torch}.{i}"), format!("{ours}.se")));
            }
            pairs.extend(conv_norm(&format!("{torch}.{project}"), &format!("{ours}.project")));
        }
        pairs.extend(conv_norm(&format!("features.{}", self.blocks.len() + 1), "last"));
        pairs.push(NamePair::new("classifier.0", "hidden"));
        pairs.push(NamePair::new("classifier.3", "classifier"));
        pairs
    }
}
