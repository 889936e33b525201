//! A BERT-family encoder (Hugging Face `BertModel`'s layout and parameter names), loaded from a
//! directory with `config.json` and `model.safetensors` as `transformers` writes them
//! (`bert-base-chinese`, `bert-base-uncased`, …). Nothing is downloaded: the user supplies it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Gradients;
use burn::tensor::activation::gelu;
use serde::Deserialize;
use vitrine_core::attention::{attention_weights, padded_keys};
use vitrine_core::dropout::dropout;
use vitrine_core::layer_norm::layer_norm;

/// The files a pretrained encoder directory must hold.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The sizes of `config.json` that shape the encoder.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "epsilon")]
    pub layer_norm_eps: f64,
    #[serde(default = "transformers_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "transformers_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn epsilon() -> f64 {
    1e-12
}
fn transformers_dropout() -> f64 {
    0.1
}
fn gelu_name() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Reads and checks `DIR/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (a pretrained encoder directory needs config.json, model.safetensors and tokenizer.json)", path.display()))?;
        let config: Self = serde_json::from_str(&text).with_context(|| format!("{}: not a BERT config", path.display()))?;
        if config.hidden_act != "gelu" {
            bail!("{}: hidden_act \"{}\" is not supported (only \"gelu\", BERT's)", path.display(), config.hidden_act);
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            bail!("{}: hidden_size {} is not a multiple of num_attention_heads {}", path.display(), config.hidden_size, config.num_attention_heads);
        }
        Ok(config)
    }
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
    layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dropout: Dropout,
    heads: usize,
}

/// A dense layer, then dropout, a residual connection and layer norm.
#[derive(Module, Debug)]
pub struct BertOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
    layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct BertAttention {
    self_attention: BertSelfAttention,
    output: BertOutput,
}

#[derive(Module, Debug)]
pub struct BertIntermediate {
    dense: Linear,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertOutput,
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    layer: Vec<BertLayer>,
}

#[derive(Module, Debug)]
pub struct BertPooler {
    dense: Linear,
}

/// `transformers.BertModel`: embeddings, encoder layers, pooler.
#[derive(Module, Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
    pooler: BertPooler,
}

impl BertOutput {
    fn new(input: usize, hidden: usize, c: &BertConfig, device: &Device) -> Self {
        Self {
            dense: LinearConfig::new(input, hidden).init(device),
            layer_norm: LayerNormConfig::new(hidden).with_epsilon(c.layer_norm_eps).init(device),
            dropout: DropoutConfig::new(c.hidden_dropout_prob).init(),
            layer_norm_eps: c.layer_norm_eps,
        }
    }

    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        layer_norm(&self.layer_norm, dropout(&self.dropout, self.dense.forward(x)) + residual, self.layer_norm_eps)
    }
}

impl BertSelfAttention {
    /// `x` `[batch, len, hidden]`, `padding` `[batch, len, len]` (each query's padded keys) →
    /// `[batch, len, hidden]`. Padding's score is -1e9 before the softmax, as transformers' added
    /// mask makes it: exp() makes its weight exactly 0.
    fn forward(&self, x: Tensor<3>, padding: Tensor<3, Bool>) -> Tensor<3> {
        let [batch, len, hidden] = x.dims();
        let head = hidden / self.heads;
        let split = |t: Tensor<3>| t.reshape([batch, len, self.heads, head]).swap_dims(1, 2); // [batch, heads, len, head]
        let (q, k, v) = (split(self.query.forward(x.clone())), split(self.key.forward(x.clone())), split(self.value.forward(x)));
        let probabilities = dropout(&self.dropout, attention_weights(q.matmul(k.swap_dims(2, 3)), padding, (head as f32).sqrt(), -1e9));
        probabilities.matmul(v).swap_dims(1, 2).reshape([batch, len, hidden])
    }
}

impl BertModel {
    /// A randomly initialised encoder of `config`'s sizes (weights come from [`BertModel::load`]).
    pub fn new(config: &BertConfig, device: &Device) -> Self {
        let c = config;
        let (h, dropout) = (c.hidden_size, DropoutConfig::new(c.hidden_dropout_prob));
        let layer = (0..c.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: LinearConfig::new(h, h).init(device),
                        key: LinearConfig::new(h, h).init(device),
                        value: LinearConfig::new(h, h).init(device),
                        dropout: DropoutConfig::new(c.attention_probs_dropout_prob).init(),
                        heads: c.num_attention_heads,
                    },
                    output: BertOutput::new(h, h, c, device),
                },
                intermediate: BertIntermediate { dense: LinearConfig::new(h, c.intermediate_size).init(device) },
                output: BertOutput::new(c.intermediate_size, h, c, device),
            })
            .collect();
        Self {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(c.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(c.max_position_embeddings, h).init(device),
                token_type_embeddings: EmbeddingConfig::new(c.type_vocab_size, h).init(device),
                layer_norm: LayerNormConfig::new(h).with_epsilon(c.layer_norm_eps).init(device),
                dropout: dropout.init(),
                layer_norm_eps: c.layer_norm_eps,
            },
            encoder: BertEncoder { layer },
            pooler: BertPooler { dense: LinearConfig::new(h, h).init(device) },
        }
    }

    /// The encoder of `DIR/config.json` with the weights of `DIR/model.safetensors` (Hugging Face
    /// names, with or without the `bert.` prefix of checkpoints saved with a task head).
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, BertConfig)> {
        let config = BertConfig::read(dir)?;
        let mut model = Self::new(&config, device);
        let path = dir.join(WEIGHTS_FILE);
        if !path.is_file() {
            bail!("{} does not exist (a pretrained encoder directory needs config.json, model.safetensors and tokenizer.json)", path.display());
        }
        let mut store = SafetensorsStore::from_file(&path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^bert\.", "")
            .with_key_remapping(r"LayerNorm\.gamma$", "LayerNorm.weight")
            .with_key_remapping(r"LayerNorm\.beta$", "LayerNorm.bias")
            .with_key_remapping(r"\.LayerNorm\.", ".layer_norm.")
            .with_key_remapping(r"attention\.self\.", "attention.self_attention.");
        let result = model.load_from(&mut store).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !result.missing.is_empty() {
            bail!("{}: not a BertModel checkpoint of this config, missing {:?}", path.display(), result.missing);
        }
        Ok((model, config))
    }

    /// The encoder's gradients in learning-rate groups, each with its factor: the pooler and the
    /// top layer at `top`, each layer below at `decay` times the one above, the embeddings below
    /// the lowest layer.
    pub fn learning_rate_groups(&self, grads: &mut Gradients, top: f64, decay: f64) -> Vec<(f64, GradientsParams)> {
        if decay == 1.0 {
            return vec![(top, GradientsParams::from_module(grads, self))];
        }
        let mut groups = vec![(top, GradientsParams::from_module(grads, &self.pooler))];
        let mut factor = top;
        for layer in self.encoder.layer.iter().rev() {
            groups.push((factor, GradientsParams::from_module(grads, layer)));
            factor *= decay;
        }
        groups.push((factor, GradientsParams::from_module(grads, &self.embeddings)));
        groups
    }

    /// Hidden states `[batch, len, hidden]` and the pooled `[CLS]` vector `[batch, hidden]` of token
    /// ids `[batch, len]` whose real tokens `mask` `[batch, len]` marks with 1.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
        let [batch, len] = ids.dims();
        let device = ids.device();
        let e = &self.embeddings;
        let positions = Tensor::<1, Int>::arange(0..len as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, batch);
        let types = Tensor::<2, Int>::zeros([batch, len], &device);
        let x = e.word_embeddings.forward(ids) + e.position_embeddings.forward(positions) + e.token_type_embeddings.forward(types);
        let mut x = dropout(&e.dropout, layer_norm(&e.layer_norm, x, e.layer_norm_eps));
        let padding = padded_keys(mask.equal_elem(0.0));
        for layer in &self.encoder.layer {
            let attended = layer.attention.output.forward(layer.attention.self_attention.forward(x.clone(), padding.clone()), x);
            let inner = gelu(layer.intermediate.dense.forward(attended.clone()));
            x = layer.output.forward(inner, attended);
        }
        let hidden = x.dims()[2];
        let first = x.clone().narrow(1, 0, 1).reshape([batch, hidden]);
        let pooled = self.pooler.dense.forward(first).tanh();
        (x, pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-bert")
    }

    #[derive(Deserialize)]
    struct Expected {
        input_ids: Vec<Vec<i64>>,
        attention_mask: Vec<Vec<f32>>,
        last_hidden_state: Vec<Vec<Vec<f32>>>,
        pooler_output: Vec<Vec<f32>>,
    }

    #[test]
    fn the_encoder_matches_transformers_on_its_fixture() {
        let device = Device::flex();
        let (model, config) = BertModel::load(&fixture(), &device).unwrap();
        assert_eq!((config.hidden_size, config.num_hidden_layers), (32, 2));
        let expected: Expected = serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
        let (batch, len) = (expected.input_ids.len(), expected.input_ids[0].len());
        let ids = Tensor::<2, Int>::from_data(TensorData::new(expected.input_ids.concat(), [batch, len]), &device);
        let mask = Tensor::<2>::from_data(TensorData::new(expected.attention_mask.concat(), [batch, len]), &device);
        let (hidden, pooled) = model.forward(ids, mask);
        let hidden = hidden.into_data().try_into_vec_as::<f32>().unwrap();
        let pooled = pooled.into_data().try_into_vec_as::<f32>().unwrap();
        let want_hidden: Vec<f32> = expected.last_hidden_state.concat().concat();
        let want_pooled: Vec<f32> = expected.pooler_output.concat();
        let worst = vitrine_core::metrics::largest_gap;
        // Padded positions' hidden states are compared too: transformers computes them the same way.
        assert_eq!(hidden.len(), want_hidden.len());
        assert!(worst(&hidden, &want_hidden) < 1e-4, "hidden states differ by {}", worst(&hidden, &want_hidden));
        assert!(worst(&pooled, &want_pooled) < 1e-4, "pooled vectors differ by {}", worst(&pooled, &want_pooled));
        // Not vacuous: a freshly initialised encoder of the same sizes is far from it.
        let fresh = BertModel::new(&config, &device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(expected.input_ids.concat(), [batch, len]), &device);
        let mask = Tensor::<2>::from_data(TensorData::new(expected.attention_mask.concat(), [batch, len]), &device);
        let other = fresh.forward(ids, mask).1.into_data().try_into_vec_as::<f32>().unwrap();
        assert!(worst(&other, &want_pooled) > 1e-2);
    }

    #[test]
    fn a_directory_without_the_files_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = format!("{:#}", BertModel::load(tmp.path(), &Device::flex()).err().unwrap());
        assert!(err.contains("config.json") && err.contains("model.safetensors"), "{err}");
        std::fs::copy(fixture().join(CONFIG_FILE), tmp.path().join(CONFIG_FILE)).unwrap();
        let err = format!("{:#}", BertModel::load(tmp.path(), &Device::flex()).err().unwrap());
        assert!(err.contains("model.safetensors") && err.contains("does not exist"), "{err}");
    }
}
