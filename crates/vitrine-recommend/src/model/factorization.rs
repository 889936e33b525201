//! Collaborative filtering by factorisation: `bpr-mf` (Rendle et al. 2009, RecBole's `BPR`) and
//! `neumf` (He et al. 2017, RecBole's `NeuMF`: a GMF and an MLP tower joined by one linear layer).

use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use vitrine_core::dropout::dropout;

use super::sparse::{RowAdam, distinct_rows};
use super::{Recommender, ScoreContext, index_tensor, softplus_neg_mean};
use crate::data::batches::RecBatch;

/// An embedding table initialised like PyTorch's `xavier_normal_` on a `[rows, dim]` weight.
fn xavier_embedding(rows: usize, dim: usize, device: &Device) -> Embedding {
    let std = (2.0 / (rows + dim) as f64).sqrt();
    EmbeddingConfig::new(rows, dim).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device)
}

/// `bpr-mf`: a vector per customer and per item; the score is their dot product.
#[derive(Module, Debug)]
pub struct MatrixFactorization {
    user_embedding: Embedding,
    item_embedding: Embedding,
}

impl MatrixFactorization {
    pub fn new(users: usize, items: usize, dim: usize, device: &Device) -> Self {
        Self { user_embedding: xavier_embedding(users, dim, device), item_embedding: xavier_embedding(items, dim, device) }
    }

    fn users(&self, users: Tensor<1, Int>) -> Tensor<2> {
        self.user_embedding.weight.val().select(0, users) // [b, d]
    }
}

/// BPR's `-log σ(u·p − u·n)` of customer vectors `[b, d]`, their positives `[b, d]` and their
/// sampled negatives `[b·n, d]` (n per customer, in order).
fn bpr_loss(u: Tensor<2>, positives: Tensor<2>, negatives: Tensor<2>) -> Tensor<1> {
    let [b, d] = u.dims();
    let n = negatives.dims()[0] / b;
    let positive = (u.clone() * positives).sum_dim(1); // [b, 1]
    // Element-wise products summed, as for the positives: as a batched matrix product these
    // were b products of 1×d by d×1, each a call into gemm, forward and backward.
    let negative = (negatives.reshape([b, n, d]) * u.unsqueeze_dim::<3>(1)).sum_dim(2).reshape([b, n]); // [b, n]
    softplus_neg_mean((positive - negative).reshape([b * n]))
}

impl Recommender for MatrixFactorization {
    // Gathers and products of 64 values a row: ~1 ms steps that the pool's hand-over slowed by
    // ~9% (README, "Steps on the compute pool").
    const STEPS_ON_COMPUTE_POOL: bool = false;

    /// BPR: `-log σ(u·p − u·n)` over each positive and its sampled negatives.
    fn loss(&self, batch: RecBatch, _context: &ScoreContext) -> Tensor<1> {
        let RecBatch::Pairs { users, positives, negatives } = batch else { unreachable!("bpr-mf trains on pairs") };
        let [b, n] = negatives.dims();
        let u = self.users(users); // [b, d]
        let items = self.item_embedding.weight.val();
        let negative = items.clone().select(0, negatives.reshape([b * n])); // [b·n, d]
        bpr_loss(u, items.select(0, positives), negative)
    }

    fn scores(&self, users: &[u32], _context: &ScoreContext) -> Tensor<2> {
        let device = self.user_embedding.weight.device();
        self.users(index_tensor(users, &device)).matmul(self.item_embedding.weight.val().transpose())
    }

    fn row_tables(&self) -> Vec<[usize; 2]> {
        vec![self.user_embedding.weight.dims(), self.item_embedding.weight.dims()]
    }

    /// BPR on copies of just the rows the batch uses, whose gradients then move those rows.
    fn row_step(&mut self, batch: RecBatch, lr: f64, adam: &mut RowAdam) -> Tensor<1> {
        let RecBatch::Pairs { users, positives, negatives } = batch else { unreachable!("bpr-mf trains on pairs") };
        let [b, n] = negatives.dims();
        let device = users.device();
        let host = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_into_vec::<i64>().expect("int ids");
        let (user_rows, user_at) = distinct_rows(&host(users));
        let items: Vec<i64> = host(positives).into_iter().chain(host(negatives.reshape([b * n]))).collect();
        let (item_rows, item_at) = distinct_rows(&items);
        let leaf = |table: &Embedding, rows: &[u32]| {
            let inner = table.weight.val().inner();
            Tensor::<2>::from_inner(inner.clone().select(0, index_tensor(rows, &inner.device()))).require_grad()
        };
        let (u_rows, i_rows) = (leaf(&self.user_embedding, &user_rows), leaf(&self.item_embedding, &item_rows));
        let u = u_rows.clone().select(0, index_tensor(&user_at, &device)); // [b, d]
        let picked = i_rows.clone().select(0, index_tensor(&item_at, &device)); // [b + b·n, d]
        let loss = bpr_loss(u, picked.clone().narrow(0, 0, b), picked.narrow(0, b, b * n));
        let grads = loss.backward();
        let step = adam.next_step();
        let (Some(gu), Some(gi)) = (u_rows.grad(&grads), i_rows.grad(&grads)) else { unreachable!("both leaves are in the loss") };
        adam.update(0, &mut self.user_embedding.weight, &user_rows, gu, lr, step);
        adam.update(1, &mut self.item_embedding.weight, &item_rows, gi, lr, step);
        loss.detach()
    }

    fn item_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        Some(self.item_embedding.weight.val())
    }

    fn user_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        Some(self.user_embedding.weight.val())
    }
}

/// `neumf`: GMF (the element-wise product of customer and item vectors) and an MLP over their
/// concatenation (dropout → linear → ReLU per layer), joined by `predict_layer`.
#[derive(Module, Debug)]
pub struct NeuMf {
    user_mf_embedding: Embedding,
    item_mf_embedding: Embedding,
    user_mlp_embedding: Embedding,
    item_mlp_embedding: Embedding,
    mlp_layers: Vec<Linear>,
    dropout: Dropout,
    predict_layer: Linear,
}

impl NeuMf {
    pub fn new(users: usize, items: usize, dim: usize, hidden: &[usize], dropout: f64, device: &Device) -> Self {
        // RecBole initialises the embeddings N(0, 0.01) and leaves PyTorch's linear layers as they are.
        let embedding = |rows| EmbeddingConfig::new(rows, dim).with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 }).init(device);
        let widths: Vec<usize> = std::iter::once(2 * dim).chain(hidden.iter().copied()).collect();
        let last = *widths.last().expect("at least the input width");
        Self {
            user_mf_embedding: embedding(users),
            item_mf_embedding: embedding(items),
            user_mlp_embedding: embedding(users),
            item_mlp_embedding: embedding(items),
            mlp_layers: widths.windows(2).map(|w| torch_linear(w[0], w[1], device)).collect(),
            dropout: DropoutConfig::new(dropout).init(),
            predict_layer: torch_linear(dim + last, 1, device),
        }
    }

    /// Logits of (customer, item) pairs `[b]`.
    fn forward(&self, users: Tensor<1, Int>, items: Tensor<1, Int>) -> Tensor<1> {
        let gather = |e: &Embedding, ids: &Tensor<1, Int>| e.weight.val().select(0, ids.clone());
        let mf = gather(&self.user_mf_embedding, &users) * gather(&self.item_mf_embedding, &items); // [b, d]
        let mut h = Tensor::cat(vec![gather(&self.user_mlp_embedding, &users), gather(&self.item_mlp_embedding, &items)], 1); // [b, 2d]
        for layer in &self.mlp_layers {
            h = relu(layer.forward(dropout(&self.dropout, h)));
        }
        let joined = Tensor::cat(vec![mf, h], 1); // [b, d + last]
        self.predict_layer.forward(joined).flatten(0, 1)
    }
}

/// A linear layer initialised as PyTorch's `nn.Linear` (uniform in ±1/√fan_in).
fn torch_linear(input: usize, output: usize, device: &Device) -> Linear {
    let bound = 1.0 / (input as f64).sqrt();
    LinearConfig::new(input, output).with_initializer(Initializer::Uniform { min: -bound, max: bound }).init(device)
}

impl Recommender for NeuMf {
    /// Binary cross-entropy on logits: each positive towards 1, its sampled negatives towards 0.
    fn loss(&self, batch: RecBatch, _context: &ScoreContext) -> Tensor<1> {
        let RecBatch::Points { users, items, labels } = batch else { unreachable!("neumf trains on labelled points") };
        let logits = self.forward(users, items);
        // BCE with logits = softplus(x) − y·x.
        (burn::tensor::activation::softplus(logits.clone(), 1.0) - labels * logits).mean()
    }

    fn scores(&self, users: &[u32], _context: &ScoreContext) -> Tensor<2> {
        let device = self.user_mf_embedding.weight.device();
        let u = index_tensor(users, &device);
        let b = users.len();
        let predict = self.predict_layer.weight.val(); // [d + last, 1]
        let d = self.user_mf_embedding.weight.dims()[1];
        // GMF part: (u ⊙ w_mf) · iᵀ for every item at once.
        let w_mf = predict.clone().narrow(0, 0, d).reshape([1, d]);
        let gmf = (self.user_mf_embedding.weight.val().select(0, u.clone()) * w_mf).matmul(self.item_mf_embedding.weight.val().transpose()); // [b, items]
        // MLP part: the first layer splits into a customer half and an item half, added per pair.
        let first = &self.mlp_layers[0];
        let w1 = first.weight.val(); // [2d, h1]
        let user_half = self.user_mlp_embedding.weight.val().select(0, u).matmul(w1.clone().narrow(0, 0, d)); // [b, h1]
        let item_half = self.item_mlp_embedding.weight.val().matmul(w1.narrow(0, d, d)); // [items, h1]
        let bias = first.bias.as_ref().map(|b| b.val()).expect("linear layers have biases");
        let items = item_half.dims()[0];
        let h1 = item_half.dims()[1];
        let mut h: Tensor<2> = relu(user_half.unsqueeze_dim::<3>(1) + item_half.unsqueeze_dim::<3>(0) + bias.reshape([1, 1, h1])).reshape([b * items, h1]);
        for layer in &self.mlp_layers[1..] {
            h = relu(layer.forward(h));
        }
        let last = h.dims()[1];
        let mlp = h.matmul(predict.narrow(0, d, last)).reshape([b, items]);
        let bias = self.predict_layer.bias.as_ref().map(|b| b.val()).expect("linear layers have biases").reshape([1, 1]);
        gmf + mlp + bias
    }

    /// The MLP runs on every (customer, item) pair: about 32 M hidden values per batch.
    fn scoring_batch(&self, items: usize) -> usize {
        let h1 = self.mlp_layers[0].weight.dims()[1];
        (32_000_000 / (items * h1).max(1)).clamp(1, 1024)
    }

    fn item_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        Some(Tensor::cat(vec![self.item_mf_embedding.weight.val(), self.item_mlp_embedding.weight.val()], 1))
    }

    fn user_vectors(&self, _context: &ScoreContext) -> Option<Tensor<2>> {
        Some(Tensor::cat(vec![self.user_mf_embedding.weight.val(), self.user_mlp_embedding.weight.val()], 1))
    }
}
