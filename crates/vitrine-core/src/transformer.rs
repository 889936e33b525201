//! burn's Transformer encoder layer, forward, written out over burn's own modules (the same
//! operations, the dropouts drawn in the same order) so that its layer norms and attention
//! weights run as one operation each on `flex` ([`crate::layer_norm`], [`crate::attention`]).
//! The modules, and so the saved weights, stay burn's.

use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::TransformerEncoderLayer;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::attention::attention_weights;
use crate::dropout::dropout;
use crate::layer_norm::layer_norm;

/// `TransformerEncoderLayer::forward` on `x` `[b, len, d]`, each position attending to every
/// other except where `hidden` `[b, len, len]` (a query's row of keys it may not see). burn keeps
/// the layer's normalisation ε private, so the caller passes the one it built the layer with.
pub fn encoder_layer(layer: &TransformerEncoderLayer, x: Tensor<3>, hidden: Tensor<3, Bool>, epsilon: f64) -> Tensor<3> {
    let attend_from = before_attention(layer, x.clone(), epsilon);
    after_attention(layer, x, attend_from.clone(), attend_from, hidden, epsilon)
}

/// The same layer's output at some positions of `sequence` `[b, len, d]` alone: `queries`
/// `[b, q, d]` taken from it, attending to it except where `hidden` `[b, q, len]` (their rows of
/// the whole layer's mask).
pub fn encoder_layer_at(layer: &TransformerEncoderLayer, queries: Tensor<3>, sequence: Tensor<3>, hidden: Tensor<3, Bool>, epsilon: f64) -> Tensor<3> {
    let (from, to) = (before_attention(layer, queries.clone(), epsilon), before_attention(layer, sequence, epsilon));
    after_attention(layer, queries, from, to, hidden, epsilon)
}

/// What the attention reads: the input, normalised first in a pre-norm layer.
fn before_attention(layer: &TransformerEncoderLayer, x: Tensor<3>, epsilon: f64) -> Tensor<3> {
    if layer.norm_first { layer_norm(&layer.norm_2, x, epsilon) } else { x }
}

/// The rest of the layer from its input `x`, what its queries and keys read, and the mask.
fn after_attention(layer: &TransformerEncoderLayer, x: Tensor<3>, queries: Tensor<3>, sequence: Tensor<3>, hidden: Tensor<3, Bool>, epsilon: f64) -> Tensor<3> {
    let norm = |n: &LayerNorm, x| layer_norm(n, x, epsilon);
    let x = x + dropout(&layer.dropout, attention(&layer.mha, queries, sequence, hidden));
    if layer.norm_first {
        let fed = dropout(&layer.dropout, layer.pwff.forward(norm(&layer.norm_1, x.clone())));
        x + fed
    } else {
        let x = norm(&layer.norm_1, x);
        let fed = dropout(&layer.dropout, layer.pwff.forward(x.clone()));
        norm(&layer.norm_2, x + fed)
    }
}

/// `MultiHeadAttention::forward`'s context, the keys and values from `sequence`. Its softmax is
/// the plain one: no Vitrine model sets burn's `quiet_softmax`.
fn attention(mha: &MultiHeadAttention, queries: Tensor<3>, sequence: Tensor<3>, hidden: Tensor<3, Bool>) -> Tensor<3> {
    debug_assert!(!mha.quiet_softmax, "the fused attention weights are the plain softmax");
    let [b, q, d] = queries.dims();
    let heads = |x: Tensor<3>, linear: &Linear| {
        let [b, len, _] = x.dims();
        linear.forward(x).reshape([b, len, mha.n_heads, mha.d_k]).swap_dims(1, 2)
    };
    let (query, key, value) = (heads(queries, &mha.query), heads(sequence.clone(), &mha.key), heads(sequence, &mha.value));
    let weights = attention_weights(query.matmul(key.transpose()), hidden, (mha.d_k as f32).sqrt(), mha.min_float as f32);
    let context = dropout(&mha.dropout, weights).matmul(value).swap_dims(1, 2).reshape([b, q, d]);
    mha.output.forward(context)
}

#[cfg(test)]
mod tests {
    use burn::nn::attention::generate_autoregressive_mask;
    use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};

    use super::*;

    /// Post-norm and pre-norm layers against burn's `TransformerEncoder` with the same masks
    /// (causal and padding), dropouts included (drawn in the same order from the same seed): the
    /// output, and the gradients of the input and of a scale. On flex (the fused operations) and
    /// on ndarray (burn's composition, as on a GPU).
    #[test]
    fn encoder_layers_equal_burns_dropouts_and_gradients_included() {
        #[allow(deprecated)] // burn-ndarray: where the fused operations fall back
        for device in [Device::flex(), Device::ndarray()] {
            encoder_layers_equal_burns_on(device.autodiff());
        }
    }

    fn encoder_layers_equal_burns_on(device: Device) {
        let _seeded = crate::backend::seeded_draws();
        let [b, len, d] = [3, 8, 16];
        let x: Vec<f32> = (0..b * len * d).map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * 0.3).collect();
        let w: Vec<f32> = (0..b * len * d).map(|i| (i % 7) as f32 - 3.0).collect();
        let lengths = [8, 3, 0];
        let padding: Vec<bool> = (0..b * len).map(|i| i % len >= lengths[i / len]).collect();
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(padding, [b, len]), &device);
        let causal = generate_autoregressive_mask(b, len, &device);
        let hidden = causal.clone().bool_or(crate::attention::padded_keys(padding.clone()));
        for norm_first in [false, true] {
            device.seed(3);
            let encoder = TransformerEncoderConfig::new(d, 32, 2, 2).with_norm_first(norm_first).with_dropout(0.2).with_layer_norm_eps(1e-6).init(&device);
            let run = |forward: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                device.seed(11);
                let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [b, len, d]), &device).require_grad();
                let y = forward(input.clone());
                let grads = (y.clone() * Tensor::<3>::from_data(TensorData::new(w.clone(), [b, len, d]), &device)).sum().backward();
                let scale = encoder.layers[0].norm_1.gamma.val().grad(&grads).expect("a gradient for a scale");
                let input = input.grad(&grads).expect("a gradient for the input");
                [y.inner().into_data(), input.into_data(), scale.into_data()].map(|t| t.try_to_vec::<f32>().unwrap())
            };
            // burn initialises parameters when first read, from the same generator as the dropouts.
            run(&|x| encoder.forward(TransformerEncoderInput::new(x)));
            let ours = run(&|x| encoder.layers.iter().fold(x, |x, layer| encoder_layer(layer, x, hidden.clone(), 1e-6)));
            let burns = run(&|x| encoder.forward(TransformerEncoderInput::new(x).mask_pad(padding.clone()).mask_attn(causal.clone())));
            for (what, (ours, burns)) in ["output", "input's gradient", "scale's gradient"].iter().zip(ours.iter().zip(&burns)) {
                assert!(ours.iter().any(|&v| v != 0.0), "{what}: all zero");
                for (i, (o, b)) in ours.iter().zip(burns).enumerate() {
                    assert!((o - b).abs() <= 1e-4 * b.abs().max(1.0), "{device:?}, norm_first {norm_first}, {what} at {i}: {o} against burn's {b}");
                }
            }
        }
    }
}
