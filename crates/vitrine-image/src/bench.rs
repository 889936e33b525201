//! Throughput of an image classifier on one device: on random data of Fashion-MNIST's shape (the
//! torchvision backbones: 3×224×224), or streamed from a folder of photos, where the loader alone
//! is timed too so that users see whether decoding or the model is the limit.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::Distribution;
use vitrine_core::backend::{ComputeDevice, on_compute_pool};
use vitrine_core::bench::{BenchResult, Timing, read_back};
use vitrine_core::classifier::{ClassifierModel, ClassifierTask};
use vitrine_core::config::{Augment, ImageShape, OptimizerConfig};
use vitrine_core::data::{BatchSource, ImageBatch, ImageBatches, PixelRange, load_folder};
use vitrine_core::reporter::Silent;
use vitrine_core::train::{TrainTask, build_optimizer};

use crate::config::{Architecture, ImageModelConfig};
use crate::model::{FashionCnn, ResnetSmall};
use crate::training::build_backbone;

/// Times training steps and inference batches of `arch`; see [`Timing`].
pub fn bench(arch: Architecture, compute: &ComputeDevice, batch_size: Option<usize>, timing: Timing) -> Result<BenchResult> {
    // The torchvision backbones at full width on ImageNet-sized photos; the others on Fashion-MNIST.
    let (shape, batch_size) = match arch.is_torchvision() {
        true => (ImageShape { channels: 3, height: 224, width: 224 }, batch_size.unwrap_or(32)),
        false => (ImageShape::default(), batch_size.unwrap_or(128)),
    };
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
        _ => timing.measure(arch.name(), build_backbone(&ImageModelConfig::of(arch), 10, &train_device), train, images, compute),
    })
}

/// Times `arch` on photos streamed from `folder` (one sub-folder per class) at `size`×`size` RGB
/// with random-resized-crop and flip: the loader alone, then training and inference fed by it.
pub fn bench_folder(arch: Architecture, folder: &Path, size: usize, compute: &ComputeDevice, batch_size: Option<usize>, timing: Timing) -> Result<BenchResult> {
    if !compute.replicas.is_empty() {
        bail!("--data times the streaming loader on one device; leave out --data to time data-parallel training over --devices");
    }
    let shape = ImageShape { channels: 3, height: size, width: size };
    let batch_size = batch_size.unwrap_or(32);
    let (set, _) = load_folder(folder, shape, None, false, true, &Silent)?;
    let (images, classes) = (set.len(), set.classes.len());
    let set = Arc::new(set);
    let augment = Augment { flip: true, resized_crop: true, ..Augment::default() };
    let train_device = compute.device.clone().autodiff();
    train_device.seed(0);
    let training = ImageBatches::shuffled(set.clone(), batch_size, 0, augment, PixelRange::Unit, train_device.clone());
    let inference = ImageBatches::ordered(set, batch_size, PixelRange::Unit, compute.device.clone());
    let loader = batches_per_sec(&training, timing, |_| ()) * batch_size as f64;
    let mut result = match arch {
        Architecture::FashionCnn => streamed(arch, FashionCnn::new(shape, classes, 0.25, &train_device), &training, &inference, timing, compute),
        Architecture::ResnetSmall => streamed(arch, ResnetSmall::new(shape, classes, 0.25, &train_device), &training, &inference, timing, compute),
        _ => streamed(arch, build_backbone(&ImageModelConfig::of(arch), classes, &train_device), &training, &inference, timing, compute),
    };
    result.extra.insert("loader_images_per_sec".into(), loader.into());
    result.extra.insert("data".into(), folder.display().to_string().into());
    result.extra.insert("images".into(), images.into());
    result.extra.insert("image_size".into(), size.into());
    Ok(result)
}

/// Training and inference of `model` fed by the streaming loader.
fn streamed<M: ClassifierModel<Input = Tensor<4>>>(
    arch: Architecture,
    model: M,
    training: &ImageBatches,
    inference: &ImageBatches,
    timing: Timing,
    compute: &ComputeDevice,
) -> BenchResult {
    let mut task = ClassifierTask::<M, ImageBatch>::new(model, build_optimizer(&OptimizerConfig::default(), None), training.device());
    // Each batch comes from the loader's channel first: only the steps run where flex computes.
    let train = batches_per_sec(training, timing, |batch| {
        let _: f32 = task.train_step_on(training.device(), batch, 1e-3).loss_sum.into_scalar();
    });
    let model = task.model().valid();
    let infer = batches_per_sec(inference, timing, |batch| {
        on_compute_pool(inference.device(), || read_back(model.logits(batch.images)));
    });
    BenchResult::new(arch.name(), compute, training.batch_size(), train, infer)
}

/// Batches per second through `step` (see [`Timing::rate`]), fed by `source` epoch after epoch.
fn batches_per_sec(source: &ImageBatches, timing: Timing, mut step: impl FnMut(ImageBatch)) -> f64 {
    let mut epoch = 0;
    let mut batches = source.batches(epoch);
    timing.rate(|| {
        let batch = batches.next().unwrap_or_else(|| {
            epoch += 1;
            batches = source.batches(epoch);
            batches.next().expect("a loaded folder has images")
        });
        step(batch);
    })
}
