//! The autoencoder's training task: MSE (plus a VAE's KL term), one optimizer, and each
//! epoch's grid of validation images above their reconstructions.

use std::path::Path;

use anyhow::Result;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use vitrine_core::backend::on_compute_pool;
use vitrine_core::config::ImageShape;
use vitrine_core::data::{BatchSource, ImageBatch, ImageBatches, ImageSplits};
use vitrine_core::run_dir::RunDir;
use vitrine_core::train::{
    Built, Metric, PassTotals, StepStats, TrainContext, TrainTask, build_optimizer, load_module, load_optimizer, save_module, save_optimizer, sum_steps,
};

use crate::config::GenerationConfig;
use crate::data::{held_out, pixel_range};
use crate::grid::{GRID_COLUMNS, ImageBatchData, sample_grid_name, save_grid};
use crate::model::{ConvAe, Reconstruction, kl_per_pixel};
use crate::task::GeneratorTask;

/// A VAE's two parts of the loss, reported beside it.
const MSE: Metric = Metric::loss("mse");
const KL: Metric = Metric::loss("kl");
/// Validation images shown above their reconstructions.
const PREVIEW_IMAGES: usize = 16;
/// Images per batch when scoring reconstructions.
const SCORING_BATCH: usize = 256;

/// The autoencoder with its optimizer.
pub struct AutoencoderTask {
    pub model: ConvAe,
    optimizer: Option<ModuleOptimizer>,
    shape: ImageShape,
    kl_weight: f64,
    /// Validation images (inference device) drawn above their reconstructions every epoch.
    preview: Tensor<4>,
}

/// The loss to minimise (MSE per pixel, plus a VAE's weighted KL term) and its stats.
fn autoencoder_loss(out: Reconstruction, target: Tensor<4>, shape: ImageShape, kl_weight: f64) -> (Tensor<1>, StepStats) {
    let count = target.dims()[0];
    let mse = (out.images - target).powi_scalar(2).mean();
    let Some(kl) = out.kl else {
        return (mse.clone(), StepStats::loss(mse.detach().mul_scalar(count as f32), count));
    };
    let kl = kl_per_pixel(kl.mean(), shape, kl_weight);
    let loss = mse.clone() + kl.clone();
    let mut stats = StepStats::loss(loss.clone().detach().mul_scalar(count as f32), count);
    stats.extra = vec![(MSE, mse.detach().mul_scalar(count as f32)), (KL, kl.detach().mul_scalar(count as f32))];
    (loss, stats)
}

impl AutoencoderTask {
    /// `model` must live on an autodiff device, `preview` on its inner device.
    pub fn new(model: ConvAe, config: &GenerationConfig, preview: Tensor<4>) -> Self {
        let optimizer = build_optimizer(&config.train.optimizer, config.train.grad_clip_norm);
        Self { model, optimizer: Some(optimizer), shape: config.data.image, kl_weight: config.model.kl_weight, preview }
    }
}

impl TrainTask for AutoencoderTask {
    type Batch = ImageBatch;

    fn train_step(&mut self, batch: ImageBatch, lr: f64) -> StepStats {
        let x = batch.images;
        let out = self.model.forward(x.clone(), true);
        let (loss, stats) = autoencoder_loss(out, x, self.shape, self.kl_weight);
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let optimizer = self.optimizer.as_mut().expect("optimizer present between steps");
        self.model = optimizer.step(lr, self.model.clone(), grads);
        stats
    }

    fn validate(&self, batches: &mut dyn Iterator<Item = ImageBatch>) -> PassTotals {
        let model = self.model.valid();
        sum_steps(
            batches.map(|b| {
                on_compute_pool(&b.images.device(), || autoencoder_loss(model.forward(b.images.clone(), false), b.images, self.shape, self.kl_weight).1)
            }),
        )
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_weights(&dir.join("model.bpk"))?;
        save_optimizer(&self.optimizer, &dir.join("optimizer.bpk"))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.load_weights(&dir.join("model.bpk"))?;
        load_optimizer(&mut self.optimizer, &dir.join("optimizer.bpk"))
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        save_module(&self.model, path)
    }

    fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.model = load_module(self.model.clone(), path)?;
        Ok(())
    }

    fn end_epoch(&mut self, epoch: usize, run: &RunDir) -> Result<Vec<(Metric, f64)>> {
        let originals = self.preview.clone();
        let reconstructions = self.model.valid().forward(originals.clone(), false).images;
        save_grid(&ImageBatchData::from_tensor(above(originals, reconstructions)), GRID_COLUMNS, 2, &run.file(&sample_grid_name(epoch)))?;
        Ok(Vec::new())
    }
}

/// Rows of `GRID_COLUMNS` originals, each above the row of their reconstructions (a short last
/// row is filled with grey).
pub fn above(originals: Tensor<4>, reconstructions: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = originals.dims();
    let mut rows = Vec::new();
    for start in (0..n).step_by(GRID_COLUMNS) {
        let end = (start + GRID_COLUMNS).min(n);
        for images in [&originals, &reconstructions] {
            rows.push(images.clone().slice(start..end));
            if end - start < GRID_COLUMNS {
                rows.push(Tensor::full([GRID_COLUMNS - (end - start), c, h, w], 0.5, &originals.device()));
            }
        }
    }
    Tensor::cat(rows, 0)
}

impl GeneratorTask for AutoencoderTask {
    fn build(config: &GenerationConfig, data: &ImageSplits, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self>> {
        let m = &config.model;
        let model = ConvAe::new(config.data.image, m.latent(), m.variational, train_device);
        let parameters = model.num_params();
        let preview = ImageBatches::ordered(data.valid.clone(), PREVIEW_IMAGES, pixel_range(m.name), ctx.compute.device.clone())
            .batches(0)
            .next()
            .expect("validation data is not empty")
            .images;
        let description = format!("conv-ae{}", if m.variational { ", variational" } else { "" });
        Ok(Built { task: AutoencoderTask::new(model, config, preview), description, parameters })
    }

    fn evaluate(&self, config: &GenerationConfig, data: &ImageSplits, ctx: &TrainContext) -> Result<Vec<(String, f64)>> {
        let (name, images) = held_out(data);
        let batches = ImageBatches::ordered(images, SCORING_BATCH, pixel_range(config.model.name), ctx.compute.device.clone());
        let mse = reconstruction_mse(&self.model.valid(), &batches);
        ctx.reporter.info(&format!("{name}: MSE {mse:.5}, PSNR {:.2} dB", psnr(mse)));
        Ok(vec![(format!("{name} MSE"), mse), (format!("{name} PSNR (dB)"), psnr(mse))])
    }
}

/// Mean squared error per pixel of the autoencoder's reconstructions of `batches` (mean codes).
pub fn reconstruction_mse(model: &ConvAe, batches: &ImageBatches) -> f64 {
    let (mut sum, mut pixels) = (0.0f64, 0usize);
    for batch in batches.batches(0) {
        let x = batch.images;
        pixels += x.shape().num_elements();
        let recon = model.forward(x.clone(), false).images;
        sum += (recon - x).powi_scalar(2).sum().into_scalar::<f32>() as f64;
    }
    sum / pixels.max(1) as f64
}

/// Peak signal-to-noise ratio of pixels in [0, 1].
pub fn psnr(mse: f64) -> f64 {
    10.0 * (1.0 / mse.max(1e-12)).log10()
}
