//! `sasrec` (Kang & McAuley 2018, RecBole's `SASRec`): item and position embeddings, a causal
//! Transformer encoder (post-norm, GELU), and at each position a softmax over every item, the
//! item table shared between input and output. Each customer's next item is predicted from
//! their `max_len` most recent ones. burn's encoder modules hold the weights; their forward
//! pass is written out here (the same operations, dropouts in the same order) so that layer norm
//! and the attention weights run as one operation each on `flex`.

use burn::nn::attention::{MultiHeadAttention, generate_autoregressive_mask};
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderLayer};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use vitrine_core::attention::attention_weights;
use vitrine_core::cross_entropy::softmax_cross_entropy;
use vitrine_core::layer_norm::layer_norm;

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
        let hidden = hidden_keys(&inputs);
        self.encoder.layers.iter().fold(self.embed(inputs), |x, layer| encoder_layer(layer, x, hidden.clone()))
    }

    /// The encoder's input `[b, len, d]`: item and position embeddings, normalised.
    fn embed(&self, inputs: Tensor<2, Int>) -> Tensor<3> {
        let [b, len] = inputs.dims();
        let positions = Tensor::<1, Int>::arange(0..len as i64, &inputs.device()).unsqueeze_dim::<2>(0).repeat_dim(0, b);
        let x = self.item_embedding.forward(inputs) + self.position_embedding.forward(positions);
        self.dropout.forward(layer_norm(&self.layer_norm, x, LAYER_NORM_EPSILON))
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
        let hidden = hidden_keys(&ids);
        let (final_layer, earlier) = self.encoder.layers.split_last().expect("sasrec has at least one layer");
        let x = earlier.iter().fold(self.embed(ids), |x, layer| encoder_layer(layer, x, hidden.clone()));
        let d = x.dims()[2];
        let at: Vec<i64> = last.iter().enumerate().map(|(r, &t)| (r * len + t) as i64).collect();
        let latest = x.clone().reshape([b * len, d]).select(0, Tensor::<1, Int>::from_data(TensorData::new(at, [b]), &device));
        // At the latest real position the causal mask hides only what the padding mask does.
        layer_forward(final_layer, latest.reshape([b, 1, d]), x, padding.unsqueeze_dim(1)).reshape([b, d])
    }
}

/// The keys each query of item ids `[b, len]` may not see `[b, len, len]`: later positions
/// (causal) and padding.
fn hidden_keys(ids: &Tensor<2, Int>) -> Tensor<3, Bool> {
    let [b, len] = ids.dims();
    let padding = ids.clone().equal_elem(0).unsqueeze_dim::<3>(1).expand([b, len, len]);
    generate_autoregressive_mask(b, len, &ids.device()).bool_or(padding)
}

/// burn's post-norm `TransformerEncoderLayer::forward` over a whole sequence `[b, len, d]`.
fn encoder_layer(layer: &TransformerEncoderLayer, x: Tensor<3>, hidden: Tensor<3, Bool>) -> Tensor<3> {
    layer_forward(layer, x.clone(), x, hidden)
}

/// burn's post-norm `TransformerEncoderLayer::forward`, its dropouts drawn in the same order,
/// for `queries` `[b, q, d]` attending to `sequence` `[b, len, d]` except where `hidden`
/// `[b, q, len]`; its normalisations and attention weights as one operation each on `flex`.
fn layer_forward(layer: &TransformerEncoderLayer, queries: Tensor<3>, sequence: Tensor<3>, hidden: Tensor<3, Bool>) -> Tensor<3> {
    debug_assert!(!layer.norm_first, "sasrec's encoder is post-norm");
    let attended = layer.dropout.forward(attention(&layer.mha, queries.clone(), sequence, hidden));
    let x = layer_norm(&layer.norm_1, queries + attended, LAYER_NORM_EPSILON);
    let fed = layer.dropout.forward(layer.pwff.forward(x.clone()));
    layer_norm(&layer.norm_2, x + fed, LAYER_NORM_EPSILON)
}

/// burn's `MultiHeadAttention::forward` (its context), the keys and values from `sequence`.
fn attention(mha: &MultiHeadAttention, queries: Tensor<3>, sequence: Tensor<3>, hidden: Tensor<3, Bool>) -> Tensor<3> {
    let [b, q, d] = queries.dims();
    let heads = |x: Tensor<3>, linear: &Linear| {
        let [b, len, _] = x.dims();
        linear.forward(x).reshape([b, len, mha.n_heads, mha.d_k]).swap_dims(1, 2)
    };
    let (query, key, value) = (heads(queries, &mha.query), heads(sequence.clone(), &mha.key), heads(sequence, &mha.value));
    let weights = attention_weights(query.matmul(key.transpose()), hidden, (mha.d_k as f32).sqrt(), mha.min_float as f32);
    let context = mha.dropout.forward(weights).matmul(value).swap_dims(1, 2).reshape([b, q, d]);
    mha.output.forward(context)
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

    use burn::nn::transformer::TransformerEncoderInput;

    use super::*;

    /// The encoder, with its normalisations and attention weights fused on flex, equals burn's
    /// `TransformerEncoder` with the same masks, dropouts included (drawn in the same order from
    /// the same seed): the hidden states and the gradients of the item table and a scale.
    #[test]
    fn the_encoder_equals_burns_transformer_encoder_dropouts_and_gradients_included() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let shape = SasrecShape { items: 40, dim: 16, max_len: 8, layers: 2, heads: 2, feed_forward: 32, dropout: 0.2 };
        let model = Sasrec::new(&shape, &device);
        let ids: Vec<i64> = vec![3, 9, 1, 40, 7, 2, 5, 8, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [3, 8]), &device);
        let weights = Tensor::<3>::from_data(TensorData::new((0..3 * 8 * 16).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<f32>>(), [3, 8, 16]), &device);
        let run = |encode: &dyn Fn() -> Tensor<3>| {
            device.seed(11);
            let hidden = encode();
            let grads = (hidden.clone() * weights.clone()).sum().backward();
            let items = model.item_embedding.weight.val().grad(&grads).expect("a gradient for the item table");
            let scale = model.encoder.layers[0].norm_1.gamma.val().grad(&grads).expect("a gradient for a scale");
            [hidden.inner(), items.reshape([41 * 16]).unsqueeze_dim::<2>(0).unsqueeze_dim(0), scale.unsqueeze_dim::<2>(0).unsqueeze_dim(0)].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
        };
        // burn initialises parameters when first read, from the same generator as the dropouts.
        run(&|| model.encode(ids.clone()));
        let ours = run(&|| model.encode(ids.clone()));
        let burns = run(&|| {
            let input = TransformerEncoderInput::new(model.embed(ids.clone())).mask_pad(ids.clone().equal_elem(0)).mask_attn(generate_autoregressive_mask(3, 8, &device));
            model.encoder.forward(input)
        });
        for (what, (ours, burns)) in ["hidden states", "item table's gradient", "scale's gradient"].iter().zip(ours.iter().zip(&burns)) {
            assert!(ours.iter().any(|&v| v != 0.0), "{what}: all zero");
            for (i, (o, b)) in ours.iter().zip(burns).enumerate() {
                assert!((o - b).abs() <= 1e-4 * b.abs().max(1.0), "{what} at {i}: {o} against burn's {b}");
            }
        }
    }

    /// The ranking state, computed at each customer's latest position only in the last layer,
    /// equals the whole encoder's output there: customers with full, short and empty histories.
    #[test]
    fn the_latest_position_alone_gives_the_whole_encoders_state() {
        let device = Device::flex();
        device.seed(3);
        let shape = SasrecShape { items: 40, dim: 16, max_len: 8, layers: 2, heads: 2, feed_forward: 32, dropout: 0.2 };
        let model = Sasrec::new(&shape, &device);
        let history: Vec<Vec<u32>> = vec![(0..12).map(|i| (i * 7 % 40) as u32).collect(), vec![5, 9, 1], vec![], vec![39]];
        let context = ScoreContext { history: Arc::new(history), items: 40, item_features: None, user_features: None, warm_items: None, item_log_frequency: None };
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
