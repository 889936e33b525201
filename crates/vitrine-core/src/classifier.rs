//! Training and evaluating any classifier (product images, review texts) with cross-entropy.

use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;

use anyhow::Result;
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::activation::softmax;

use crate::backend::on_compute_pool;
use crate::data::ImageBatch;
use crate::metrics::{ConfusionMatrix, auroc};
use crate::report::ClassificationScores;
use crate::train::{PassTotals, StepStats, TrainTask, load_module, load_optimizer, save_module, save_optimizer, sum_steps};

/// A model that maps an input batch to class logits `[batch, classes]`.
pub trait ClassifierModel: Module + Send + 'static {
    type Input: Send + 'static;
    fn logits(&self, input: Self::Input) -> Tensor<2>;

    /// Work done once before serving that inference would otherwise do on one of its calls (a
    /// text model's table of token projections); `vitrine bench` runs it before its warm-up, as a
    /// server would at start-up.
    fn prepare_inference(&self) {}

    /// One step's gradients in groups, each with a factor on the learning rate: all at ×1 unless
    /// the model trains parts at their own rates (a pretrained encoder more slowly than its head).
    fn learning_rate_groups(&self, grads: &mut Gradients) -> Vec<(f64, GradientsParams)> {
        vec![(1.0, GradientsParams::from_module(grads, self))]
    }
}

/// A batch with class labels.
pub trait LabelledBatch: Send + 'static {
    type Input;
    fn into_parts(self) -> (Self::Input, Tensor<1, Int>);
    /// The number of examples.
    fn len(&self) -> usize;
    /// Examples `range`, on `device`: one device's share in data-parallel training.
    fn share(&self, range: Range<usize>, device: &Device) -> Self;
}

impl LabelledBatch for ImageBatch {
    type Input = Tensor<4>;
    fn into_parts(self) -> (Tensor<4>, Tensor<1, Int>) {
        (self.images, self.targets)
    }

    fn len(&self) -> usize {
        self.targets.dims()[0]
    }

    fn share(&self, range: Range<usize>, device: &Device) -> Self {
        Self { images: self.images.clone().slice(range.clone()).to_device(device), targets: self.targets.clone().slice(range).to_device(device) }
    }
}

/// A classifier with its optimizer: the [`TrainTask`] of every classification family.
pub struct ClassifierTask<M, B> {
    model: M,
    optimizer: Option<ModuleOptimizer>,
    loss: CrossEntropyLoss,
    /// Where the model and the optimizer live.
    device: Device,
    /// Data-parallel training's further devices; empty for one device.
    replicas: Vec<Device>,
    _batch: PhantomData<fn(B)>,
}

impl<M, B> ClassifierTask<M, B>
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    /// `model` must live on an autodiff device.
    pub fn new(model: M, optimizer: ModuleOptimizer, device: &Device) -> Self {
        Self {
            model,
            optimizer: Some(optimizer),
            loss: CrossEntropyLossConfig::new().init(device),
            device: device.clone(),
            replicas: Vec::new(),
            _batch: PhantomData,
        }
    }

    pub fn model(&self) -> &M {
        &self.model
    }
}

/// Correct predictions in a batch, as a one-element device tensor.
fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1, Int> {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let targets = in_int_type_of(targets, &predicted);
    predicted.equal(targets).int().sum()
}

/// `values` in `like`'s integer type: a data-parallel share's labels and counts keep the
/// integer type of the backend they were made on (flex's i32 beside ndarray's i64).
fn in_int_type_of(values: Tensor<1, Int>, like: &Tensor<1, Int>) -> Tensor<1, Int> {
    if values.dtype() == like.dtype() { values } else { values.cast(like.dtype()) }
}

/// Forward and backward of a batch, or of one device's share of a batch when `weight` says
/// what part of the batch the share is (its mean loss then counts that much of the step's):
/// the gradients in learning-rate groups, and the figures of the examples.
fn gradients<M, B>(model: &M, loss: &CrossEntropyLoss, batch: B, weight: Option<f32>) -> (Vec<(f64, GradientsParams)>, StepStats)
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    let (input, targets) = batch.into_parts();
    let count = targets.dims()[0];
    let logits = model.logits(input);
    let loss = loss.forward(logits.clone(), targets.clone());
    let mut grads = match weight {
        None => loss.backward(),
        Some(weight) => loss.clone().mul_scalar(weight).backward(),
    };
    let groups = model.learning_rate_groups(&mut grads);
    let stats =
        StepStats { loss_sum: loss.detach().mul_scalar(count as f32), correct: Some(count_correct(logits.detach(), targets)), count, extra: Vec::new() };
    (groups, stats)
}

/// `total` examples split into `parts` consecutive ranges as even as possible, none empty.
fn shares(total: usize, parts: usize) -> Vec<Range<usize>> {
    let (size, longer) = (total / parts, total % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let end = start + size + usize::from(i < longer);
            let range = start..end;
            start = end;
            range
        })
        .filter(|range| !range.is_empty())
        .collect()
}

impl<M, B> ClassifierTask<M, B>
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    /// Data-parallel training's forward and backward: each device takes its share of the batch
    /// on a thread of its own with a copy of the weights, and the gradients are summed on the
    /// task's device. As burn's multi-device strategy does: the optimizer steps once, on the
    /// task's device, and the next step copies the weights out again. Each share's loss is
    /// weighted by its size, so the sum is the whole batch's gradient.
    fn gradients_across_devices(&self, batch: B) -> (Vec<(f64, GradientsParams)>, StepStats) {
        let total = batch.len();
        let devices: Vec<&Device> = std::iter::once(&self.device).chain(&self.replicas).collect();
        let results: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = shares(total, devices.len())
                .into_iter()
                .zip(&devices)
                .map(|(range, &device)| {
                    let weight = range.len() as f32 / total as f32;
                    let share = batch.share(range, device);
                    let model = if *device == self.device { self.model.clone() } else { self.model.clone().fork(device) };
                    let loss = self.loss.clone().fork(device);
                    scope.spawn(move || gradients(&model, &loss, share, Some(weight)))
                })
                .collect();
            workers.into_iter().map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect::<Vec<_>>()
        });
        // burn's batch norm files each thread's update of its running statistics apart and
        // averages them when it syncs, which a thread does only on its next update: the shares'
        // threads end here, so without this sync their updates piled up unread, every step
        // started from the statistics of the epoch's start, and the epoch moved them a tenth
        // of the way. Synced now: the shares' average, as burn's data-parallel strategy gives.
        drop(self.model.valid());
        let mut sums: Vec<(f64, GradientsAccumulator<M>)> = Vec::new();
        let mut totals: Option<StepStats> = None;
        for (groups, stats) in results {
            for (i, (factor, group)) in groups.into_iter().enumerate() {
                if sums.len() <= i {
                    sums.push((factor, GradientsAccumulator::new()));
                }
                sums[i].1.accumulate(&self.model, group.to_device(&self.device, &self.model));
            }
            let stats = StepStats { loss_sum: stats.loss_sum.to_device(&self.device), correct: stats.correct.map(|c| c.to_device(&self.device)), ..stats };
            totals = Some(match totals {
                None => stats,
                Some(sum) => StepStats {
                    loss_sum: sum.loss_sum + stats.loss_sum,
                    correct: sum.correct.zip(stats.correct).map(|(a, b)| {
                        let b = in_int_type_of(b, &a);
                        a + b
                    }),
                    count: sum.count + stats.count,
                    extra: Vec::new(),
                },
            });
        }
        let groups = sums.into_iter().map(|(factor, mut sum)| (factor, sum.grads())).collect();
        (groups, totals.expect("a batch has at least one example"))
    }
}

impl<M, B> TrainTask for ClassifierTask<M, B>
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    type Batch = B;

    const DATA_PARALLEL: bool = true;

    fn train_step(&mut self, batch: B, lr: f64) -> StepStats {
        let (groups, stats) = if self.replicas.is_empty() { gradients(&self.model, &self.loss, batch, None) } else { self.gradients_across_devices(batch) };
        let optimizer = self.optimizer.as_mut().expect("optimizer present between steps");
        for (factor, group) in groups {
            self.model = optimizer.step(lr * factor, self.model.clone(), group);
        }
        stats
    }

    fn spread_over(&mut self, replicas: Vec<Device>) -> Result<()> {
        self.replicas = replicas;
        Ok(())
    }

    fn validate(&self, batches: &mut dyn Iterator<Item = B>) -> PassTotals {
        let model = self.model.valid();
        sum_steps(batches.map(|batch| {
            on_compute_pool(&self.device, || {
                let (input, targets) = batch.into_parts();
                let count = targets.dims()[0];
                let logits = model.logits(input);
                let loss = self.loss.forward(logits.clone(), targets.clone());
                StepStats { loss_sum: loss.mul_scalar(count as f32), correct: Some(count_correct(logits, targets)), count, extra: Vec::new() }
            })
        }))
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_weights(&dir.join("model.bpk"))?;
        save_optimizer(&self.optimizer, &dir.join("optimizer.bpk"))
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.load_weights(&dir.join("model.bpk"))?;
        load_optimizer(&mut self.optimizer, &dir.join("optimizer.bpk"))
    }

    fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.model = load_module(self.model.clone(), path)?;
        Ok(())
    }

    fn save_weights(&self, path: &Path) -> Result<()> {
        save_module(&self.model, path)
    }
}

/// Class probabilities for every example, in order, from an inference-mode model.
pub fn predict_probabilities<M: ClassifierModel>(model: &M, inputs: impl Iterator<Item = M::Input>) -> Vec<Vec<f32>> {
    predict_probabilities_by(logits_on_compute_pool(model), inputs)
}

/// `model.logits` run where its device computes ([`on_compute_pool`]).
pub fn logits_on_compute_pool<M: ClassifierModel>(model: &M) -> impl Fn(M::Input) -> Tensor<2> + '_ {
    let device = model.devices().into_iter().next();
    move |input| match &device {
        Some(device) => on_compute_pool(device, || model.logits(input)),
        None => model.logits(input),
    }
}

/// [`predict_probabilities`] with any map from inputs to logits (e.g. averaged over test-time
/// augmentations).
pub fn predict_probabilities_by<I>(logits: impl Fn(I) -> Tensor<2>, inputs: impl Iterator<Item = I>) -> Vec<Vec<f32>> {
    inputs.flat_map(|input| probability_rows(logits(input))).collect()
}

/// One row of class probabilities per example of `[n, classes]` logits.
fn probability_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let probs = softmax(logits, 1);
    let [n, k] = probs.dims();
    let flat = probs.into_data().try_into_vec_as::<f32>().expect("f32 data");
    (0..n).map(|i| flat[i * k..(i + 1) * k].to_vec()).collect()
}

/// The index of the largest value.
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0)
}

/// Scores of a model over labelled batches: confusion matrix, accuracy, macro-F1, per-class
/// precision/recall, and AUROC for two classes.
pub fn score<M, B>(model: &M, batches: impl Iterator<Item = B>, classes: &[String]) -> ClassificationScores
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    score_by(logits_on_compute_pool(model), batches, classes)
}

/// [`score`] with any map from inputs to logits (e.g. averaged over test-time augmentations).
pub fn score_by<I, B>(logits: impl Fn(I) -> Tensor<2>, batches: impl Iterator<Item = B>, classes: &[String]) -> ClassificationScores
where
    B: LabelledBatch<Input = I>,
{
    let mut matrix = ConfusionMatrix::new(classes.len());
    let mut second_class_probability = Vec::new();
    let mut is_second_class = Vec::new();
    for batch in batches {
        let (input, targets) = batch.into_parts();
        let truth = targets.into_data().try_into_vec_as::<i64>().expect("int data");
        let probs = probability_rows(logits(input));
        for (t, p) in truth.into_iter().zip(probs) {
            matrix.add(t as usize, argmax(&p));
            if classes.len() == 2 {
                second_class_probability.push(p[1]);
                is_second_class.push(t == 1);
            }
        }
    }
    let mut scores = ClassificationScores::new(matrix, classes);
    scores.auroc = auroc(&second_class_probability, &is_second_class);
    scores
}

#[cfg(test)]
mod tests {
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn::tensor::TensorData;

    use super::*;
    use crate::config::{OptimizerConfig, OptimizerKind};
    use crate::train::build_optimizer;

    #[derive(Module, Debug)]
    struct Normed {
        norm: BatchNorm,
        head: Linear,
    }

    impl ClassifierModel for Normed {
        type Input = Tensor<4>;
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            self.head.forward(self.norm.forward(images).flatten(1, 3))
        }
    }

    /// Data-parallel steps move batch norm's running statistics as steps on one device do
    /// (equal shares: the average of the shares' means is the batch's mean).
    #[test]
    fn data_parallel_steps_keep_batch_norms_running_statistics() {
        let main = Device::flex().autodiff();
        #[allow(deprecated)] // burn-ndarray: a second CPU device
        let replica = Device::ndarray().autodiff();
        let head = LinearConfig::new(12, 2).init(&main);
        let values: Vec<f32> = (0..8 * 12).map(|i| (i * 37 % 23) as f32 / 4.0 + 1.0).collect();
        let batch = || ImageBatch {
            images: Tensor::from_data(TensorData::new(values.clone(), [8, 3, 2, 2]), &main),
            targets: Tensor::from_ints([0, 1, 1, 0, 1, 0, 0, 1], &main),
        };
        let running_mean_after_steps = |replicas: Vec<Device>| {
            let sgd = build_optimizer(&OptimizerConfig { kind: OptimizerKind::Sgd, lr: 0.1, ..Default::default() }, None);
            // A fresh batch norm each time: clones of one share its running statistics.
            let model = Normed { norm: BatchNormConfig::new(3).init(&main), head: head.clone() };
            let mut task = ClassifierTask::new(model, sgd, &main);
            task.spread_over(replicas).unwrap();
            for _ in 0..5 {
                task.train_step(batch(), 0.1);
            }
            task.model().valid().norm.running_mean.value().into_data().try_to_vec::<f32>().unwrap()
        };
        let one = running_mean_after_steps(Vec::new());
        let two = running_mean_after_steps(vec![replica]);
        // Five steps of momentum 0.1 from 0: 41% of the way to the batch's mean.
        assert!(one.iter().all(|&m| m > 1.0), "{one:?}");
        let diff = crate::metrics::largest_gap(&one, &two);
        assert!(diff < 1e-4, "one device {one:?}, two {two:?}");
    }
}
