//! The recommenders. Each is a burn module implementing [`Recommender`]: a loss on its kind of
//! batch (or, for the counted baselines, a count), and scores of every item for a batch of
//! customers.
//!
//! - [`counted`]: `pop` and `item-knn`, computed with tensor ops in one pass over the data.
//! - [`factorization`]: `bpr-mf` and `neumf`.
//! - [`two_tower`]: the hybrid over IDs and features.
//! - [`content`]: the content-profile baseline (features alone, no training).
//! - [`sasrec`]: the causal Transformer over each customer's recent items.

pub mod build;
pub mod content;
pub mod counted;
pub mod factorization;
pub mod sasrec;
pub mod sparse;
pub mod two_tower;

use std::sync::Arc;

use burn::module::Module;
use burn::prelude::*;

use crate::data::FeatureTensors;
use crate::data::batches::RecBatch;

/// What scoring may read besides the weights: each customer's known items in time order, and
/// the feature tables (on the model's device).
#[derive(Clone)]
pub struct ScoreContext {
    /// Each customer's items, oldest first (training items; for the test, validation ones too).
    pub history: Arc<Vec<Vec<u32>>>,
    pub items: usize,
    pub item_features: Option<FeatureTensors>,
    pub user_features: Option<FeatureTensors>,
    /// 1 for items with training interactions, 0 for cold-start ones `[items]`.
    pub warm_items: Option<Tensor<1>>,
    /// The log of each item's share of training interactions `[items]`: how often in-batch
    /// sampling draws it as a negative.
    pub item_log_frequency: Option<Tensor<1>>,
}

impl ScoreContext {
    /// Rows of the 0/1 history matrix `[users.len(), items]`.
    pub fn history_rows(&self, users: &[u32], device: &Device) -> Tensor<2> {
        let mut rows = vec![0.0f32; users.len() * self.items];
        for (r, &u) in users.iter().enumerate() {
            for &i in &self.history[u as usize] {
                rows[r * self.items + i as usize] = 1.0;
            }
        }
        Tensor::from_data(TensorData::new(rows, [users.len(), self.items]), device)
    }
}

/// A recommender the shared task can train and rank with.
pub trait Recommender: Module + Send + 'static {
    /// Whether the model is counted in one pass over the customers' rows ([`Recommender::count`])
    /// rather than trained by gradient.
    const COUNTED: bool = false;
    /// Whether its training steps run parallel operations ([`vitrine_core::train::TrainTask::STEPS_ON_COMPUTE_POOL`]).
    const STEPS_ON_COMPUTE_POOL: bool = true;
    /// Counted models: takes one batch of the pass in.
    fn count(self, _batch: RecBatch) -> Self
    where
        Self: Sized,
    {
        self
    }
    /// Counted models: turns the pass's counts into the model.
    fn finish(self) -> Self
    where
        Self: Sized,
    {
        self
    }
    /// Counted models: empties the counts before a new pass.
    fn reset(self) -> Self
    where
        Self: Sized,
    {
        self
    }
    /// The mean loss of a training (or validation) batch.
    fn loss(&self, batch: RecBatch, context: &ScoreContext) -> Tensor<1>;
    /// The `[rows, d]` shapes of the tables a row-wise step updates (`model.sparse_updates`);
    /// none for a model without that path.
    fn row_tables(&self) -> Vec<[usize; 2]> {
        Vec::new()
    }
    /// One training step that updates only the rows of its tables that `batch` uses, with
    /// `adam`; the batch's mean loss.
    fn row_step(&mut self, _batch: RecBatch, _lr: f64, _adam: &mut sparse::RowAdam) -> Tensor<1> {
        unreachable!("row steps are offered only for models with row tables (checked when the config loads)")
    }
    /// Scores `[users.len(), items]` of every item for `users`; higher is better.
    fn scores(&self, users: &[u32], context: &ScoreContext) -> Tensor<2>;
    /// Customers scored at once when ranking every item: about 32 M scores per batch (a model
    /// that builds a wider tensor per pair takes fewer), so memory stays bounded whatever the
    /// number of customers.
    fn scoring_batch(&self, items: usize) -> usize {
        (32_000_000 / items.max(1)).clamp(1, 1024)
    }
    /// One vector per item `[items, d]` whose cosine measures similarity, when the model has one.
    fn item_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        None
    }
    /// How similar every item is to `item` `[items]` (cosine of the item vectors by default).
    fn similar_items(&self, item: u32, context: &ScoreContext) -> Option<Tensor<1>> {
        let vectors = self.item_vectors(context)?;
        let [n, d] = vectors.dims();
        let unit = vectors.clone() / (vectors.powi_scalar(2).sum_dim(1).sqrt() + 1e-9);
        let this = unit.clone().narrow(0, item as usize, 1).reshape([d, 1]);
        Some(unit.matmul(this).reshape([n]))
    }
    /// One vector per customer `[users, d]` (what segmentation clusters), when the model has one.
    fn user_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        None
    }
}

/// Turns host indices into a device tensor.
pub fn index_tensor(values: &[u32], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

/// Rows of `table` at `indices`.
pub fn rows(table: Tensor<2>, indices: Tensor<1, Int>) -> Tensor<2> {
    table.select(0, indices)
}

/// `-log σ(x)` averaged, computed stably.
pub fn softplus_neg_mean(x: Tensor<1>) -> Tensor<1> {
    burn::tensor::activation::softplus(x.neg(), 1.0).mean()
}

/// What ranking, similarity and segmentation need of a trained model, whatever its type.
pub trait Ranker {
    fn scores(&self, users: &[u32], context: &ScoreContext) -> Tensor<2>;
    fn scoring_batch(&self, items: usize) -> usize;
    fn similar_items(&self, item: u32, context: &ScoreContext) -> Option<Tensor<1>>;
    fn user_vectors(&self, context: &ScoreContext) -> Option<Tensor<2>>;
}

impl<M: Recommender> Ranker for M {
    fn scores(&self, users: &[u32], context: &ScoreContext) -> Tensor<2> {
        Recommender::scores(self, users, context)
    }
    fn scoring_batch(&self, items: usize) -> usize {
        Recommender::scoring_batch(self, items)
    }
    fn similar_items(&self, item: u32, context: &ScoreContext) -> Option<Tensor<1>> {
        Recommender::similar_items(self, item, context)
    }
    fn user_vectors(&self, context: &ScoreContext) -> Option<Tensor<2>> {
        Recommender::user_vectors(self, context)
    }
}
