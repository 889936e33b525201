//! Training and evaluating any classifier (product images, review texts) with cross-entropy.

use std::marker::PhantomData;
use std::path::Path;

use anyhow::Result;
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::activation::softmax;

use crate::data::ImageBatch;
use crate::metrics::{ConfusionMatrix, auroc};
use crate::report::ClassificationScores;
use crate::train::{PassTotals, StepStats, TrainTask, load_module, load_optimizer, save_module, save_optimizer, sum_steps};

/// A model that maps an input batch to class logits `[batch, classes]`.
pub trait ClassifierModel: Module + Send + 'static {
    type Input: Send + 'static;
    fn logits(&self, input: Self::Input) -> Tensor<2>;

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
}

impl LabelledBatch for ImageBatch {
    type Input = Tensor<4>;
    fn into_parts(self) -> (Tensor<4>, Tensor<1, Int>) {
        (self.images, self.targets)
    }
}

/// A classifier with its optimizer: the [`TrainTask`] of every classification family.
pub struct ClassifierTask<M, B> {
    model: M,
    optimizer: Option<ModuleOptimizer>,
    loss: CrossEntropyLoss,
    _batch: PhantomData<fn(B)>,
}

impl<M, B> ClassifierTask<M, B>
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    /// `model` must live on an autodiff device.
    pub fn new(model: M, optimizer: ModuleOptimizer, device: &Device) -> Self {
        Self { model, optimizer: Some(optimizer), loss: CrossEntropyLossConfig::new().init(device), _batch: PhantomData }
    }

    pub fn model(&self) -> &M {
        &self.model
    }
}

/// Correct predictions in a batch, as a one-element device tensor.
fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1, Int> {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    predicted.equal(targets).int().sum()
}

impl<M, B> TrainTask for ClassifierTask<M, B>
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    type Batch = B;

    fn train_step(&mut self, batch: B, lr: f64) -> StepStats {
        let (input, targets) = batch.into_parts();
        let count = targets.dims()[0];
        let logits = self.model.logits(input);
        let loss = self.loss.forward(logits.clone(), targets.clone());
        let mut grads = loss.backward();
        let groups = self.model.learning_rate_groups(&mut grads);
        let optimizer = self.optimizer.as_mut().expect("optimizer present between steps");
        for (factor, group) in groups {
            self.model = optimizer.step(lr * factor, self.model.clone(), group);
        }
        StepStats {
            loss_sum: loss.detach().mul_scalar(count as f32),
            correct: Some(count_correct(logits.detach(), targets)),
            count,
            extra: Vec::new(),
        }
    }

    fn validate(&self, batches: &mut dyn Iterator<Item = B>) -> PassTotals {
        let model = self.model.valid();
        sum_steps(batches.map(|batch| {
            let (input, targets) = batch.into_parts();
            let count = targets.dims()[0];
            let logits = model.logits(input);
            let loss = self.loss.forward(logits.clone(), targets.clone());
            StepStats {
                loss_sum: loss.mul_scalar(count as f32),
                correct: Some(count_correct(logits, targets)),
                count,
                extra: Vec::new(),
            }
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
pub fn predict_probabilities<M: ClassifierModel>(
    model: &M,
    inputs: impl Iterator<Item = M::Input>,
) -> Vec<Vec<f32>> {
    predict_probabilities_by(|input| model.logits(input), inputs)
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
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Scores of a model over labelled batches: confusion matrix, accuracy, macro-F1, per-class
/// precision/recall, and AUROC for two classes.
pub fn score<M, B>(model: &M, batches: impl Iterator<Item = B>, classes: &[String]) -> ClassificationScores
where
    M: ClassifierModel,
    B: LabelledBatch<Input = M::Input>,
{
    score_by(|input| model.logits(input), batches, classes)
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
