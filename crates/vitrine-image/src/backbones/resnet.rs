//! torchvision's ResNet-18, -34 and -50 (v1.5: a bottleneck's stride on its 3×3 convolution),
//! layer for layer, so that torchvision's weights load by name.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use vitrine_core::batch_norm::{conv_batch_norm, conv_batch_norm_relu};
use vitrine_core::dropout::dropout;

use super::NamePair;

/// How deep, and with which block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResnetDepth {
    R18,
    R34,
    R50,
}

impl ResnetDepth {
    /// Blocks per stage, and whether they are bottlenecks (1×1, 3×3, 1×1 with 4× expansion).
    fn plan(self) -> ([usize; 4], bool) {
        match self {
            Self::R18 => ([2, 2, 2, 2], false),
            Self::R34 => ([3, 4, 6, 3], false),
            Self::R50 => ([3, 4, 6, 3], true),
        }
    }
}

fn conv(input: usize, output: usize, kernel: usize, stride: usize) -> Conv2dConfig {
    let pad = kernel / 2;
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
}

/// A 1×1 convolution and batch norm on the shortcut (torchvision's `downsample.0` and `.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// torchvision's `BasicBlock` (no `conv3`) or `Bottleneck`.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Option<Conv2d>,
    bn3: Option<BatchNorm>,
    downsample: Option<Downsample>,
}

impl ResidualBlock {
    fn new(input: usize, planes: usize, stride: usize, bottleneck: bool, device: &Device) -> Self {
        let output = if bottleneck { 4 * planes } else { planes };
        let downsample = (stride != 1 || input != output)
            .then(|| Downsample { conv: conv(input, output, 1, stride).init(device), bn: BatchNormConfig::new(output).init(device) });
        let (conv1, conv2) = match bottleneck {
            true => (conv(input, planes, 1, 1), conv(planes, planes, 3, stride)),
            false => (conv(input, planes, 3, stride), conv(planes, planes, 3, 1)),
        };
        Self {
            conv1: conv1.init(device),
            bn1: BatchNormConfig::new(planes).init(device),
            conv2: conv2.init(device),
            bn2: BatchNormConfig::new(planes).init(device),
            conv3: bottleneck.then(|| conv(planes, output, 1, 1).init(device)),
            bn3: bottleneck.then(|| BatchNormConfig::new(output).init(device)),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = conv_batch_norm_relu(&self.conv1, &self.bn1, x.clone(), None);
        let (last, last_bn) = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                y = conv_batch_norm_relu(&self.conv2, &self.bn2, y, None);
                (conv3, bn3)
            }
            _ => (&self.conv2, &self.bn2),
        };
        let skip = match &self.downsample {
            Some(d) => conv_batch_norm(&d.conv, &d.bn, x),
            None => x,
        };
        conv_batch_norm_relu(last, last_bn, y, Some(skip))
    }
}

/// torchvision's `ResNet`: a 7×7 stem, max pooling, four stages, global average pooling and `fc`
/// (with dropout before it, which torchvision does not have and which eval mode skips).
#[derive(Module, Debug)]
pub struct Resnet {
    conv1: Conv2d,
    bn1: BatchNorm,
    maxpool: MaxPool2d,
    layer1: Vec<ResidualBlock>,
    layer2: Vec<ResidualBlock>,
    layer3: Vec<ResidualBlock>,
    layer4: Vec<ResidualBlock>,
    dropout: Dropout,
    fc: Linear,
    /// The learning rate of everything but `fc`, as a multiple of the run's (fine-tuning).
    pub(super) backbone_lr: f64,
}

impl Resnet {
    /// `width` channels in the first stage (torchvision: 64), doubling at each stage.
    pub fn new(depth: ResnetDepth, width: usize, classes: usize, dropout: f64, device: &Device) -> Self {
        let (blocks, bottleneck) = depth.plan();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut input = width;
        let mut stage = |index: usize| -> Vec<ResidualBlock> {
            let planes = width << index;
            (0..blocks[index])
                .map(|b| {
                    let stride = if b == 0 && index > 0 { 2 } else { 1 };
                    let block = ResidualBlock::new(input, planes, stride, bottleneck, device);
                    input = planes * expansion;
                    block
                })
                .collect()
        };
        let (layer1, layer2, layer3, layer4) = (stage(0), stage(1), stage(2), stage(3));
        Self {
            conv1: Conv2dConfig::new([3, width], [7, 7]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3)).with_bias(false).init(device),
            bn1: BatchNormConfig::new(width).init(device),
            maxpool: MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(),
            layer1,
            layer2,
            layer3,
            layer4,
            dropout: DropoutConfig::new(dropout).init(),
            fc: LinearConfig::new(8 * width * expansion, classes).init(device),
            backbone_lr: 1.0,
        }
    }

    /// Logits of ImageNet-normalised images `[b, 3, h, w]`, as torchvision's `forward`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(dropout(&self.dropout, self.features(x)))
    }

    /// The globally pooled activations before `fc`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.maxpool.forward(conv_batch_norm_relu(&self.conv1, &self.bn1, x, None)); // [b, w, h/4, w/4]
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = block.forward(x); // down to [b, 8w·e, h/32, w/32]
        }
        x.mean_dim(3).mean_dim(2).flatten(1, 3)
    }

    /// The first `n` of (stem, layer1, ..., layer4) frozen: no gradients flow into them.
    pub fn freeze(mut self, n: usize) -> Self {
        if n >= 1 {
            self.conv1 = self.conv1.no_grad();
            self.bn1 = self.bn1.no_grad();
        }
        for (i, layer) in [&mut self.layer1, &mut self.layer2, &mut self.layer3, &mut self.layer4].into_iter().enumerate() {
            if n >= i + 2 {
                *layer = std::mem::take(layer).into_iter().map(Module::no_grad).collect();
            }
        }
        self
    }

    /// The classification head, which a fine-tuning run replaces.
    pub fn head(&self) -> &Linear {
        &self.fc
    }

    /// torchvision's names that differ from this module's: each shortcut's `downsample.0/.1`.
    pub fn name_pairs(&self) -> Vec<NamePair> {
        let mut pairs = Vec::new();
        for (l, layer) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4].into_iter().enumerate() {
            for (b, block) in layer.iter().enumerate() {
                if block.downsample.is_some() {
                    let prefix = format!("layer{}.{b}.downsample", l + 1);
                    pairs.push(NamePair::new(format!("{prefix}.0"), format!("{prefix}.conv")));
                    pairs.push(NamePair::new(format!("{prefix}.1"), format!("{prefix}.bn")));
                }
            }
        }
        pairs
    }
}
