//! `two-tower`, the hybrid: a customer tower and an item tower, each over an ID embedding, the
//! mean embedding of its feature tokens and its numbers, trained with in-batch sampled softmax
//! (each customer's item against the other items of the batch, with the logQ correction for
//! how often each item is drawn), or with the exact softmax over every item for small
//! catalogues. Training hides items' own IDs now and then, so the item tower also places items
//! from their features alone: that is how it recommends items nobody has bought yet.

use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use vitrine_core::cross_entropy::softmax_cross_entropy;
use vitrine_core::dropout::dropout;

use super::{Recommender, ScoreContext, index_tensor};
use crate::data::FeatureTensors;
use crate::data::batches::RecBatch;

/// One tower: ID, feature tokens and numbers → an MLP → a unit vector (and, for the item tower
/// with `model.item_bias`, a score offset).
#[derive(Module, Debug)]
pub struct Tower {
    id_embedding: Embedding,
    /// Feature tokens, plus one always-zero padding row.
    feature_embedding: Option<Embedding>,
    numbers: Option<Linear>,
    layers: Vec<Linear>,
    /// A score offset per entity from the last layer's input (`model.item_bias`).
    bias: Option<Linear>,
    dropout: Dropout,
}

/// The sizes a tower is built with.
pub struct TowerShape {
    pub ids: usize,
    /// Feature vocabulary size, when there are features.
    pub vocabulary: Option<usize>,
    pub numeric_columns: usize,
    /// Whether the tower also gives each entity a score offset.
    pub bias: bool,
}

impl Tower {
    pub fn new(shape: &TowerShape, dim: usize, hidden: &[usize], dropout: f64, device: &Device) -> Self {
        let embedding = |rows| EmbeddingConfig::new(rows, dim).with_initializer(Initializer::Normal { mean: 0.0, std: 0.05 }).init(device);
        let inputs = dim * (1 + usize::from(shape.vocabulary.is_some()) + usize::from(shape.numeric_columns > 0));
        let widths: Vec<usize> = std::iter::once(inputs).chain(hidden.iter().copied()).chain(std::iter::once(dim)).collect();
        Self {
            id_embedding: embedding(shape.ids),
            feature_embedding: shape.vocabulary.map(|v| embedding(v + 1)),
            numbers: (shape.numeric_columns > 0).then(|| LinearConfig::new(shape.numeric_columns, dim).init(device)),
            layers: widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect(),
            bias: shape.bias.then(|| LinearConfig::new(widths[widths.len() - 2], 1).init(device)),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// Unit vectors `[b, d]` of entities `ids`, and their score offsets `[b, 1]` for a tower with
    /// them; `keep_id` `[b, 1]` (1 or 0) says whose ID embedding counts.
    fn forward(&self, ids: Tensor<1, Int>, features: Option<&FeatureTensors>, keep_id: Option<Tensor<2>>) -> Placed {
        let mut id = self.id_embedding.weight.val().select(0, ids.clone()); // [b, d]
        if let Some(keep) = keep_id {
            id = id * keep;
        }
        let mut parts = vec![id];
        if let (Some(table), Some(f)) = (&self.feature_embedding, features) {
            let tokens = f.ids.clone().select(0, ids.clone()); // [b, t]
            let mask = f.mask.clone().select(0, ids.clone()); // [b, t]
            let [b, t] = tokens.dims();
            let d = table.weight.dims()[1];
            let embedded = table.weight.val().select(0, tokens.reshape([b * t])).reshape([b, t, d]);
            let summed = (embedded * mask.clone().unsqueeze_dim::<3>(2)).sum_dim(1).reshape([b, d]);
            parts.push(summed / (mask.sum_dim(1) + 1.0)); // a mean that stays small for few tokens
        }
        if let (Some(linear), Some(numbers)) = (&self.numbers, features.and_then(|f| f.numbers.clone())) {
            parts.push(linear.forward(numbers.select(0, ids)));
        }
        let mut h = Tensor::cat(parts, 1);
        let last = self.layers.len() - 1;
        let mut bias = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let input = dropout(&self.dropout, h);
            if i == last {
                bias = self.bias.as_ref().map(|b| b.forward(input.clone()));
            }
            h = layer.forward(input);
            if i < last {
                h = relu(h);
            }
        }
        let norm = h.clone().powi_scalar(2).sum_dim(1).sqrt() + 1e-6;
        (h / norm, bias)
    }
}

/// The two towers and the softmax temperature.
#[derive(Module, Debug)]
pub struct TwoTower {
    user_tower: Tower,
    item_tower: Tower,
    temperature: f64,
    id_dropout: f64,
    extra_negatives: usize,
    /// Every item a candidate of every training step (the exact softmax).
    full_softmax: bool,
}

/// Unit vectors `[n, d]` and score offsets `[n, 1]`, when the tower gives them.
type Placed = (Tensor<2>, Option<Tensor<2>>);

/// How the two towers are trained.
pub struct TwoTowerTraining {
    pub temperature: f64,
    pub id_dropout: f64,
    /// Uniformly drawn items added to each batch's negatives (mixed negative sampling).
    pub extra_negatives: usize,
    /// Score each customer's item against every item (the exact softmax) instead of sampling.
    pub full_softmax: bool,
}

impl TwoTower {
    pub fn new(users: &TowerShape, items: &TowerShape, dim: usize, hidden: &[usize], dropout: f64, training: TwoTowerTraining, device: &Device) -> Self {
        Self {
            user_tower: Tower::new(users, dim, hidden, dropout, device),
            item_tower: Tower::new(items, dim, hidden, dropout, device),
            temperature: training.temperature,
            id_dropout: training.id_dropout,
            extra_negatives: training.extra_negatives,
            full_softmax: training.full_softmax,
        }
    }

    /// Every item's vector `[items, d]` and offset; cold-start items without their ID embedding.
    fn all_items(&self, context: &ScoreContext) -> Placed {
        let device = self.item_tower.id_embedding.weight.device();
        let ids = Tensor::<1, Int>::arange(0..context.items as i64, &device);
        let keep = context.warm_items.clone().map(|w| w.unsqueeze_dim::<2>(1));
        self.item_tower.forward(ids, context.item_features.as_ref(), keep)
    }

    /// Customer vectors `[users.len(), d]`.
    fn customers(&self, users: Tensor<1, Int>, context: &ScoreContext) -> Tensor<2> {
        self.user_tower.forward(users, context.user_features.as_ref(), None).0
    }

    /// The softmax over every item of each customer's item `[b]`, for customer vectors `u`
    /// `[b, d]`: exact, for catalogues small enough to place whole at every step. Cold-start
    /// items are nobody's candidates; the others lose their ID embedding at the `id_dropout` rate.
    fn exact_softmax_loss(&self, u: Tensor<2>, items: Tensor<1, Int>, context: &ScoreContext) -> Tensor<1> {
        let n = context.items;
        let device = u.device();
        let ids = Tensor::<1, Int>::arange(0..n as i64, &device);
        let warm = context.warm_items.clone().unwrap_or_else(|| Tensor::ones([n], &device));
        let keep =
            if self.id_dropout > 0.0 { warm.clone() * Tensor::<1>::random([n], Distribution::Bernoulli(1.0 - self.id_dropout), &device) } else { warm.clone() };
        let placed = self.item_tower.forward(ids, context.item_features.as_ref(), Some(keep.unsqueeze_dim::<2>(1)));
        let logits = self.logits(u, placed) + ((warm - 1.0) * 1e9).reshape([1, n]); // [b, n]
        softmax_cross_entropy(logits, items).mean()
    }

    /// Scores `[users, items]` of customer vectors `u` against placed items: `u·i / τ + offset`.
    fn logits(&self, u: Tensor<2>, (items, offsets): Placed) -> Tensor<2> {
        let n = items.dims()[0];
        let logits = u.matmul(items.transpose()) / self.temperature;
        match offsets {
            Some(offsets) => logits + offsets.reshape([1, n]),
            None => logits,
        }
    }
}

impl Recommender for TwoTower {
    /// In-batch softmax: each customer's item must score above the batch's other items (or,
    /// with `full_softmax`, above every item).
    fn loss(&self, batch: RecBatch, context: &ScoreContext) -> Tensor<1> {
        let RecBatch::Positives { users, items } = batch else { unreachable!("two-tower trains on positives") };
        let b = users.dims()[0];
        let device = users.device();
        let u = self.customers(users, context); // [b, d]
        if self.full_softmax {
            return self.exact_softmax_loss(u, items, context);
        }
        let keep = (self.id_dropout > 0.0).then(|| Tensor::<2>::random([b, 1], Distribution::Bernoulli(1.0 - self.id_dropout), &device));
        let i = self.item_tower.forward(items.clone(), context.item_features.as_ref(), keep); // [b, d]
        let mut logits = self.logits(u.clone(), i); // [b, b]
        // logQ correction (Yi et al. 2019): a popular item is a negative of many customers in a
        // batch; subtracting the log of how often it is drawn makes in-batch softmax estimate the
        // full softmax instead of pushing popular items down.
        if let Some(log_frequency) = &context.item_log_frequency {
            logits = logits - log_frequency.clone().select(0, items.clone()).unsqueeze_dim::<2>(0);
        }
        // The same item twice in a batch is not a negative of itself.
        let same = items.clone().unsqueeze_dim::<2>(1).equal(items.clone().unsqueeze_dim::<2>(0)); // [b, b]
        let diagonal = Tensor::<2>::eye(b, &device);
        let mut logits = logits.mask_fill(same.bool_and(diagonal.equal_elem(0.0)), -1e9);
        if self.extra_negatives > 0 {
            // Mixed negative sampling (Yang et al. 2020): uniformly drawn items join the batch's,
            // corrected by their own draw probability, 1 / items.
            let n = self.extra_negatives;
            let extra = Tensor::<1, Int>::random([n], Distribution::Uniform(0.0, context.items as f64), &device);
            let e = self.item_tower.forward(extra.clone(), context.item_features.as_ref(), None); // [n, d]
            let extra_logits = self.logits(u, e) + (context.items as f64).ln();
            let own = items.unsqueeze_dim::<2>(1).equal(extra.unsqueeze_dim::<2>(0)); // [b, n]
            logits = Tensor::cat(vec![logits, extra_logits.mask_fill(own, -1e9)], 1); // [b, b + n]
        }
        // Customer r's own item is column r.
        softmax_cross_entropy(logits, Tensor::arange(0..b as i64, &device)).mean()
    }

    fn scores(&self, users: &[u32], context: &ScoreContext) -> Tensor<2> {
        let device = self.user_tower.id_embedding.weight.device();
        self.logits(self.customers(index_tensor(users, &device), context), self.all_items(context))
    }

    fn item_vectors(&self, context: &ScoreContext) -> Option<Tensor<2>> {
        Some(self.all_items(context).0)
    }

    fn user_vectors(&self, context: &ScoreContext) -> Option<Tensor<2>> {
        let device = self.user_tower.id_embedding.weight.device();
        let users = self.user_tower.id_embedding.weight.dims()[0];
        Some(self.customers(Tensor::arange(0..users as i64, &device), context))
    }
}
