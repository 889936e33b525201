//! The generators of `reference-models.md`: `conv-ae` (optionally a VAE) and `dcgan`
//! (optionally class-conditional). Field names follow the PyTorch modules in the README, so
//! exported safetensors load into them.

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{relu, sigmoid, tanh};
use vitrine_core::activation::leaky_relu;
use vitrine_core::batch_norm::{conv_batch_norm, conv_transpose_batch_norm_relu};
use vitrine_core::config::ImageShape;

/// Size of the learnt label embedding concatenated to the GAN's noise vector.
pub const LABEL_DIM: usize = 16;

fn down(input: usize, output: usize) -> Conv2dConfig {
    Conv2dConfig::new([input, output], [4, 4]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
}

fn up(input: usize, output: usize) -> ConvTranspose2dConfig {
    ConvTranspose2dConfig::new([input, output], [4, 4]).with_stride([2, 2]).with_padding([1, 1])
}

/// `conv-ae`: two stride-2 convolutions and a linear code; the decoder mirrors them.
#[derive(Module, Debug)]
pub struct ConvAe {
    conv1: Conv2d,
    conv2: Conv2d,
    /// The code (the mean of a VAE's code).
    fc_mu: Linear,
    /// A VAE's log-variance of the code.
    fc_logvar: Option<Linear>,
    fc_decode: Linear,
    deconv1: ConvTranspose2d,
    deconv2: ConvTranspose2d,
    height: usize,
    width: usize,
}

/// What the autoencoder made of a batch.
pub struct Reconstruction {
    pub images: Tensor<4>,
    /// A VAE's KL divergence from the unit Gaussian, per example `[batch]`.
    pub kl: Option<Tensor<1>>,
}

impl ConvAe {
    /// `shape`'s height and width must be multiples of 4.
    pub fn new(shape: ImageShape, latent: usize, variational: bool, device: &Device) -> Self {
        let (height, width) = (shape.height / 4, shape.width / 4);
        let flat = 64 * height * width;
        Self {
            conv1: down(shape.channels, 32).init(device),
            conv2: down(32, 64).init(device),
            fc_mu: LinearConfig::new(flat, latent).init(device),
            fc_logvar: variational.then(|| LinearConfig::new(flat, latent).init(device)),
            fc_decode: LinearConfig::new(latent, flat).init(device),
            deconv1: up(64, 32).init(device),
            deconv2: up(32, shape.channels).init(device),
            height,
            width,
        }
    }

    pub fn is_variational(&self) -> bool {
        self.fc_logvar.is_some()
    }

    fn encoded(&self, x: Tensor<4>) -> Tensor<2> {
        let x = relu(self.conv1.forward(x)); // [b, 32, h/2, w/2]
        let x = relu(self.conv2.forward(x)); // [b, 64, h/4, w/4]
        x.flatten(1, 3) // [b, 3136] for 28×28
    }

    /// The code of each image `[b, latent]` (a VAE's mean).
    pub fn encode(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc_mu.forward(self.encoded(x))
    }

    /// Images in [0, 1] from codes.
    pub fn decode(&self, z: Tensor<2>) -> Tensor<4> {
        let b = z.dims()[0];
        let x = relu(self.fc_decode.forward(z)).reshape([b, 64, self.height, self.width]);
        let x = relu(self.deconv1.forward(x)); // [b, 32, h/2, w/2]
        sigmoid(self.deconv2.forward(x)) // [b, c, h, w]
    }

    /// Reconstructs a batch; a VAE samples its code (reparameterised) when `sample` is set and
    /// uses the mean otherwise.
    pub fn forward(&self, x: Tensor<4>, sample: bool) -> Reconstruction {
        let h = self.encoded(x);
        let mu = self.fc_mu.forward(h.clone());
        let Some(fc_logvar) = &self.fc_logvar else {
            return Reconstruction { images: self.decode(mu), kl: None };
        };
        let logvar = fc_logvar.forward(h).clamp(-20.0, 20.0);
        // KL(N(mu, sigma²) || N(0, 1)) summed over the code.
        let kl = (mu.clone().powi_scalar(2) + logvar.clone().exp() - logvar.clone() - 1.0).sum_dim(1).mul_scalar(0.5);
        let z = if sample {
            let noise = Tensor::random(mu.shape(), Distribution::Normal(0.0, 1.0), &mu.device());
            mu + logvar.mul_scalar(0.5).exp() * noise
        } else {
            mu
        };
        Reconstruction { images: self.decode(z), kl: Some(kl.flatten(0, 1)) }
    }
}

/// The VAE's KL term on the scale of a per-pixel MSE: with `kl_weight = 1`, MSE + this is the
/// negative ELBO (per pixel) of a Gaussian decoder with variance ½.
pub fn kl_per_pixel(kl_mean: Tensor<1>, shape: ImageShape, kl_weight: f64) -> Tensor<1> {
    kl_mean.mul_scalar(kl_weight / shape.pixels() as f64)
}

/// The DCGAN generator: noise (and a label embedding) → 128×h/4×w/4 → two transposed
/// convolutions → tanh.
#[derive(Module, Debug)]
pub struct Generator {
    label_embedding: Option<Embedding>,
    fc: Linear,
    bn0: BatchNorm,
    deconv1: ConvTranspose2d,
    bn1: BatchNorm,
    deconv2: ConvTranspose2d,
    height: usize,
    width: usize,
}

impl Generator {
    pub fn new(shape: ImageShape, latent: usize, classes: Option<usize>, device: &Device) -> Self {
        let (height, width) = (shape.height / 4, shape.width / 4);
        let input = latent + if classes.is_some() { LABEL_DIM } else { 0 };
        Self {
            label_embedding: classes.map(|n| EmbeddingConfig::new(n, LABEL_DIM).init(device)),
            fc: LinearConfig::new(input, 128 * height * width).init(device),
            bn0: BatchNormConfig::new(128 * height * width).init(device),
            deconv1: up(128, 64).init(device),
            bn1: BatchNormConfig::new(64).init(device),
            deconv2: up(64, shape.channels).init(device),
            height,
            width,
        }
    }

    /// Images in [-1, 1] from noise `[b, latent]` and, when conditional, labels `[b]`.
    pub fn forward(&self, z: Tensor<2>, labels: Option<Tensor<1, Int>>) -> Tensor<4> {
        let b = z.dims()[0];
        let z = match (&self.label_embedding, labels) {
            (Some(embedding), Some(labels)) => {
                let e: Tensor<2> = embedding.forward(labels.unsqueeze_dim(1)).flatten(1, 2); // [b, LABEL_DIM]
                Tensor::cat(vec![z, e], 1)
            }
            _ => z,
        };
        let x = relu(self.bn0.forward(self.fc.forward(z))).reshape([b, 128, self.height, self.width]);
        let x = conv_transpose_batch_norm_relu(&self.deconv1, &self.bn1, x); // [b, 64, h/2, w/2]
        tanh(self.deconv2.forward(x)) // [b, c, h, w]
    }
}

/// The DCGAN discriminator: two stride-2 convolutions with leaky ReLU, one logit. When
/// conditional, the label is embedded as an extra image channel.
#[derive(Module, Debug)]
pub struct Discriminator {
    label_embedding: Option<Embedding>,
    conv1: Conv2d,
    conv2: Conv2d,
    bn2: BatchNorm,
    fc: Linear,
    height: usize,
    width: usize,
}

impl Discriminator {
    pub fn new(shape: ImageShape, classes: Option<usize>, device: &Device) -> Self {
        let extra = usize::from(classes.is_some());
        Self {
            label_embedding: classes.map(|n| EmbeddingConfig::new(n, shape.height * shape.width).init(device)),
            conv1: down(shape.channels + extra, 64).init(device),
            conv2: down(64, 128).init(device),
            bn2: BatchNormConfig::new(128).init(device),
            fc: LinearConfig::new(128 * (shape.height / 4) * (shape.width / 4), 1).init(device),
            height: shape.height,
            width: shape.width,
        }
    }

    /// Real-vs-fake logits `[b]` of images in [-1, 1].
    pub fn forward(&self, x: Tensor<4>, labels: Option<Tensor<1, Int>>) -> Tensor<1> {
        let b = x.dims()[0];
        let x = match (&self.label_embedding, labels) {
            (Some(embedding), Some(labels)) => {
                let plane = embedding.forward(labels.unsqueeze_dim(1)).reshape([b, 1, self.height, self.width]);
                Tensor::cat(vec![x, plane], 1)
            }
            _ => x,
        };
        let x = leaky_relu(self.conv1.forward(x), 0.2); // [b, 64, h/2, w/2]
        let x = leaky_relu(conv_batch_norm(&self.conv2, &self.bn2, x), 0.2); // [b, 128, h/4, w/4]
        let flat: Tensor<2> = x.flatten(1, 3);
        self.fc.forward(flat).flatten(0, 1)
    }
}

/// Both networks of a GAN, saved and exported together (`generator.*`, `discriminator.*`).
#[derive(Module, Debug)]
pub struct Gan {
    pub generator: Generator,
    pub discriminator: Discriminator,
}

impl Gan {
    pub fn new(shape: ImageShape, latent: usize, classes: Option<usize>, device: &Device) -> Self {
        Self { generator: Generator::new(shape, latent, classes, device), discriminator: Discriminator::new(shape, classes, device) }
    }

    pub fn is_conditional(&self) -> bool {
        self.generator.label_embedding.is_some()
    }
}
