//! The GAN's training task: a discriminator step then a generator step per batch, one Adam
//! optimizer per network, and each epoch's sample grid and (with a classifier) Fréchet distance.

use std::path::Path;

use anyhow::Result;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softplus;
use vitrine_core::backend::on_compute_pool;
use vitrine_core::data::{ImageBatch, ImageSplits};
use vitrine_core::run_dir::RunDir;
use vitrine_core::train::{
    Built, Metric, PassTotals, StepStats, TrainContext, TrainTask, build_optimizer, load_module, load_optimizer, save_module, save_optimizer, sum_steps,
};

use crate::config::GenerationConfig;
use crate::data::held_out;
use crate::grid::{GRID_COLUMNS, ImageBatchData, sample_grid_name, save_grid};
use crate::model::Gan;
use crate::scoring::{SampleScorer, normal_noise};
use crate::task::GeneratorTask;

/// The generator's loss, reported beside the discriminator's (the main loss).
const G_LOSS: Metric = Metric::loss("g_loss");
/// Sample quality after each epoch (with `eval.classifier`).
const FRECHET: Metric = Metric::lower("frechet");
const CLASS_MATCH: Metric = Metric::higher("class_match");

/// The GAN with one optimizer per network.
pub struct GanTask {
    pub gan: Gan,
    optimizer_g: Option<ModuleOptimizer>,
    optimizer_d: Option<ModuleOptimizer>,
    latent: usize,
    /// Noise (and labels) of the per-epoch sample grid, fixed so grids compare across epochs.
    fixed_noise: Tensor<2>,
    fixed_labels: Option<Tensor<1, Int>>,
    scorer: Option<SampleScorer>,
    seed: u64,
}

/// Binary cross-entropy of logits against all-ones (`real`) or all-zeros targets, averaged.
fn bce_logits(logits: Tensor<1>, real: bool) -> Tensor<1> {
    let signed = if real { logits.neg() } else { logits };
    softplus(signed, 1.0).mean()
}

impl GanTask {
    pub fn new(gan: Gan, config: &GenerationConfig, classes: usize, scorer: Option<SampleScorer>, device: &Device) -> Self {
        let conditional = gan.is_conditional();
        // Conditional: one row per class; else an 8×8 grid.
        let rows = if conditional { classes } else { GRID_COLUMNS };
        let latent = config.model.latent();
        let fixed_noise = normal_noise(rows * GRID_COLUMNS, latent, config.run.seed, device);
        let fixed_labels = conditional.then(|| {
            let labels: Vec<i64> = (0..rows * GRID_COLUMNS).map(|i| (i / GRID_COLUMNS) as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(labels, [rows * GRID_COLUMNS]), device)
        });
        let optimizer = || build_optimizer(&config.train.optimizer, config.train.grad_clip_norm);
        Self { gan, optimizer_g: Some(optimizer()), optimizer_d: Some(optimizer()), latent, fixed_noise, fixed_labels, scorer, seed: config.run.seed }
    }

    fn labels(&self, batch_targets: Tensor<1, Int>) -> Option<Tensor<1, Int>> {
        self.gan.is_conditional().then_some(batch_targets)
    }

    /// Discriminator and generator losses of a batch, without training (inference mode).
    fn losses(gan: &Gan, real: Tensor<4>, labels: Option<Tensor<1, Int>>, latent: usize) -> (Tensor<1>, Tensor<1>) {
        let b = real.dims()[0];
        let noise = Tensor::random([b, latent], Distribution::Normal(0.0, 1.0), &real.device());
        let fake = gan.generator.forward(noise, labels.clone());
        let d_real = gan.discriminator.forward(real, labels.clone());
        let d_fake = gan.discriminator.forward(fake, labels);
        let loss_d = bce_logits(d_real, true) + bce_logits(d_fake.clone(), false);
        (loss_d, bce_logits(d_fake, true))
    }
}

impl TrainTask for GanTask {
    type Batch = ImageBatch;

    fn train_step(&mut self, batch: ImageBatch, lr: f64) -> StepStats {
        let real = batch.images;
        let labels = self.labels(batch.targets);
        let b = real.dims()[0];
        let device = real.device();
        let noise = || Tensor::random([b, self.latent], Distribution::Normal(0.0, 1.0), &device);

        // Discriminator: real images towards 1, generated ones (no generator gradient) towards 0.
        let fake = self.gan.generator.forward(noise(), labels.clone()).detach();
        let d = &self.gan.discriminator;
        let loss_d = bce_logits(d.forward(real, labels.clone()), true) + bce_logits(d.forward(fake, labels.clone()), false);
        let grads = GradientsParams::from_grads(loss_d.backward(), &self.gan.discriminator);
        let optimizer = self.optimizer_d.as_mut().expect("optimizer present between steps");
        self.gan.discriminator = optimizer.step(lr, self.gan.discriminator.clone(), grads);

        // Generator: make the updated discriminator call its images real. The gradient flows
        // through the discriminator's input only: its weight gradients, which this step would
        // discard, are not computed (PyTorch Lightning's `toggle_optimizer` does the same).
        // Its batch norm still updates its statistics. (`no_grad` on a clone leaves the
        // original's parameters as they are once initialized, as they are by the step above.)
        let fake = self.gan.generator.forward(noise(), labels.clone());
        let frozen = self.gan.discriminator.clone().no_grad();
        let loss_g = bce_logits(frozen.forward(fake, labels), true);
        let grads = GradientsParams::from_grads(loss_g.backward(), &self.gan.generator);
        let optimizer = self.optimizer_g.as_mut().expect("optimizer present between steps");
        self.gan.generator = optimizer.step(lr, self.gan.generator.clone(), grads);

        let mut stats = StepStats::loss(loss_d.detach().mul_scalar(b as f32), b);
        stats.extra = vec![(G_LOSS, loss_g.detach().mul_scalar(b as f32))];
        stats
    }

    fn validate(&self, batches: &mut dyn Iterator<Item = ImageBatch>) -> PassTotals {
        let gan = self.gan.valid();
        sum_steps(batches.map(|batch| {
            on_compute_pool(&batch.images.device(), || {
                let b = batch.images.dims()[0];
                let labels = self.labels(batch.targets);
                let (loss_d, loss_g) = Self::losses(&gan, batch.images, labels, self.latent);
                let mut stats = StepStats::loss(loss_d.mul_scalar(b as f32), b);
                stats.extra = vec![(G_LOSS, loss_g.mul_scalar(b as f32))];
                stats
            })
        }))
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_weights(&dir.join("model.bpk"))?;
        save_optimizer(&self.optimizer_g, &dir.join("optimizer-generator.bpk"))?;
        save_optimizer(&self.optimizer_d, &dir.join("optimizer-discriminator.bpk"))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.load_weights(&dir.join("model.bpk"))?;
        load_optimizer(&mut self.optimizer_g, &dir.join("optimizer-generator.bpk"))?;
        load_optimizer(&mut self.optimizer_d, &dir.join("optimizer-discriminator.bpk"))
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        save_module(&self.gan, path)
    }

    fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.gan = load_module(self.gan.clone(), path)?;
        Ok(())
    }

    fn end_epoch(&mut self, epoch: usize, run: &RunDir) -> Result<Vec<(Metric, f64)>> {
        let generator = self.gan.valid().generator;
        let samples = generator.forward(self.fixed_noise.clone(), self.fixed_labels.clone());
        let grid = ImageBatchData::from_tensor((samples + 1.0) / 2.0);
        save_grid(&grid, GRID_COLUMNS, 2, &run.file(&sample_grid_name(epoch)))?;
        let Some(scorer) = &self.scorer else { return Ok(Vec::new()) };
        let scores = scorer.score(&generator, self.seed.wrapping_add(epoch as u64))?;
        let mut figures = vec![(FRECHET, scores.frechet)];
        if let Some(m) = scores.class_match {
            figures.push((CLASS_MATCH, m));
        }
        Ok(figures)
    }
}

impl GeneratorTask for GanTask {
    fn build(config: &GenerationConfig, data: &ImageSplits, train_device: &Device, ctx: &TrainContext) -> Result<Built<Self>> {
        let classes = &data.train.classes;
        let conditional = config.model.conditional.then_some(classes.len());
        let gan = Gan::new(config.data.image, config.model.latent(), conditional, train_device);
        let parameters = gan.num_params();
        let device = &ctx.compute.device;
        let scorer = match &config.eval_settings().classifier {
            Some(path) => Some(SampleScorer::new(path, &data.valid, classes, config, device)?),
            None => {
                ctx.reporter.info("eval.classifier is not set: no Fréchet distance per epoch");
                None
            }
        };
        let description = format!("dcgan{}", if conditional.is_some() { ", class-conditional" } else { "" });
        Ok(Built { task: GanTask::new(gan, config, classes.len(), scorer, device), description, parameters })
    }

    fn evaluate(&self, config: &GenerationConfig, data: &ImageSplits, ctx: &TrainContext) -> Result<Vec<(String, f64)>> {
        let Some(path) = config.eval_settings().classifier else { return Ok(Vec::new()) };
        let (name, images) = held_out(data);
        let scorer = SampleScorer::new(&path, &images, &data.train.classes, config, &ctx.compute.device)?;
        let s = scorer.score(&self.gan.valid().generator, config.run.seed)?;
        ctx.reporter.info(&format!("{name}: {}", s.summary()));
        let mut scores = vec![(format!("{name} Fréchet distance"), s.frechet)];
        if let Some(m) = s.class_match {
            scores.push((format!("{name} class match"), m));
        }
        Ok(scores)
    }
}
