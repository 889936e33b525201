//! Throughput of a classifier on one device (training on several with `--devices`): timed
//! training steps and inference batches.

use std::time::{Duration, Instant};

use serde::Serialize;

use burn::prelude::{Device, Tensor};

use crate::backend::{ComputeDevice, on_compute_pool, train_on_compute_pool};
use crate::classifier::{ClassifierModel, ClassifierTask, LabelledBatch};
use crate::config::OptimizerConfig;
use crate::train::{TrainTask, build_optimizer};

/// Measured throughput of one model on one device.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub backend: String,
    pub device: String,
    pub batch_size: usize,
    /// `None` (null in the JSON) where training was not timed (a recommender's `--rank-only`).
    pub train_samples_per_sec: Option<f64>,
    pub inference_samples_per_sec: f64,
    /// Figures and settings particular to the model (a text model's `seq_len`, peak memory).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// How long to measure: up to `steps` timed steps after `warmup` untimed ones, stopping early once
/// `budget` has passed (slow backends still report after two steps).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: usize,
    pub steps: usize,
    pub budget: Duration,
}

/// Waits for `tensor`'s values by reading them into host memory, as a user of the outputs would.
/// `into_data` alone, its result dropped unread, let `vitrine bench --backend wgpu` time some
/// inference steps at 1 ms among steps of 300 ms (`text-gru-attn` on llvmpipe: 49,000 samples/s
/// where reading gives 300 at `--warmup 1 --steps 3`).
pub fn read_back<const D: usize>(tensor: Tensor<D>) {
    let values = tensor.into_data().convert::<f32>().try_into_vec::<f32>().expect("values read as f32");
    std::hint::black_box(values);
}

impl Timing {
    /// Steps per second of `step` (which must wait for its result).
    pub fn rate(&self, mut step: impl FnMut()) -> f64 {
        for _ in 0..self.warmup {
            step();
        }
        let started = Instant::now();
        let mut done = 0;
        while done < self.steps.max(1) && (done < 2 || started.elapsed() < self.budget) {
            step();
            done += 1;
        }
        done as f64 / started.elapsed().as_secs_f64()
    }

    /// [`Timing::rate`] of inference's `step` run where `device` computes ([`on_compute_pool`]),
    /// as `evaluate` and `predict` run it.
    pub fn rate_on(&self, device: &Device, mut step: impl FnMut()) -> f64 {
        self.rate(|| on_compute_pool(device, &mut step))
    }

    /// [`Timing::rate`] of a training `step` run as `vitrine train` runs it
    /// ([`train_on_compute_pool`]).
    pub fn train_rate_on(&self, device: &Device, mut step: impl FnMut()) -> f64 {
        self.rate(|| train_on_compute_pool(device, &mut step))
    }

    /// Times training steps (forward, backward, Adam) on `train_batch` (on the autodiff device),
    /// then inference on `input`. Each step waits for its result.
    pub fn measure<M, B>(&self, name: &str, model: M, train_batch: B, input: M::Input, compute: &ComputeDevice) -> BenchResult
    where
        M: ClassifierModel,
        M::Input: Clone,
        B: LabelledBatch<Input = M::Input> + Clone,
    {
        let batch_size = train_batch.len();
        let train_device = compute.device.clone().autodiff();
        let mut task = ClassifierTask::new(model, build_optimizer(&OptimizerConfig::default(), None), &train_device);
        if !compute.replicas.is_empty() {
            task.spread_over(compute.replicas.iter().map(|d| d.clone().autodiff()).collect()).expect("classifiers split batches");
        }
        let train = self.train_rate_on(&train_device, || {
            let _: f32 = task.train_step(train_batch.clone(), 1e-3).loss_sum.into_scalar();
        });
        let model = task.model().valid();
        model.prepare_inference();
        let infer = self.rate_on(&compute.device, || {
            read_back(model.logits(input.clone()));
        });
        let mut result = BenchResult::new(name, compute, batch_size, train, infer);
        if !compute.replicas.is_empty() {
            result.extra.insert("devices".into(), (compute.replicas.len() + 1).into());
        }
        result
    }
}

impl BenchResult {
    /// A result from training and inference steps per second of `batch_size` examples.
    pub fn new(model: &str, compute: &ComputeDevice, batch_size: usize, train_steps_per_sec: f64, inference_steps_per_sec: f64) -> Self {
        Self {
            model: model.into(),
            backend: compute.backend.to_string(),
            device: compute.description.clone(),
            batch_size,
            train_samples_per_sec: Some(train_steps_per_sec * batch_size as f64),
            inference_samples_per_sec: inference_steps_per_sec * batch_size as f64,
            extra: serde_json::Map::new(),
        }
    }
}
