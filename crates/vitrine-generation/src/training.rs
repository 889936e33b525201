//! Training a generator from a config into a run directory: the autoencoder as one network,
//! the GAN as two networks with two optimizers (a discriminator step, then a generator step).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softplus;
use vitrine_core::backend::ComputeDevice;
use vitrine_core::config::{ExperimentConfig, ImageDataSection, ImageShape};
use vitrine_core::data::{BatchSource, ImageBatch, ImageBatches, ImageSplits, PixelRange, load_image_splits};
use vitrine_core::progress::Progress;
use vitrine_core::report::{DataSummary, RunIdentity, RunReport};
use vitrine_core::run_dir::{RunDir, WEIGHTS_FILE};
use vitrine_core::train::{
    FitOutcome, FitPlan, PassTotals, StepStats, TrainTask, build_optimizer, fit, load_module, load_optimizer, resume, save_module,
    save_optimizer, sum_steps,
};

use crate::grid::{ImageBatchData, save_grid};
use crate::inference::{SampleScorer, normal_noise, reconstruction_mse};
use crate::model::{Architecture, ConvAe, Gan, GenerationModelConfig, Reconstruction, kl_per_pixel};

/// The `task` value of generation configs.
pub const TASK: &str = "image-generation";

/// A whole generation experiment.
pub type GenerationConfig = ExperimentConfig<ImageDataSection, GenerationModelConfig>;

/// The reference recipes where a config is silent: the autoencoder's Adam 1e-3 for 10 epochs,
/// the GAN's Adam 2e-4 with β₁ = 0.5 for 20.
const AE_DEFAULTS: &[&str] = &["train.epochs=10"];
const GAN_DEFAULTS: &[&str] = &["train.epochs=20", "train.optimizer.lr=2e-4", "train.optimizer.beta1=0.5"];

/// Sample grids of each epoch, `samples/epoch-NNN.png`.
pub const SAMPLES_DIR: &str = "samples";
/// Images per grid row, and rows of a GAN's grid when unconditional.
const GRID_COLUMNS: usize = 8;
/// Validation images shown above their reconstructions.
const PREVIEW_IMAGES: usize = 16;

/// Reads a generation config with its architecture's defaults and `--set` overrides.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<GenerationConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    let named_gan = |v: &str| v.trim().trim_matches('"') == "dcgan";
    let from_override = overrides.iter().rev().find_map(|o| o.strip_prefix("model.name=")).map(named_gan);
    let from_file = || {
        let table: toml::Table = toml::from_str(&text).ok()?;
        Some(table.get("model")?.get("name")?.as_str()? == "dcgan")
    };
    let gan = from_override.or_else(from_file).unwrap_or(false);
    let mut config = GenerationConfig::parse_with_defaults(&text, if gan { GAN_DEFAULTS } else { AE_DEFAULTS }, overrides)
        .with_context(|| format!("in config {}", path.display()))?;
    check(&config).with_context(|| format!("in config {}", path.display()))?;
    config.model.latent = Some(config.model.latent());
    Ok(config)
}

fn check(config: &GenerationConfig) -> Result<()> {
    let (m, shape) = (&config.model, config.data.image);
    ensure!(
        shape.height % 4 == 0 && shape.width % 4 == 0,
        "data.image height and width must be multiples of 4 for {} (two stride-2 layers), got {}x{}",
        m.name.name(),
        shape.height,
        shape.width
    );
    ensure!(m.latent() > 0, "model.latent must be at least 1");
    ensure!(!m.variational || m.name == Architecture::ConvAe, "model.variational applies to conv-ae only");
    ensure!(!m.conditional || m.name == Architecture::Dcgan, "model.conditional applies to dcgan only");
    ensure!(m.kl_weight >= 0.0 && m.kl_weight.is_finite(), "model.kl_weight must be 0 or more, got {}", m.kl_weight);
    if m.name == Architecture::Dcgan && (config.train.early_stopping.is_some() || config.train.restore_best) {
        bail!(
            "train.early_stopping and train.restore_best watch the validation loss, which for a GAN does not \
             measure sample quality; remove them (the Fréchet distance per epoch is in metrics.csv)"
        );
    }
    Ok(())
}

/// Loads the images; a conditional GAN needs at least two classes.
pub fn load_data(config: &GenerationConfig) -> Result<ImageSplits> {
    let data = load_image_splits(&config.data, config.run.split_seed(), config.run.strict)?;
    if config.model.conditional && data.train.classes.len() < 2 {
        bail!("model.conditional needs labelled data with at least 2 classes; data.train has {}", data.train.classes.len());
    }
    Ok(data)
}

/// The pixel range each model works in.
pub fn pixel_range(arch: Architecture) -> PixelRange {
    match arch {
        Architecture::ConvAe => PixelRange::Unit,
        Architecture::Dcgan => PixelRange::Symmetric,
    }
}

/// Trains the configured model into `run`, continuing from its last checkpoint when `resuming`.
pub fn train(config: &GenerationConfig, run: &RunDir, compute: &ComputeDevice, resuming: bool) -> Result<RunReport> {
    let data = load_data(config)?;
    let classes = data.train.classes.clone();
    run.record_start(&config.to_toml()?, &classes, resuming)?;
    let shape = config.data.image;
    println!("data: {}", data.describe());
    let device = compute.device.clone();
    let train_device = device.clone().autodiff();
    train_device.seed(config.run.seed);
    let range = pixel_range(config.model.name);
    let bs = config.train.batch_size;
    let train_batches =
        ImageBatches::shuffled(data.train.clone(), bs, config.run.seed, config.data.augment, range, train_device.clone());
    let valid_batches = ImageBatches::ordered(data.valid.clone(), bs, range, device.clone());
    let held_out = data.test.clone().unwrap_or_else(|| data.valid.clone());
    let held_out_name = if data.test.is_some() { "test" } else { "valid" };

    let (parameters, outcome, held_out) = match config.model.name {
        Architecture::ConvAe => {
            let model = ConvAe::new(shape, config.model.latent(), config.model.variational, &train_device);
            let parameters = model.num_params();
            println!("model: conv-ae{} ({parameters} parameters)", if config.model.variational { ", variational" } else { "" });
            let preview = ImageBatches::ordered(data.valid.clone(), PREVIEW_IMAGES, range, device.clone())
                .batches(0)
                .next()
                .expect("validation data is not empty")
                .images;
            let mut task = AutoencoderTask::new(model, config, preview);
            let outcome = run_fit(&mut task, &train_batches, &valid_batches, config, run, resuming)?;
            let model = task.model.valid();
            let mse = reconstruction_mse(&model, &ImageBatches::ordered(held_out, 256, range, device.clone()));
            println!("{held_out_name}: MSE {mse:.5}, PSNR {:.2} dB", psnr(mse));
            let scores = vec![(format!("{held_out_name} MSE"), mse), (format!("{held_out_name} PSNR (dB)"), psnr(mse))];
            (parameters, outcome, scores)
        }
        Architecture::Dcgan => {
            let conditional = config.model.conditional.then_some(classes.len());
            let gan = Gan::new(shape, config.model.latent(), conditional, &train_device);
            let parameters = gan.num_params();
            println!("model: dcgan{} ({parameters} parameters)", if conditional.is_some() { ", class-conditional" } else { "" });
            let classifier = config.eval_settings().classifier;
            let scorer = match &classifier {
                Some(path) => Some(SampleScorer::new(path, &data.valid, &classes, config, &device)?),
                None => {
                    println!("eval.classifier is not set: no Fréchet distance per epoch");
                    None
                }
            };
            let mut task = GanTask::new(gan, config, classes.len(), scorer, &device);
            let outcome = run_fit(&mut task, &train_batches, &valid_batches, config, run, resuming)?;
            let mut scores = Vec::new();
            if let Some(path) = &classifier {
                let scorer = SampleScorer::new(path, &held_out, &classes, config, &device)?;
                let s = scorer.score(&task.gan.valid().generator, config.run.seed)?;
                println!("{held_out_name}: {}", s.summary());
                scores.push((format!("{held_out_name} Fréchet distance"), s.frechet));
                if let Some(m) = s.class_match {
                    scores.push((format!("{held_out_name} class match"), m));
                }
            }
            (parameters, outcome, scores)
        }
    };
    let last = outcome.history.last().map_or(0, |r| r.epoch);
    let who = RunIdentity { task: TASK, model: config.model.name.name(), parameters, device: &compute.description };
    let report = RunReport {
        held_out,
        figures: vec![(format!("Samples after epoch {last}"), sample_grid_name(last))],
        ..RunReport::of_fit(who, DataSummary::of_images(&data), outcome)
    };
    report.write(run)?;
    println!("run saved in {}", run.root().display());
    Ok(report)
}

/// Resumes when asked, fits, and saves the final weights.
fn run_fit<T: TrainTask<Batch = ImageBatch>>(
    task: &mut T,
    train: &ImageBatches,
    valid: &ImageBatches,
    config: &GenerationConfig,
    run: &RunDir,
    resuming: bool,
) -> Result<FitOutcome> {
    let history = if resuming { resume(task, run)? } else { Vec::new() };
    if resuming {
        println!("resuming {} after epoch {}", run.root().display(), history.len());
    }
    let outcome = fit(task, train, valid, &FitPlan::new(&config.train, train.device(), config.run.seed), run, history, &mut Progress::new())?;
    task.save_weights(&run.file(WEIGHTS_FILE))?;
    Ok(outcome)
}

/// Peak signal-to-noise ratio of pixels in [0, 1].
pub fn psnr(mse: f64) -> f64 {
    10.0 * (1.0 / mse.max(1e-12)).log10()
}

/// The run-relative path of an epoch's sample grid.
pub fn sample_grid_name(epoch: usize) -> String {
    format!("{SAMPLES_DIR}/epoch-{epoch:03}.png")
}

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
    stats.extra = vec![("mse", mse.detach().mul_scalar(count as f32)), ("kl", kl.detach().mul_scalar(count as f32))];
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
        sum_steps(batches.map(|b| autoencoder_loss(model.forward(b.images.clone(), false), b.images, self.shape, self.kl_weight).1))
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

    fn end_epoch(&mut self, epoch: usize, run: &RunDir) -> Result<Vec<(String, f64)>> {
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
        Self {
            gan,
            optimizer_g: Some(optimizer()),
            optimizer_d: Some(optimizer()),
            latent,
            fixed_noise,
            fixed_labels,
            scorer,
            seed: config.run.seed,
        }
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

        // Generator: make the updated discriminator call its images real.
        let fake = self.gan.generator.forward(noise(), labels.clone());
        let loss_g = bce_logits(self.gan.discriminator.forward(fake, labels), true);
        let grads = GradientsParams::from_grads(loss_g.backward(), &self.gan.generator);
        let optimizer = self.optimizer_g.as_mut().expect("optimizer present between steps");
        self.gan.generator = optimizer.step(lr, self.gan.generator.clone(), grads);

        let mut stats = StepStats::loss(loss_d.detach().mul_scalar(b as f32), b);
        stats.extra = vec![("g_loss", loss_g.detach().mul_scalar(b as f32))];
        stats
    }

    fn validate(&self, batches: &mut dyn Iterator<Item = ImageBatch>) -> PassTotals {
        let gan = self.gan.valid();
        sum_steps(batches.map(|batch| {
            let b = batch.images.dims()[0];
            let labels = self.labels(batch.targets);
            let (loss_d, loss_g) = Self::losses(&gan, batch.images, labels, self.latent);
            let mut stats = StepStats::loss(loss_d.mul_scalar(b as f32), b);
            stats.extra = vec![("g_loss", loss_g.mul_scalar(b as f32))];
            stats
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

    fn end_epoch(&mut self, epoch: usize, run: &RunDir) -> Result<Vec<(String, f64)>> {
        let generator = self.gan.valid().generator;
        let samples = generator.forward(self.fixed_noise.clone(), self.fixed_labels.clone());
        let grid = ImageBatchData::from_tensor((samples + 1.0) / 2.0);
        save_grid(&grid, GRID_COLUMNS, 2, &run.file(&sample_grid_name(epoch)))?;
        let Some(scorer) = &self.scorer else { return Ok(Vec::new()) };
        let scores = scorer.score(&generator, self.seed.wrapping_add(epoch as u64))?;
        let mut figures = vec![("frechet".to_string(), scores.frechet)];
        if let Some(m) = scores.class_match {
            figures.push(("class_match".to_string(), m));
        }
        Ok(figures)
    }
}

