//! Throughput of a generator on one device, on random data of Fashion-MNIST's shape.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::Distribution;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::bench::{BenchResult, Timing, read_back};
use vitrine_core::config::ImageShape;
use vitrine_core::data::ImageBatch;
use vitrine_core::train::TrainTask;

use crate::autoencoder::AutoencoderTask;
use crate::config::{Architecture, GenerationConfig};
use crate::gan::GanTask;
use crate::model::{ConvAe, Gan};
use crate::scoring::normal_noise;

/// Times training steps (for the GAN: a discriminator and a generator step) and inference
/// (autoencoder: reconstruction; GAN: generation) of `arch`; see [`Timing`].
pub fn bench(arch: Architecture, compute: &ComputeDevice, batch_size: usize, timing: Timing) -> Result<BenchResult> {
    let shape = ImageShape::default();
    let config =
        GenerationConfig::parse(&format!("task = \"image-generation\"\n[data]\ntrain = {{ folder = \".\" }}\n[model]\nname = \"{}\"", arch.name()), &[])?;
    let train_device = compute.device.clone().autodiff();
    train_device.seed(0);
    let images = |device: &Device| Tensor::<4>::random([batch_size, 1, 28, 28], Distribution::Uniform(0.0, 1.0), device);
    let batch = ImageBatch { images: images(&train_device), targets: Tensor::zeros([batch_size], &train_device) };
    let wait = |stats: vitrine_core::train::StepStats| {
        let _: f32 = stats.loss_sum.into_scalar();
    };
    let (train, infer) = match arch {
        Architecture::ConvAe => {
            let model = ConvAe::new(shape, arch.default_latent(), false, &train_device);
            let mut task = AutoencoderTask::new(model, &config, images(&compute.device));
            let train = timing.train_rate_on(&train_device, || wait(task.train_step(batch.clone(), 1e-3)));
            let model = task.model.valid();
            let input = images(&compute.device);
            (train, timing.rate_on(&compute.device, || read_back(model.forward(input.clone(), false).images)))
        }
        Architecture::Dcgan => {
            let gan = Gan::new(shape, arch.default_latent(), None, &train_device);
            let mut task = GanTask::new(gan, &config, 1, None, &compute.device);
            let train = timing.train_rate_on(&train_device, || wait(task.train_step(batch.clone(), 2e-4)));
            let generator = task.gan.valid().generator;
            let noise = normal_noise(batch_size, arch.default_latent(), 0, &compute.device);
            (train, timing.rate_on(&compute.device, || read_back(generator.forward(noise.clone(), None))))
        }
    };
    Ok(BenchResult::new(arch.name(), compute, batch_size, train, infer))
}
