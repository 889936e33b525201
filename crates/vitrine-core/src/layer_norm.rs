//! Layer normalisation as one operation on the `flex` CPU backend, forward and backward; burn's
//! own composition elsewhere (ndarray, the GPU).
//!
//! burn-autodiff has no layer-norm operation, so under autodiff burn composes it: a mean, a
//! subtraction, a square, another mean, a square root, a division, a scaling and a shift, each a
//! pass over the activations with a fresh tensor, and about twice as many passes back. `sasrec`
//! normalises five times per step. Here the forward pass reads the input once for each row's
//! mean and spread and writes the output once; the backward pass reads the input and the
//! gradient once and writes the input's gradient once, the scale's and shift's summed per task.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::compiled_per_cpu;
use crate::per_cpu::{lane_dot, lane_sum};

/// Rows per parallel task: each task sums its own share of the scale's and shift's gradients.
const ROWS_PER_TASK: usize = 128;

/// `norm` applied over the last axis of `x`: burn's `LayerNorm::forward`. burn keeps the layer's
/// epsilon private, so the caller passes the one it built the layer with for the fused path;
/// elsewhere the layer's own `forward` runs.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    if let Some(beta) = &norm.beta
        && let Some(y) = fused(&x, &norm.gamma.val(), &beta.val(), epsilon as f32)
    {
        return y;
    }
    norm.forward(x)
}

/// What the backward pass needs: the input, the scale, and each row's mean and 1/σ.
#[derive(Clone)]
struct Saved {
    x: FlexTensor,
    gamma: Arc<Vec<f32>>,
    stats: Arc<Vec<[f32; 2]>>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Saved({} rows)", self.stats.len())
    }
}

fn fused<const D: usize>(x: &Tensor<D>, gamma: &Tensor<1>, beta: &Tensor<1>, epsilon: f32) -> Option<Tensor<D>> {
    let device = x.device();
    let width = gamma.dims()[0];
    if x.dtype() != DType::F32 || !crate::backend::is_flex(&device) || width == 0 || x.dims()[D - 1] != width || beta.dims()[0] != width {
        return None;
    }
    if !device.is_autodiff() {
        let x = x.clone().try_into_primitive::<Flex>().ok()?;
        let gamma = values(&gamma.clone().try_into_primitive::<Flex>().ok()?);
        let beta = values(&beta.clone().try_into_primitive::<Flex>().ok()?);
        return Some(Tensor::from_primitive::<Flex>(forward(&x, &gamma, &beta, epsilon).0));
    }
    let x = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let gamma = gamma.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let beta = beta.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let gamma_values = values(&gamma.clone().into_primitive());
    let beta_values = values(&beta.clone().into_primitive());
    let out = match LayerNormBackward.prepare::<NoCheckpointing>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive().to_contiguous();
            let (out, stats) = forward(&x, &gamma_values, &beta_values, epsilon);
            prep.finish(Saved { x, gamma: Arc::new(gamma_values), stats: Arc::new(stats) }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.into_primitive(), &gamma_values, &beta_values, epsilon).0),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// A small tensor's values, contiguous.
fn values(t: &FlexTensor) -> Vec<f32> {
    t.to_contiguous().as_slice::<f32>().expect("f32, checked before").to_vec()
}

/// The normalised rows, and each row's mean and 1/σ.
fn forward(x: &FlexTensor, gamma: &[f32], beta: &[f32], epsilon: f32) -> (FlexTensor, Vec<[f32; 2]>) {
    let shape = x.layout().shape().clone();
    let width = gamma.len();
    let x = x.to_contiguous();
    let x = x.as_slice::<f32>().expect("f32, checked before");
    let mut out = vec![0f32; x.len()];
    let mut stats = vec![[0f32; 2]; x.len() / width];
    out.par_chunks_mut(ROWS_PER_TASK * width).zip(x.par_chunks(ROWS_PER_TASK * width)).zip(stats.par_chunks_mut(ROWS_PER_TASK)).for_each(
        |((out, x), stats)| {
            normalise(x, gamma, beta, epsilon, out, stats);
        },
    );
    (FlexTensor::from_data(TensorData::new(out, shape)), stats)
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let grad = grad.as_slice::<f32>().expect("f32");
        let Saved { x, gamma, stats } = ops.state;
        let shape = x.layout().shape().clone();
        let width = gamma.len();
        let x = x.as_slice::<f32>().expect("f32, contiguous");
        let mut d_x = vec![0f32; x.len()];
        let zeros = || (vec![0f32; width], vec![0f32; width]);
        let (d_gamma, d_beta) = d_x
            .par_chunks_mut(ROWS_PER_TASK * width)
            .zip(x.par_chunks(ROWS_PER_TASK * width))
            .zip(grad.par_chunks(ROWS_PER_TASK * width))
            .zip(stats.par_chunks(ROWS_PER_TASK))
            .fold(zeros, |(mut d_gamma, mut d_beta), (((d_x, x), grad), stats)| {
                normalise_backward(x, grad, &gamma, stats, d_x, &mut d_gamma, &mut d_beta);
                (d_gamma, d_beta)
            })
            .reduce(zeros, |(mut g, mut b), (g2, b2)| {
                g.iter_mut().zip(&g2).for_each(|(a, b)| *a += b);
                b.iter_mut().zip(&b2).for_each(|(a, c)| *a += c);
                (g, b)
            });
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(d_x, shape)));
        }
        if let Some(node) = gamma_node {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(d_gamma, [width])));
        }
        if let Some(node) = beta_node {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(d_beta, [width])));
        }
    }
}

compiled_per_cpu! {
    /// `(x − mean) / √(var + ε) · γ + β` for each row of `x`, the biased variance as burn's.
    fn normalise(x: &[f32], gamma: &[f32], beta: &[f32], epsilon: f32, out: &mut [f32], stats: &mut [[f32; 2]]) {
        let width = gamma.len();
        for ((row, out), stat) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)).zip(stats) {
            let mean = lane_sum(row, |v| v) / width as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / width as f32;
            let inverse_sigma = 1.0 / (var + epsilon).sqrt();
            for (((o, &v), &g), &b) in out.iter_mut().zip(row).zip(gamma).zip(beta) {
                *o = (v - mean) * inverse_sigma * g + b;
            }
            *stat = [mean, inverse_sigma];
        }
    }
}

compiled_per_cpu! {
    /// With x̂ = (x − mean)/σ and g = dy·γ: dx = (g − mean(g) − x̂·mean(g·x̂))/σ, and this task's
    /// rows' Σ dy·x̂ and Σ dy added to the scale's and shift's gradients.
    fn normalise_backward(x: &[f32], grad: &[f32], gamma: &[f32], stats: &[[f32; 2]], d_x: &mut [f32], d_gamma: &mut [f32], d_beta: &mut [f32]) {
        let width = gamma.len();
        // g and x̂ of the row at hand, so that every loop below runs over whole slices.
        let (mut g, mut normalised) = (vec![0f32; width], vec![0f32; width]);
        for (((row, dy), d_row), &[mean, inverse_sigma]) in x.chunks_exact(width).zip(grad.chunks_exact(width)).zip(d_x.chunks_exact_mut(width)).zip(stats) {
            for ((((g, n), &d), &c), &v) in g.iter_mut().zip(normalised.iter_mut()).zip(dy).zip(gamma).zip(row) {
                *g = d * c;
                *n = (v - mean) * inverse_sigma;
            }
            let g_mean = lane_sum(&g, |v| v) / width as f32;
            let gx_mean = lane_dot(&g, &normalised) / width as f32;
            for ((o, &g), &n) in d_row.iter_mut().zip(&g).zip(&normalised) {
                *o = (g - g_mean - n * gx_mean) * inverse_sigma;
            }
            for (((d_gamma, d_beta), &d), &n) in d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(dy).zip(&normalised) {
                *d_gamma += d * n;
                *d_beta += d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::LayerNormConfig;

    use super::*;

    const ROWS: usize = 301;
    const WIDTH: usize = 67;

    /// The output without autodiff, then with it the output and the gradients of `Σ y·w` for the
    /// input (seen transposed: not contiguous), the scale and the shift.
    fn outputs_and_gradients(device: Device, norm: &dyn Fn(&LayerNorm, Tensor<2>) -> Tensor<2>) -> [Vec<f32>; 5] {
        let x: Vec<f32> = (0..ROWS * WIDTH).map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * ((i / WIDTH % 7) as f32 + 0.1)).collect();
        let w: Vec<f32> = (0..ROWS * WIDTH).map(|i| (i % 13) as f32 - 6.0).collect();
        let input = |data: &[f32], device: &Device| Tensor::<2>::from_data(TensorData::new(data.to_vec(), [WIDTH, ROWS]), device).transpose();
        let layer = |device: &Device| {
            let mut layer = LayerNormConfig::new(WIDTH).with_epsilon(1e-5).init(device);
            let gamma: Vec<f32> = (0..WIDTH).map(|i| 0.5 + i as f32 / 50.0).collect();
            let beta: Vec<f32> = (0..WIDTH).map(|i| i as f32 / 30.0 - 1.0).collect();
            let tracked = |t: Tensor<1>| if device.is_autodiff() { t.require_grad() } else { t };
            layer.gamma = layer.gamma.map(|_| tracked(Tensor::from_data(TensorData::new(gamma, [WIDTH]), device)));
            layer.beta = layer.beta.map(|b| b.map(|_| tracked(Tensor::from_data(TensorData::new(beta, [WIDTH]), device))));
            layer
        };
        let plain = norm(&layer(&device), input(&x, &device));
        let autodiff = device.autodiff();
        let layer = layer(&autodiff);
        let x = input(&x, &autodiff).require_grad();
        let y = norm(&layer, x.clone());
        let grads = (y.clone() * input(&w, &autodiff)).sum().backward();
        let gamma = layer.gamma.val().grad(&grads).expect("a gradient for the scale");
        let beta = layer.beta.as_ref().unwrap().val().grad(&grads).expect("a gradient for the shift");
        let input_grad = x.grad(&grads).expect("a gradient for the input");
        [plain.into_data(), y.inner().into_data(), input_grad.into_data(), gamma.into_data(), beta.into_data()].map(|t| t.try_to_vec::<f32>().unwrap())
    }

    /// The fused layer norm against burn's composition on burn-ndarray: rows of very different
    /// spreads, a width of four lanes and a remainder.
    #[test]
    fn fused_layer_norm_and_its_gradients_match_burns() {
        #[allow(deprecated)] // burn-ndarray: burn's composition, the reference
        let want = outputs_and_gradients(Device::ndarray(), &|layer, x| layer.forward(x));
        let got = outputs_and_gradients(Device::flex(), &|layer, x| layer_norm(layer, x, 1e-5));
        for (what, (got, want)) in
            ["inference output", "training output", "input's gradient", "scale's gradient", "shift's gradient"].iter().zip(got.iter().zip(&want))
        {
            assert_eq!(got.len(), want.len(), "{what}");
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() <= 2e-5 * scale, "{what} at {i}: {g} against burn's {w}");
            }
        }
        // It did run fused on flex.
        let device = Device::flex();
        let one = Tensor::<1>::ones([WIDTH], &device);
        assert!(fused(&Tensor::<2>::ones([2, WIDTH], &device), &one, &one, 1e-5).is_some());
    }
}
