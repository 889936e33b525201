//! `sasrec` (Kang & McAuley 2018, RecBole's `SASRec`): item and position embeddings, a causal
//! Transformer encoder (post-norm, GELU), and at each position a softmax over every item, the
//! item table shared between input and output. Each customer's next item is predicted from
//! their `max_len` most recent ones. The encoder runs through `vitrine_core::transformer`, which
//! fuses its layer norms and attention weights on `flex`.

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use vitrine_core::attention::padded_keys;
use vitrine_core::cross_entropy::softmax_cross_entropy;
use vitrine_core::dropout::dropout;
use vitrine_core::layer_norm::layer_norm;
use vitrine_core::transformer::{encoder_layer, encoder_layer_at};

use super::{Recommender, ScoreContext};
use crate::data::batches::RecBatch;

/// The encoder; item `i` is row `i + 1` of `item_embedding` (row 0 is padding).
#[derive(Module, Debug)]
pub struct Sasrec {
    item_embedding: Embedding,
    position_embedding: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
    encoder: TransformerEncoder,
    max_len: usize,
}

/// The sizes `sasrec` is built with.
pub struct SasrecShape {
    pub items: usize,
    pub dim: usize,
    pub max_len: usize,
    pub layers: usize,
    pub heads: usize,
    pub feed_forward: usize,
    pub dropout: f64,
}

/// RecBole's LayerNorm ε, in every normalisation.
const LAYER_NORM_EPSILON: f64 = 1e-12;

impl Sasrec {
    pub fn new(s: &SasrecShape, device: &Device) -> Self {
        // RecBole: N(0, 0.02) everywhere.
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        Self {
            item_embedding: EmbeddingConfig::new(s.items + 1, s.dim).with_initializer(normal.clone()).init(device),
            position_embedding: EmbeddingConfig::new(s.max_len, s.dim).with_initializer(normal.clone()).init(device),
            layer_norm: LayerNormConfig::new(s.dim).with_epsilon(LAYER_NORM_EPSILON).init(device),
            dropout: DropoutConfig::new(s.dropout).init(),
            encoder: TransformerEncoderConfig::new(s.dim, s.feed_forward, s.heads, s.layers)
                .with_dropout(s.dropout)
                .with_layer_norm_eps(LAYER_NORM_EPSILON)
                .with_initializer(normal)
                .init(device),
            max_len: s.max_len,
        }
    }

    /// Hidden states `[b, len, d]` of item ids `[b, len]` (0 = padding, at the end).
    fn encode(&self, inputs: Tensor<2, Int>) -> Tensor<3> {
        let hidden = hidden_keys(inputs.clone().equal_elem(0));
        self.encoder.layers.iter().fold(self.embed(inputs), |x, layer| encoder_layer(layer, x, hidden.clone(), LAYER_NORM_EPSILON))
    }

    /// The encoder's input `[b, len, d]`: item and position embeddings, normalised.
    fn embed(&self, inputs: Tensor<2, Int>) -> Tensor<3> {
        let [b, len] = inputs.dims();
        let positions = Tensor::<1, Int>::arange(0..len as i64, &inputs.device()).unsqueeze_dim::<2>(0).repeat_dim(0, b);
        let x = self.item_embedding.forward(inputs) + self.position_embedding.forward(positions);
        dropout(&self.dropout, layer_norm(&self.layer_norm, x, LAYER_NORM_EPSILON))
    }

    /// The item table without its padding row `[items, d]`.
    fn items(&self) -> Tensor<2> {
        let [rows, d] = self.item_embedding.weight.dims();
        self.item_embedding.weight.val().narrow(0, 1, rows - 1).reshape([rows - 1, d])
    }

    /// Each customer's last `max_len` items as a left-aligned row of ids `[users, len]`, and the
    /// position of their last item.
    fn recent(&self, users: &[u32], context: &ScoreContext, device: &Device) -> (Tensor<2, Int>, Vec<usize>) {
        let len = self.max_len;
        let mut ids = vec![0i64; users.len() * len];
        let mut last = Vec::with_capacity(users.len());
        for (r, &u) in users.iter().enumerate() {
            let history = &context.history[u as usize];
            let recent = &history[history.len().saturating_sub(len)..];
            for (t, &item) in recent.iter().enumerate() {
                ids[r * len + t] = item as i64 + 1;
            }
            last.push(recent.len().saturating_sub(1));
        }
        (Tensor::from_data(TensorData::new(ids, [users.len(), len]), device), last)
    }
}

impl Sasrec {
    /// The hidden state after each customer's latest item `[users, d]`, for ranking (no dropout).
    /// The encoder is causal and post-norm, so its last layer runs at that one position only:
    /// its keys and values still come from every position, and nothing else of that layer is
    /// needed. The layers before it run whole.
    fn state(&self, users: &[u32], context: &ScoreContext) -> Tensor<2> {
        let device = self.item_embedding.weight.device();
        let (ids, last) = self.recent(users, context, &device);
        let [b, len] = ids.dims();
        let padding = ids.clone().equal_elem(0);
        let hidden = hidden_keys(padding.clone());
        let (final_layer, earlier) = self.encoder.layers.split_last().expect("sasrec has at least one layer");
        let x = earlier.iter().fold(self.embed(ids), |x, layer| encoder_layer(layer, x, hidden.clone(), LAYER_NORM_EPSILON));
        let d = x.dims()[2];
        let at: Vec<i64> = last.iter().enumerate().map(|(r, &t)| (r * len + t) as i64).collect();
        let latest = x.clone().reshape([b * len, d]).select(0, Tensor::<1, Int>::from_data(TensorData::new(at, [b]), &device));
        // At the latest real position the causal mask hides only what the padding mask does.
        encoder_layer_at(final_layer, latest.reshape([b, 1, d]), x, padding.unsqueeze_dim(1), LAYER_NORM_EPSILON).reshape([b, d])
    }
}

/// The keys each query may not see `[b, len, len]`, from the padding of item ids `[b, len]`:
/// later positions (causal) and padding.
fn hidden_keys(padding: Tensor<2, Bool>) -> Tensor<3, Bool> {
    let [b, len] = padding.dims();
    generate_autoregressive_mask(b, len, &padding.device()).bool_or(padded_keys(padding))
}

impl Recommender for Sasrec {
    /// Cross-entropy of the next item at every position that has one.
    fn loss(&self, batch: RecBatch, _context: &ScoreContext) -> Tensor<1> {
        let RecBatch::Sequences { inputs, targets, mask } = batch else { unreachable!("sasrec trains on sequences") };
        let [b, len] = inputs.dims();
        let hidden = self.encode(inputs); // [b, len, d]
        let d = hidden.dims()[2];
        let logits = hidden.reshape([b * len, d]).matmul(self.items().transpose()); // [b·len, items]
        let losses = softmax_cross_entropy(logits, targets.reshape([b * len]));
        let mask = mask.reshape([b * len]);
        (losses * mask.clone()).sum() / mask.sum().clamp_min(1.0)
    }

    fn scores(&self, users: &[u32], context: &ScoreContext) -> Tensor<2> {
        self.state(users, context).matmul(self.items().transpose()) // [users, items]
    }

    fn item_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        Some(self.items())
    }

    /// Each customer's state after their latest item: what they are likely to want next.
    fn user_vectors(&self, context: &ScoreContext) -> Option<Tensor<2>> {
        let users: Vec<u32> = (0..context.history.len() as u32).collect();
        Some(Tensor::cat(users.chunks(1024).map(|chunk| self.state(chunk, context)).collect(), 0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The ranking state, computed at each customer's latest position only in the last layer,
    /// equals the whole encoder's output there: customers with full, short and empty histories.
    #[test]
    fn the_latest_position_alone_gives_the_whole_encoders_state() {
        let device = Device::flex();
        device.seed(3);
        let shape = SasrecShape { items: 40, dim: 16, max_len: 8, layers: 2, heads: 2, feed_forward: 32, dropout: 0.2 };
        let model = Sasrec::new(&shape, &device);
        let history: Vec<Vec<u32>> = vec![(0..12).map(|i| (i * 7 % 40) as u32).collect(), vec![5, 9, 1], vec![], vec![39]];
        let context =
            ScoreContext { history: Arc::new(history), items: 40, item_features: None, user_features: None, warm_items: None, item_log_frequency: None };
        let users = [0u32, 1, 2, 3];
        let (ids, last) = model.recent(&users, &context, &device);
        let whole = model.encode(ids).into_data().try_to_vec::<f32>().unwrap();
        let got = model.state(&users, &context).into_data().try_to_vec::<f32>().unwrap();
        let d = shape.dim;
        for (r, &t) in last.iter().enumerate() {
            let want = &whole[(r * shape.max_len + t) * d..][..d];
            for (g, w) in got[r * d..][..d].iter().zip(want) {
                assert!((g - w).abs() <= 1e-5, "customer {r}: {g} against the whole encoder's {w}");
            }
        }
    }
}
