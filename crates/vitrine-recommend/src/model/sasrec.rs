//! `sasrec` (Kang & McAuley 2018, RecBole's `SASRec`): item and position embeddings, a causal
//! Transformer encoder (post-norm, GELU), and at each position a softmax over every item, the
//! item table shared between input and output. Each customer's next item is predicted from
//! their `max_len` most recent ones.

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use vitrine_core::cross_entropy::softmax_cross_entropy;

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

impl Sasrec {
    pub fn new(s: &SasrecShape, device: &Device) -> Self {
        // RecBole: N(0, 0.02) everywhere, LayerNorm ε = 1e-12.
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        Self {
            item_embedding: EmbeddingConfig::new(s.items + 1, s.dim).with_initializer(normal.clone()).init(device),
            position_embedding: EmbeddingConfig::new(s.max_len, s.dim).with_initializer(normal.clone()).init(device),
            layer_norm: LayerNormConfig::new(s.dim).with_epsilon(1e-12).init(device),
            dropout: DropoutConfig::new(s.dropout).init(),
            encoder: TransformerEncoderConfig::new(s.dim, s.feed_forward, s.heads, s.layers)
                .with_dropout(s.dropout)
                .with_layer_norm_eps(1e-12)
                .with_initializer(normal)
                .init(device),
            max_len: s.max_len,
        }
    }

    /// Hidden states `[b, len, d]` of item ids `[b, len]` (0 = padding, at the end).
    fn encode(&self, inputs: Tensor<2, Int>) -> Tensor<3> {
        let [b, len] = inputs.dims();
        let device = inputs.device();
        let positions = Tensor::<1, Int>::arange(0..len as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, b);
        let x = self.item_embedding.forward(inputs.clone()) + self.position_embedding.forward(positions);
        let x = self.dropout.forward(self.layer_norm.forward(x));
        let padding = inputs.equal_elem(0);
        let causal = generate_autoregressive_mask(b, len, &device);
        self.encoder.forward(TransformerEncoderInput::new(x).mask_pad(padding).mask_attn(causal))
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
    /// The hidden state after each customer's latest item `[users, d]`.
    fn state(&self, users: &[u32], context: &ScoreContext) -> Tensor<2> {
        let device = self.item_embedding.weight.device();
        let (ids, last) = self.recent(users, context, &device);
        let hidden = self.encode(ids); // [users, len, d]
        let [b, len, d] = hidden.dims();
        let at: Vec<i64> = last.iter().enumerate().map(|(r, &t)| (r * len + t) as i64).collect();
        hidden.reshape([b * len, d]).select(0, Tensor::<1, Int>::from_data(TensorData::new(at, [b]), &device))
    }
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
