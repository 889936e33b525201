//! Tests that train tiny generators for real on the shipped Fashion-MNIST sample.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::prelude::*;
use vitrine_core::backend::{BackendChoice, select_device};
use vitrine_core::config::ConfigFile;
use vitrine_core::config::ImageShape;
use vitrine_core::data::{BatchSource, ImageBatches, PixelRange};
use vitrine_core::report::RunReport;
use vitrine_core::reporter::Silent;
use vitrine_core::run_dir::RunDir;
use vitrine_core::train::TrainContext;

use crate::autoencoder::reconstruction_mse;
use crate::config::{GenerationConfig, resolve};
use crate::data::load_data;
use crate::model::{ConvAe, Discriminator, Gan, Generator};
use crate::scoring::normal_noise;
use crate::training::train;

/// burn's random generator is global: tests that build models take turns so that each one's
/// seeded weights are the same from run to run.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A config on the shipped sample: the first `limit` training images.
fn sample_config(model: &str, limit: usize, epochs: usize, batch_size: usize) -> GenerationConfig {
    let sample = repo().join("datasets/fashion-mnist-sample");
    let text = format!(
        r#"task = "image-generation"
[run]
backend = "flex"
[data]
train = {{ images = "{0}/train-images-idx3-ubyte.gz", labels = "{0}/train-labels-idx1-ubyte.gz" }}
limit = {limit}
valid_fraction = 0.2
[model]
{model}
[train]
epochs = {epochs}
batch_size = {batch_size}
"#,
        sample.display()
    );
    resolve(&ConfigFile::from_text(std::path::Path::new("test.toml"), text).unwrap(), &[]).unwrap()
}

fn train_on_flex(config: &GenerationConfig, run: &RunDir, resuming: bool) -> RunReport {
    let compute = select_device(BackendChoice::Flex).unwrap();
    train(config, &TrainContext { run, compute: &compute, resuming, reporter: &Silent }).unwrap()
}

#[test]
fn reference_networks_have_the_documented_shapes_and_sizes() {
    let _turn = one_at_a_time();
    let device = Device::flex();
    let shape = ImageShape::default();
    let x = Tensor::<4>::random([3, 1, 28, 28], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);

    let ae = ConvAe::new(shape, 32, false, &device);
    // conv(1→32,4) + conv(32→64,4) + linear(3136→32) + linear(32→3136) + convT(64→32,4) + convT(32→1,4).
    assert_eq!(ae.num_params(), 544 + 32_832 + 100_384 + 103_488 + 32_800 + 513);
    let out = ae.forward(x.clone(), false);
    assert_eq!(out.images.dims(), [3, 1, 28, 28]);
    assert!(out.kl.is_none());
    let vae = ConvAe::new(shape, 32, true, &device).forward(x.clone(), true);
    assert_eq!(vae.kl.unwrap().dims(), [3]);

    let generator = Generator::new(shape, 64, None, &device);
    let images = generator.forward(Tensor::zeros([5, 64], &device), None);
    assert_eq!(images.dims(), [5, 1, 28, 28]);
    let range = images.clone().abs().max().into_scalar::<f32>();
    assert!(range <= 1.0, "tanh output: {range}");
    // Generator: linear(64→6272) + BN(6272) + convT(128→64,4) + BN(64) + convT(64→1,4), with the
    // batch norms' running means and variances (counted by burn, buffers in PyTorch).
    assert_eq!(generator.num_params(), 407_680 + 4 * 6272 + 131_136 + 4 * 64 + 1025);
    let discriminator = Discriminator::new(shape, None, &device);
    assert_eq!(discriminator.forward(x.clone().mul_scalar(2.0).sub_scalar(1.0), None).dims(), [3]);
    // Discriminator: conv(1→64,4) + conv(64→128,4) + BN(128) + linear(6272→1).
    assert_eq!(discriminator.num_params(), 1088 + 131_200 + 4 * 128 + 6273);

    // Conditional: labels enter both networks.
    let gan = Gan::new(shape, 64, Some(10), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 7, 9], [3]), &device);
    let fake = gan.generator.forward(Tensor::zeros([3, 64], &device), Some(labels.clone()));
    assert_eq!(gan.discriminator.forward(fake, Some(labels)).dims(), [3]);
}

#[test]
fn autoencoder_learns_to_reconstruct_the_sample() {
    let _turn = one_at_a_time();
    for variational in [false, true] {
        let model = if variational { "name = \"conv-ae\"\nvariational = true" } else { "name = \"conv-ae\"" };
        let config = sample_config(model, 1200, 3, 32);
        let data = load_data(&config, &Silent).unwrap();
        let device = Device::flex();
        let valid = ImageBatches::ordered(data.valid.clone(), 256, PixelRange::Unit, device.clone());
        device.clone().autodiff().seed(config.run.seed);
        let untrained = reconstruction_mse(&ConvAe::new(config.data.image, 32, variational, &device), &valid);

        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(&tmp.path().join("ae")).unwrap();
        let report = train_on_flex(&config, &run, false);
        let (first, last) = (&report.epochs[0], report.epochs.last().unwrap());
        assert!(last.train_loss < first.train_loss, "variational {variational}: {} → {}", first.train_loss, last.train_loss);
        let trained = report.held_out.iter().find(|(k, _)| k.ends_with("MSE")).unwrap().1;
        assert!(trained < 0.5 * untrained, "variational {variational}: held-out MSE {trained} vs untrained {untrained}");
        assert_eq!(last.losses.contains_key("train_kl"), variational);
        for epoch in 1..=3 {
            assert!(run.file(&format!("samples/epoch-{epoch:03}.png")).is_file());
        }
    }
}

/// Mean absolute difference between the mean generated image and the mean real image.
fn mean_image_gap(generator: &Generator, real: &Tensor<4>, device: &Device) -> f32 {
    let fake = generator.forward(normal_noise(256, 64, 1, device), None);
    let gap = fake.mean_dim(0) - real.clone().mean_dim(0);
    gap.abs().mean().into_scalar()
}

#[test]
fn gan_learns_the_look_of_the_sample_and_resumes() {
    let _turn = one_at_a_time();
    // Batch 16: 300 steps in two epochs; at batch 32 the result hangs on the seed's noise draws.
    let config = sample_config("name = \"dcgan\"", 3000, 2, 16);
    assert_eq!((config.train.optimizer.lr, config.train.optimizer.beta1), (2e-4, 0.5), "the reference GAN recipe");
    let data = load_data(&config, &Silent).unwrap();
    let device = Device::flex();
    let real = ImageBatches::ordered(Arc::clone(&data.valid), 256, PixelRange::Symmetric, device.clone()).batches(0).next().unwrap().images;
    device.clone().autodiff().seed(config.run.seed);
    let before = mean_image_gap(&Generator::new(config.data.image, 64, None, &device), &real, &device);

    // One epoch, then a resume to the second: the same run folder, both networks and both
    // optimizers restored.
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::create(&tmp.path().join("gan")).unwrap();
    let mut first = config.clone();
    first.train.epochs = 1;
    train_on_flex(&first, &run, false);
    let checkpoint = run.latest_checkpoint().unwrap().unwrap();
    for file in ["model.bpk", "optimizer-generator.bpk", "optimizer-discriminator.bpk"] {
        assert!(checkpoint.join(file).is_file(), "{file}");
    }
    let report = train_on_flex(&config, &run, true);
    assert_eq!(report.epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2]);
    for r in &report.epochs {
        let g = r.losses["train_g_loss"];
        assert!(r.train_loss.is_finite() && g.is_finite(), "losses {} / {g}", r.train_loss);
    }
    assert!(run.file("samples/epoch-002.png").is_file());

    let trained = crate::inference::GenerationRun::open(run.root()).unwrap().gan(&device).unwrap();
    let after = mean_image_gap(&trained.generator, &real, &device);
    assert!(after < 0.5 * before, "mean image gap {before} → {after}");
}
