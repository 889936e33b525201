//! The counted baselines: `pop` (most interactions first) and `item-knn` (RecBole's ItemKNN:
//! cosine similarity of items over the 0/1 interaction matrix, the `k` most similar kept per
//! item, a customer's score for an item the sum of its similarities to the items they have).
//! Both are computed with tensor ops in one pass over the customers' rows.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use super::{Recommender, ScoreContext};
use crate::data::batches::RecBatch;

/// The most catalogue `item-knn` takes: it keeps an item × item table.
pub const ITEM_KNN_MAX_ITEMS: usize = 30_000;

fn constant<const D: usize>(tensor: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(tensor).set_require_grad(false)
}

/// `pop`: every customer gets the items with the most training interactions.
#[derive(Module, Debug)]
pub struct Popularity {
    counts: Param<Tensor<1>>,
}

impl Popularity {
    pub fn new(items: usize, device: &Device) -> Self {
        Self { counts: constant(Tensor::zeros([items], device)) }
    }

    /// A popularity model of known counts.
    pub fn with_counts(counts: &[u64], device: &Device) -> Self {
        let counts: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
        let n = counts.len();
        Self { counts: constant(Tensor::from_data(TensorData::new(counts, [n]), device)) }
    }

    /// Training interactions per item `[items]`.
    pub fn counts(&self) -> Tensor<1> {
        self.counts.val()
    }
}

impl Recommender for Popularity {
    const COUNTED: bool = true;

    fn count(self, batch: RecBatch) -> Self {
        let RecBatch::Rows { rows } = batch else { unreachable!("pop counts rows of the interaction matrix") };
        let sums: Tensor<1> = rows.sum_dim(0).flatten(0, 1); // [items]
        Self { counts: constant(self.counts.val() + sums.to_device(&self.counts.device())) }
    }

    fn finish(self) -> Self {
        self
    }

    fn reset(self) -> Self {
        Self { counts: constant(self.counts.val().zeros_like()) }
    }

    fn loss(&self, _batch: RecBatch, _context: &ScoreContext) -> Tensor<1> {
        Tensor::zeros([1], &self.counts.device())
    }

    fn scores(&self, users: &[u32], _context: &ScoreContext) -> Tensor<2> {
        let counts = self.counts.val().unsqueeze_dim::<2>(0); // [1, items]
        counts.repeat_dim(0, users.len())
    }
}

/// `item-knn`: item-to-item cosine similarity, top `neighbours` per item.
#[derive(Module, Debug)]
pub struct ItemKnn {
    /// `Rᵀ R` summed over the pass: how many customers have both items `[items, items]`.
    cooccurrence: Param<Tensor<2>>,
    /// `similarity[j, i]`: the similarity of item `j` to item `i` when `j` is among the
    /// `neighbours` most similar items of `i`, else 0 `[items, items]`.
    similarity: Param<Tensor<2>>,
    neighbours: usize,
}

impl ItemKnn {
    pub fn new(items: usize, neighbours: usize, device: &Device) -> Self {
        Self {
            cooccurrence: constant(Tensor::zeros([items, items], device)),
            similarity: constant(Tensor::zeros([items, items], device)),
            neighbours: neighbours.clamp(1, items.max(1)),
        }
    }

    /// The kept similarities `[items, items]` (column `i`: the neighbours of item `i`).
    pub fn similarity(&self) -> Tensor<2> {
        self.similarity.val()
    }
}

impl Recommender for ItemKnn {
    const COUNTED: bool = true;

    fn count(self, batch: RecBatch) -> Self {
        let RecBatch::Rows { rows } = batch else { unreachable!("item-knn counts rows of the interaction matrix") };
        let rows = rows.to_device(&self.cooccurrence.device());
        let pairs = rows.clone().transpose().matmul(rows); // [items, items]
        Self { cooccurrence: constant(self.cooccurrence.val() + pairs), ..self }
    }

    fn finish(self) -> Self {
        let c = self.cooccurrence.val();
        let [n, _] = c.dims();
        let device = c.device();
        let norms = c.clone().mul(Tensor::eye(n, &device)).sum_dim(1).sqrt(); // [n, 1]: √(customers of item)
        let denominator = norms.clone().matmul(norms.transpose()) + 1e-6; // [n, n]
        let mask = Tensor::<2>::eye(n, &device).equal_elem(1.0);
        let cosine = (c / denominator).mask_fill(mask, 0.0); // no item is its own neighbour
        let (values, rows) = cosine.clone().topk_with_indices(self.neighbours, 0); // [k, n]: each column's best
        let kept = cosine.zeros_like().scatter(0, rows, values, IndexingUpdateOp::Add);
        Self { similarity: constant(kept), ..self }
    }

    fn reset(self) -> Self {
        Self { cooccurrence: constant(self.cooccurrence.val().zeros_like()), ..self }
    }

    fn loss(&self, _batch: RecBatch, _context: &ScoreContext) -> Tensor<1> {
        Tensor::zeros([1], &self.similarity.device())
    }

    fn scores(&self, users: &[u32], context: &ScoreContext) -> Tensor<2> {
        let device = self.similarity.device();
        context.history_rows(users, &device).matmul(self.similarity.val()) // [users, items]
    }

    fn similar_items(&self, item: u32, _context: &ScoreContext) -> Option<Tensor<1>> {
        let n = self.similarity.dims()[0];
        Some(self.similarity.val().narrow(1, item as usize, 1).reshape([n])) // the item's kept neighbours
    }
}
