//! Throughput of an image classifier on one device: training steps and inference.

use std::time::{Duration, Instant};

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::classifier::{ClassifierModel, ClassifierTask};
use vitrine_core::config::{ImageShape, OptimizerConfig};
use vitrine_core::data::ImageBatch;
use vitrine_core::train::{TrainTask, build_optimizer};

use crate::model::{Architecture, FashionCnn, ResnetSmall};

/// Measured throughput of one model on one device.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub backend: String,
    pub device: String,
    pub batch_size: usize,
    pub train_samples_per_sec: f64,
    pub inference_samples_per_sec: f64,
}

/// Times training steps (forward, backward, Adam) and inference batches on random data of
/// Fashion-MNIST's shape, after `warmup` untimed ones: up to `steps` of each, stopping early once
/// `budget` has passed (slow backends still report after two steps). Each step waits for its result.
pub fn bench(
    arch: Architecture,
    compute: &ComputeDevice,
    batch_size: usize,
    warmup: usize,
    steps: usize,
    budget: Duration,
) -> Result<BenchResult> {
    let shape = ImageShape::default();
    let device = compute.device.clone();
    let train_device = device.clone().autodiff();
    train_device.seed(0);
    let timing = Timing { batch_size, warmup, steps, budget };
    let (train, infer) = match arch {
        Architecture::FashionCnn => timing.run(FashionCnn::new(shape, 10, 0.25, &train_device), &train_device, &device, shape),
        Architecture::ResnetSmall => timing.run(ResnetSmall::new(shape, 10, 0.25, &train_device), &train_device, &device, shape),
    };
    Ok(BenchResult {
        model: arch.name().into(),
        backend: compute.backend.to_string(),
        device: compute.description.clone(),
        batch_size,
        train_samples_per_sec: train,
        inference_samples_per_sec: infer,
    })
}

struct Timing {
    batch_size: usize,
    warmup: usize,
    steps: usize,
    budget: Duration,
}

impl Timing {
    /// Samples per second of `step`.
    fn rate(&self, mut step: impl FnMut()) -> f64 {
        for _ in 0..self.warmup {
            step();
        }
        let started = Instant::now();
        let mut done = 0;
        while done < self.steps.max(1) && (done < 2 || started.elapsed() < self.budget) {
            step();
            done += 1;
        }
        (done * self.batch_size) as f64 / started.elapsed().as_secs_f64()
    }

    fn run<M: ClassifierModel<Input = Tensor<4>>>(&self, model: M, train_device: &Device, device: &Device, shape: ImageShape) -> (f64, f64) {
        let batch = |device: &Device| ImageBatch {
            images: Tensor::random([self.batch_size, shape.channels, shape.height, shape.width], Distribution::Uniform(0.0, 1.0), device),
            targets: Tensor::<1, Int>::random([self.batch_size], Distribution::Uniform(0.0, 10.0), device),
        };
        let mut task = ClassifierTask::new(model, build_optimizer(&OptimizerConfig::default(), None), train_device);
        let train_batch = batch(train_device);
        let train = self.rate(|| {
            let _: f32 = task.train_step(train_batch.clone(), 1e-3).loss_sum.into_scalar();
        });
        let model = task.model().valid();
        let images = batch(device).images;
        let infer = self.rate(|| {
            let _ = model.logits(images.clone()).into_data();
        });
        (train, infer)
    }
}
