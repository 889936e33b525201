//! Throughput of an image classifier on one device: training steps and inference.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::classifier::ClassifierModel;
use vitrine_core::config::{ImageShape, OptimizerConfig};
use vitrine_core::data::ImageBatch;
use vitrine_core::train::{TrainTask, build_optimizer};
use vitrine_core::classifier::ClassifierTask;

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

/// Times `steps` training steps (forward, backward, Adam) and `steps` inference batches after
/// `warmup` untimed ones, on random data of Fashion-MNIST's shape. Each step waits for its result.
pub fn bench(arch: Architecture, compute: &ComputeDevice, batch_size: usize, warmup: usize, steps: usize) -> Result<BenchResult> {
    let shape = ImageShape::default();
    let device = compute.device.clone();
    let train_device = device.clone().autodiff();
    train_device.seed(0);
    let (train, infer) = match arch {
        Architecture::FashionCnn => {
            let model = FashionCnn::new(shape, 10, 0.25, &train_device);
            time(model, &train_device, &device, shape, batch_size, warmup, steps)
        }
        Architecture::ResnetSmall => {
            let model = ResnetSmall::new(shape, 10, 0.25, &train_device);
            time(model, &train_device, &device, shape, batch_size, warmup, steps)
        }
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

fn time<M: ClassifierModel<Input = Tensor<4>>>(
    model: M,
    train_device: &Device,
    device: &Device,
    shape: ImageShape,
    batch_size: usize,
    warmup: usize,
    steps: usize,
) -> (f64, f64) {
    let batch = |device: &Device| ImageBatch {
        images: Tensor::random([batch_size, shape.channels, shape.height, shape.width], Distribution::Uniform(0.0, 1.0), device),
        targets: Tensor::<1, Int>::random([batch_size], Distribution::Uniform(0.0, 10.0), device),
    };
    let mut task = ClassifierTask::new(model, build_optimizer(&OptimizerConfig::default(), None), train_device);
    let mut train_rate = 0.0;
    for (round, n) in [(0, warmup), (1, steps)] {
        let started = Instant::now();
        for _ in 0..n {
            let stats = task.train_step(batch(train_device), 1e-3);
            let _: f32 = stats.loss_sum.into_scalar();
        }
        if round == 1 {
            train_rate = (n * batch_size) as f64 / started.elapsed().as_secs_f64();
        }
    }
    let model = task.model().valid();
    let mut infer_rate = 0.0;
    for (round, n) in [(0, warmup), (1, steps)] {
        let started = Instant::now();
        for _ in 0..n {
            let _ = model.logits(batch(device).images).into_data();
        }
        if round == 1 {
            infer_rate = (n * batch_size) as f64 / started.elapsed().as_secs_f64();
        }
    }
    (train_rate, infer_rate)
}
