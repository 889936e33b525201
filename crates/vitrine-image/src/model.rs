//! The product-image classifiers: `fashion-cnn` (the reference) and `resnet-small`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use vitrine_core::batch_norm::{conv_batch_norm, conv_batch_norm_relu};
use vitrine_core::classifier::ClassifierModel;
use vitrine_core::config::ImageShape;
use vitrine_core::dropout::dropout;

use crate::config::DEFAULT_WIDTH;

fn conv3x3(input: usize, output: usize, stride: usize, bias: bool) -> Conv2dConfig {
    Conv2dConfig::new([input, output], [3, 3]).with_stride([stride, stride]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).with_bias(bias)
}

/// `fashion-cnn`, field names matching the PyTorch module in the README (`conv1`, `bn1`, ...)
/// so exported safetensors load into it directly.
#[derive(Module, Debug)]
pub struct FashionCnn {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    conv4: Conv2d,
    bn4: BatchNorm,
    pool: MaxPool2d,
    dropout: Dropout,
    fc1: Linear,
    fc2: Linear,
}

impl FashionCnn {
    pub fn new(shape: ImageShape, classes: usize, dropout: f64, device: &Device) -> Self {
        let flat = 64 * (shape.height / 4) * (shape.width / 4);
        Self {
            conv1: conv3x3(shape.channels, 32, 1, true).init(device),
            bn1: BatchNormConfig::new(32).init(device),
            conv2: conv3x3(32, 32, 1, true).init(device),
            bn2: BatchNormConfig::new(32).init(device),
            conv3: conv3x3(32, 64, 1, true).init(device),
            bn3: BatchNormConfig::new(64).init(device),
            conv4: conv3x3(64, 64, 1, true).init(device),
            bn4: BatchNormConfig::new(64).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            dropout: DropoutConfig::new(dropout).init(),
            fc1: LinearConfig::new(flat, 256).init(device),
            fc2: LinearConfig::new(256, classes).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.features(x);
        self.fc2.forward(dropout(&self.dropout, x)) // [b, classes]
    }

    /// The penultimate layer's activations `[b, 256]`: the feature space of Fréchet distances.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = conv_batch_norm_relu(&self.conv1, &self.bn1, x, None); // [b, 32, h, w]
        let x = conv_batch_norm_relu(&self.conv2, &self.bn2, x, None);
        let x = self.pool.forward(x); // [b, 32, h/2, w/2]
        let x = conv_batch_norm_relu(&self.conv3, &self.bn3, x, None); // [b, 64, h/2, w/2]
        let x = conv_batch_norm_relu(&self.conv4, &self.bn4, x, None);
        let x = self.pool.forward(x); // [b, 64, h/4, w/4]
        let x: Tensor<2> = x.flatten(1, 3); // [b, 3136] for 28×28
        relu(self.fc1.forward(dropout(&self.dropout, x))) // [b, 256]
    }
}

/// Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<Conv2d>,
    shortcut_bn: Option<BatchNorm>,
}

impl BasicBlock {
    fn new(input: usize, output: usize, stride: usize, device: &Device) -> Self {
        let project = stride != 1 || input != output;
        Self {
            conv1: conv3x3(input, output, stride, false).init(device),
            bn1: BatchNormConfig::new(output).init(device),
            conv2: conv3x3(output, output, 1, false).init(device),
            bn2: BatchNormConfig::new(output).init(device),
            shortcut: project.then(|| Conv2dConfig::new([input, output], [1, 1]).with_stride([stride, stride]).with_bias(false).init(device)),
            shortcut_bn: project.then(|| BatchNormConfig::new(output).init(device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv_batch_norm_relu(&self.conv1, &self.bn1, x.clone(), None);
        let skip = match (&self.shortcut, &self.shortcut_bn) {
            (Some(conv), Some(bn)) => conv_batch_norm(conv, bn, x),
            _ => x,
        };
        conv_batch_norm_relu(&self.conv2, &self.bn2, y, Some(skip))
    }
}

/// `resnet-small`: a stem and three stages of two residual blocks (32, 64, 128 channels),
/// global average pooling and one linear layer.
#[derive(Module, Debug)]
pub struct ResnetSmall {
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    dropout: Dropout,
    fc: Linear,
}

impl ResnetSmall {
    pub fn new(shape: ImageShape, classes: usize, dropout: f64, device: &Device) -> Self {
        Self::with_width(shape, classes, dropout, DEFAULT_WIDTH, device)
    }

    /// Stages of `w`, `2w` and `4w` channels (`w` = 32: 0.7 M parameters; 48: 1.6 M).
    pub fn with_width(shape: ImageShape, classes: usize, dropout: f64, w: usize, device: &Device) -> Self {
        let plan = [(w, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)];
        Self {
            stem: conv3x3(shape.channels, w, 1, false).init(device),
            stem_bn: BatchNormConfig::new(w).init(device),
            blocks: plan.iter().map(|&(i, o, s)| BasicBlock::new(i, o, s, device)).collect(),
            dropout: DropoutConfig::new(dropout).init(),
            fc: LinearConfig::new(4 * w, classes).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(dropout(&self.dropout, self.features(x))) // [b, classes]
    }

    /// The globally pooled activations `[b, 4w]` before the classifier layer.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = conv_batch_norm_relu(&self.stem, &self.stem_bn, x, None); // [b, w, h, w]
        for block in &self.blocks {
            x = block.forward(x); // down to [b, 4w, h/4, w/4]
        }
        x.mean_dim(3).mean_dim(2).flatten(1, 3) // [b, 4w]
    }
}

impl ClassifierModel for FashionCnn {
    type Input = Tensor<4>;
    fn logits(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward(input)
    }
}

impl ClassifierModel for ResnetSmall {
    type Input = Tensor<4>;
    fn logits(&self, input: Tensor<4>) -> Tensor<2> {
        self.forward(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_network_has_the_documented_size_and_shapes() {
        let device = Device::flex();
        let shape = ImageShape::default();
        let cnn = FashionCnn::new(shape, 10, 0.25, &device);
        // Convs, batch-norm scales and shifts, the two linear layers: PyTorch's 871,018
        // trainable parameters. `num_params` also counts the batch-norm running statistics.
        let trainable = 320 + 9248 + 18496 + 36928 + 2 * (32 + 32 + 64 + 64) + 803_072 + 2570;
        assert_eq!(trainable, 871_018);
        assert_eq!(cnn.num_params(), trainable + 2 * (32 + 32 + 64 + 64));
        let x = Tensor::<4>::zeros([3, 1, 28, 28], &device);
        assert_eq!(cnn.forward(x.clone()).dims(), [3, 10]);
        let resnet = ResnetSmall::new(shape, 10, 0.0, &device);
        assert!(resnet.num_params() < 2_000_000, "{}", resnet.num_params());
        assert_eq!(resnet.forward(x).dims(), [3, 10]);
    }

    #[test]
    fn colour_inputs_of_other_sizes_work() {
        let device = Device::flex();
        let shape = ImageShape { channels: 3, height: 32, width: 32 };
        let x = Tensor::<4>::zeros([2, 3, 32, 32], &device);
        assert_eq!(FashionCnn::new(shape, 4, 0.25, &device).forward(x.clone()).dims(), [2, 4]);
        assert_eq!(ResnetSmall::new(shape, 4, 0.25, &device).forward(x).dims(), [2, 4]);
    }
}
