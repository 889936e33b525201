//! The attention weights of burn's `MultiHeadAttention` (scores scaled, masked, softmax) as one
//! operation on the `flex` CPU backend, forward and backward; burn's own composition elsewhere
//! (ndarray, the GPU).
//!
//! burn scales the scores, fills each mask into them, and composes the softmax from a maximum, a
//! shift, an exp, a sum and a division (burn-autodiff has no softmax operation): nine passes
//! over `[batch, heads, queries, keys]` with a fresh tensor each, and as many back. Here the
//! forward pass reads the scores once and writes the weights once; the backward pass reads the
//! weights and their gradient once and writes the scores' gradient once.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::flex::ops::fast_math::{exp_f32, tanh_f32};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::backend::one_input_backward;
use crate::compiled_per_cpu;
use crate::per_cpu::{lane_dot, lane_max, lane_sum};

/// Rows of weights per parallel task.
const ROWS_PER_TASK: usize = 256;

/// `softmax(scores / divisor)` over the keys, with each position that `hidden` marks set to
/// `fill` first: burn's `MultiHeadAttention` weights before their dropout. `scores` is
/// `[batch, heads, queries, keys]`, `hidden` `[batch, queries, keys]` (the same for every head).
pub fn attention_weights(scores: Tensor<4>, hidden: Tensor<3, Bool>, divisor: f32, fill: f32) -> Tensor<4> {
    fused(&scores, &hidden, divisor, fill).unwrap_or_else(|| softmax(scores.div_scalar(divisor).mask_fill(hidden.unsqueeze_dim::<4>(1), fill), 3))
}

/// Additive attention's scores `vᵀ tanh(W x + b)` for `x` `[batch, len, d]` → `[batch, len]`,
/// `projection` being (W, b) and `score` v (no bias). At inference on `flex` the bias, the tanh and
/// the product with v are one pass over the projection's rows, where burn makes a pass of each and
/// a matrix-vector product (`text-lstm-attn`: 3–4% of an inference batch); its composition
/// elsewhere and under autodiff.
pub fn additive_scores(x: Tensor<3>, projection: &burn::nn::Linear, score: &burn::nn::Linear) -> Tensor<2> {
    let [batch, len, d] = x.dims();
    let device = x.device();
    if crate::backend::is_flex(&device) && !device.is_autodiff() && x.dtype() == DType::F32 && score.bias.is_none() {
        let projected = x.clone().reshape([batch * len, d]).matmul(projection.weight.val());
        let bias = projection.bias.as_ref().map(|b| b.val());
        if let Some(scores) = fused_additive_scores(projected, bias, score.weight.val()) {
            return Tensor::<1>::from_primitive::<Flex>(scores).reshape([batch, len]);
        }
    }
    score.forward(crate::activation::tanh(projection.forward(x))).reshape([batch, len])
}

/// [`additive_scores`] on `flex`: `projected` `[rows, a]` (W x), `bias` `[a]`, `v` `[a, 1]`.
fn fused_additive_scores(projected: Tensor<2>, bias: Option<Tensor<1>>, v: Tensor<2>) -> Option<FlexTensor> {
    let [rows, a] = projected.dims();
    let plain = |t: Tensor<2>| t.try_into_primitive::<Flex>().ok().map(|t| t.to_contiguous());
    let bias = bias.unwrap_or_else(|| Tensor::zeros([a], &projected.device()));
    let (projected, bias, v) = (plain(projected)?, plain(bias.unsqueeze())?, plain(v)?);
    let (projected, bias, v) = (projected.as_slice::<f32>()?, bias.as_slice::<f32>()?, v.as_slice::<f32>()?);
    let mut scores = vec![0.0; rows];
    scores.par_chunks_mut(ROWS_PER_TASK).zip(projected.par_chunks(ROWS_PER_TASK * a)).for_each(|(scores, rows)| score_rows(rows, bias, v, scores));
    Some(FlexTensor::from_data(TensorData::new(scores, [rows])))
}

compiled_per_cpu! {
    /// `scores[r] = Σ_j tanh(rows[r, j] + bias[j]) · v[j]`, in lanes (a single running sum keeps
    /// a loop scalar).
    fn score_rows(rows: &[f32], bias: &[f32], v: &[f32], scores: &mut [f32]) {
        const LANES: usize = 16;
        let a = bias.len();
        for (row, score) in rows.chunks_exact(a).zip(scores.iter_mut()) {
            let mut lanes = [0f32; LANES];
            let (row_chunks, bias_chunks, v_chunks) = (row.chunks_exact(LANES), bias.chunks_exact(LANES), v.chunks_exact(LANES));
            let rest: f32 = row_chunks.remainder().iter().zip(bias_chunks.remainder()).zip(v_chunks.remainder()).map(|((&x, &b), &w)| tanh_f32(x + b) * w).sum();
            for ((xs, bs), ws) in row_chunks.zip(bias_chunks).zip(v_chunks) {
                for (((lane, &x), &b), &w) in lanes.iter_mut().zip(xs).zip(bs).zip(ws) {
                    *lane += tanh_f32(x + b) * w;
                }
            }
            *score = lanes.iter().sum::<f32>() + rest;
        }
    }
}

/// Each query's padded keys `[b, len, len]` from the padding `[b, len]` (true where padded):
/// the `hidden` of a self-attention whose only mask is padding.
pub fn padded_keys(padding: Tensor<2, Bool>) -> Tensor<3, Bool> {
    let [b, len] = padding.dims();
    padding.unsqueeze_dim::<3>(1).expand([b, len, len])
}

/// What the backward pass needs: the weights and which positions were hidden.
#[derive(Clone)]
struct Saved {
    weights: FlexTensor,
    rows: Rows,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Saved({:?})", self.weights.layout().shape())
    }
}

/// The sizes, the divisor and the hidden positions, row by row of `[batch, queries]`.
#[derive(Clone, Debug)]
struct Rows {
    heads: usize,
    queries: usize,
    keys: usize,
    divisor: f32,
    hidden: Arc<Vec<bool>>,
}

impl Rows {
    /// The hidden positions of weight row `r` (of `[batch · heads · queries]`).
    fn hidden_row(&self, r: usize) -> &[bool] {
        let (b, q) = (r / (self.heads * self.queries), r % self.queries);
        &self.hidden[(b * self.queries + q) * self.keys..][..self.keys]
    }
}

fn fused(scores: &Tensor<4>, hidden: &Tensor<3, Bool>, divisor: f32, fill: f32) -> Option<Tensor<4>> {
    let device = scores.device();
    let [batch, heads, queries, keys] = scores.dims();
    if scores.dtype() != DType::F32 || !crate::backend::is_flex(&device) || hidden.dims() != [batch, queries, keys] || keys == 0 {
        return None;
    }
    let rows = Rows { heads, queries, keys, divisor, hidden: Arc::new(hidden.to_data().iter::<bool>().collect()) };
    if !device.is_autodiff() {
        let scores = scores.clone().try_into_primitive::<Flex>().ok()?;
        return Some(Tensor::from_primitive::<Flex>(forward(&scores, &rows, fill)));
    }
    let scores = scores.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let out = match AttentionBackward.prepare::<NoCheckpointing>([scores.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let weights = forward(&scores.into_primitive(), &rows, fill);
            prep.finish(Saved { weights: weights.clone(), rows }, weights)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&scores.into_primitive(), &rows, fill)),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

fn forward(scores: &FlexTensor, rows: &Rows, fill: f32) -> FlexTensor {
    let dims = scores.layout().shape().clone();
    let scores = scores.to_contiguous();
    let scores = scores.as_slice::<f32>().expect("f32, checked before");
    let keys = rows.keys;
    let mut out = vec![0f32; scores.len()];
    out.par_chunks_mut(ROWS_PER_TASK * keys).zip(scores.par_chunks(ROWS_PER_TASK * keys)).enumerate().for_each(|(task, (out, scores))| {
        for (i, (out, row)) in out.chunks_exact_mut(keys).zip(scores.chunks_exact(keys)).enumerate() {
            softmax_row(row, rows.hidden_row(task * ROWS_PER_TASK + i), rows.divisor, fill, out);
        }
    });
    FlexTensor::from_data(TensorData::new(out, dims))
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let Some((grad, input, Saved { weights, rows })) = one_input_backward(ops, grads) else { return };
        let grad = grad.as_slice::<f32>().expect("f32");
        let dims = weights.layout().shape().clone();
        let weights = weights.as_slice::<f32>().expect("f32, contiguous");
        let keys = rows.keys;
        let mut d_scores = vec![0f32; weights.len()];
        d_scores
            .par_chunks_mut(ROWS_PER_TASK * keys)
            .zip(weights.par_chunks(ROWS_PER_TASK * keys))
            .zip(grad.par_chunks(ROWS_PER_TASK * keys))
            .enumerate()
            .for_each(|(task, ((out, weights), grad))| {
                for (i, ((out, y), dy)) in out.chunks_exact_mut(keys).zip(weights.chunks_exact(keys)).zip(grad.chunks_exact(keys)).enumerate() {
                    softmax_row_backward(y, dy, rows.hidden_row(task * ROWS_PER_TASK + i), rows.divisor, out);
                }
            });
        grads.register::<Flex>(input, FlexTensor::from_data(TensorData::new(d_scores, dims)));
    }
}

compiled_per_cpu! {
    /// One row of weights: the scores divided, `fill` where hidden, then the softmax. A hidden
    /// position's weight is e^(fill − max), 0 in f32 unless every key is hidden (then all are
    /// equal), so it is written as such: its exp would be subnormal, which costs an assist.
    fn softmax_row(scores: &[f32], hidden: &[bool], divisor: f32, fill: f32, out: &mut [f32]) {
        for ((o, &s), &h) in out.iter_mut().zip(scores).zip(hidden) {
            *o = if h { f32::NEG_INFINITY } else { s / divisor };
        }
        let max = lane_max(out);
        if max == f32::NEG_INFINITY && fill.is_finite() {
            out.fill(1.0 / out.len() as f32);
            return;
        }
        for (o, &h) in out.iter_mut().zip(hidden) {
            let e = exp_f32(if h { 0.0 } else { *o - max });
            *o = if h { 0.0 } else { e };
        }
        let inverse = 1.0 / lane_sum(out, |e| e);
        out.iter_mut().for_each(|o| *o *= inverse);
    }
}

compiled_per_cpu! {
    /// The scores' gradient of one row: `y·(dy − Σ dy·y) / divisor`, zero where hidden (the
    /// fill does not depend on the scores).
    fn softmax_row_backward(y: &[f32], dy: &[f32], hidden: &[bool], divisor: f32, out: &mut [f32]) {
        let dot = lane_dot(y, dy);
        for (((o, &y), &d), &h) in out.iter_mut().zip(y).zip(dy).zip(hidden) {
            let g = y * (d - dot) / divisor;
            *o = if h { 0.0 } else { g };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused scores against burn's composition on burn-ndarray (the same weights), with an
    /// attention width of 37, which leaves a remainder past the 16 lanes.
    #[test]
    fn additive_scores_match_the_composed_ones() {
        use burn::nn::LinearConfig;
        #[allow(deprecated)] // burn-ndarray: burn's composition, the reference
        let (flex, ndarray) = (Device::flex(), Device::ndarray());
        flex.seed(3);
        let projection = LinearConfig::new(24, 37).init(&flex);
        let score = LinearConfig::new(37, 1).with_bias(false).init(&flex);
        let x = Tensor::<3>::random([3, 5, 24], burn::tensor::Distribution::Normal(0.0, 1.0), &flex);
        let fused = additive_scores(x.clone(), &projection, &score).into_data().try_to_vec::<f32>().unwrap();
        let (projection, score, x) = (projection.to_device(&ndarray), score.to_device(&ndarray), x.to_device(&ndarray));
        let composed = score.forward(projection.forward(x).tanh()).reshape([3, 5]).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(fused.len(), 15);
        let worst = crate::metrics::largest_gap(&fused, &composed);
        assert!(worst < 1e-5, "differs by {worst}: {fused:?} vs {composed:?}");
        assert!(composed.iter().any(|v| v.abs() > 0.1), "scores too small to compare: {composed:?}");
    }

    const SHAPE: [usize; 4] = [3, 2, 7, 37];

    /// Which positions are hidden: the causal mask, and keys past each sequence's length.
    fn hidden() -> Vec<bool> {
        let [batch, _, queries, keys] = SHAPE;
        let lengths = [37, 5, 0];
        (0..batch * queries * keys).map(|i| (i % keys > i / keys % queries + 30) || i % keys >= lengths[i / (queries * keys)]).collect()
    }

    /// The weights without autodiff, then with it the weights and the scores' gradient of `Σ y·w`.
    fn weights_and_gradient(device: Device, weights: &dyn Fn(Tensor<4>, Tensor<3, Bool>) -> Tensor<4>) -> [Vec<f32>; 3] {
        let n: usize = SHAPE.iter().product();
        let scores: Vec<f32> = (0..n).map(|i| (i * 7919 % 1013) as f32 / 30.0 - 17.0).collect();
        let w: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let [batch, _, queries, keys] = SHAPE;
        let mask = |device: &Device| Tensor::<3, Bool>::from_data(TensorData::new(hidden(), [batch, queries, keys]), device);
        let input = |data: &[f32], device: &Device| Tensor::<4>::from_data(TensorData::new(data.to_vec(), SHAPE), device);
        let plain = weights(input(&scores, &device), mask(&device));
        let autodiff = device.autodiff();
        let x = input(&scores, &autodiff).require_grad();
        let y = weights(x.clone(), mask(&autodiff));
        let grads = (y.clone() * input(&w, &autodiff)).sum().backward();
        [plain, y.inner(), x.grad(&grads).expect("a gradient for the scores")].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
    }

    /// The fused weights against burn's `MultiHeadAttention` composition (scale, mask fill,
    /// softmax) on burn-ndarray: partly hidden rows, and a sequence whose every key is hidden
    /// (burn gives it uniform weights, and no gradient).
    #[test]
    fn fused_attention_weights_and_their_gradient_match_burns() {
        #[allow(deprecated)] // burn-ndarray: burn's composition, the reference
        let want = weights_and_gradient(Device::ndarray(), &|s, h| softmax(s.div_scalar(8f32.sqrt()).mask_fill(h.unsqueeze_dim::<4>(1), -1.0e4), 3));
        let got = weights_and_gradient(Device::flex(), &|s, h| attention_weights(s, h, 8f32.sqrt(), -1.0e4));
        for (what, (got, want)) in ["inference weights", "training weights", "scores' gradient"].iter().zip(got.iter().zip(&want)) {
            assert_eq!(got.len(), want.len(), "{what}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what} at {i}: {g} against burn's {w}");
            }
        }
        let device = Device::flex();
        let [batch, heads, queries, keys] = SHAPE;
        assert!(
            fused(
                &Tensor::zeros([batch, heads, queries, keys], &device),
                &Tensor::from_data(TensorData::new(hidden(), [batch, queries, keys]), &device),
                1.0,
                -1.0e4
            )
            .is_some()
        );
    }
}
