//! Throughput of an image classifier on one device, on random data of Fashion-MNIST's shape.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::Distribution;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::bench::{BenchResult, Timing};
use vitrine_core::config::ImageShape;
use vitrine_core::data::ImageBatch;

use crate::config::Architecture;
use crate::model::{FashionCnn, ResnetSmall};

/// Times training steps and inference batches of `arch`; see [`Timing`].
pub fn bench(arch: Architecture, compute: &ComputeDevice, batch_size: usize, timing: Timing) -> Result<BenchResult> {
    let shape = ImageShape::default();
    let train_device = compute.device.clone().autodiff();
    train_device.seed(0);
    let batch = |device: &Device| ImageBatch {
        images: Tensor::random([batch_size, shape.channels, shape.height, shape.width], Distribution::Uniform(0.0, 1.0), device),
        targets: Tensor::<1, Int>::random([batch_size], Distribution::Uniform(0.0, 10.0), device),
    };
    let (train, images) = (batch(&train_device), batch(&compute.device).images);
    Ok(match arch {
        Architecture::FashionCnn => timing.measure(arch.name(), FashionCnn::new(shape, 10, 0.25, &train_device), train, images, compute),
        Architecture::ResnetSmall => timing.measure(arch.name(), ResnetSmall::new(shape, 10, 0.25, &train_device), train, images, compute),
    })
}
