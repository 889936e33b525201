//! The cross-entropy of a softmax over many classes, as one operation on the `flex` CPU backend,
//! forward and backward; burn's own composition elsewhere (ndarray, the GPU).
//!
//! burn's log-softmax is five passes over the logits (maximum, shift, exp, sum, subtract) and
//! under autodiff as many back, with a fresh tensor for most of them, plus a scatter into a zero
//! tensor for the `gather` that picks each row's target. A recommender's logits are large:
//! `sasrec` scores every item at every position, 256 × 50 × 1,682 values (86 MB) per batch. Here
//! the forward pass reads them once and keeps one log-sum-exp per row; the backward pass reads
//! them once and writes their gradient, `softmax − one-hot`, once.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::flex::ops::fast_math::exp_f32;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::backend::one_input_backward;
use crate::compiled_per_cpu;
use crate::per_cpu::{lane_max, lane_sum};

/// `-log softmax(logits[r])[targets[r]]` for each row `r`: `[rows, classes]` and `[rows]` give
/// `[rows]`. A target outside `0..classes` is the caller's error (burn's `gather` decides what
/// happens then; the fused path leaves it to burn too).
pub fn softmax_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    fused(&logits, &targets).unwrap_or_else(|| {
        let rows = targets.dims()[0];
        log_softmax(logits, 1).gather(1, targets.reshape([rows, 1])).reshape([rows]).neg()
    })
}

/// What the backward pass needs.
#[derive(Clone)]
struct Saved {
    logits: FlexTensor,
    log_sum_exp: Arc<Vec<f32>>,
    targets: Arc<Vec<usize>>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Saved({} rows)", self.targets.len())
    }
}

fn fused(logits: &Tensor<2>, targets: &Tensor<1, Int>) -> Option<Tensor<1>> {
    let device = logits.device();
    if logits.dtype() != DType::F32 || !crate::backend::is_flex(&device) {
        return None;
    }
    let [rows, classes] = logits.dims();
    let targets: Vec<usize> = targets.to_data().iter::<i64>().map(|t| usize::try_from(t).ok().filter(|&t| t < classes)).collect::<Option<_>>()?;
    if targets.len() != rows || classes == 0 {
        return None;
    }
    if !device.is_autodiff() {
        let logits = logits.clone().try_into_primitive::<Flex>().ok()?;
        return Some(Tensor::from_primitive::<Flex>(forward(&logits, &targets).0));
    }
    let logits = logits.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let out = match CrossEntropyBackward.prepare::<NoCheckpointing>([logits.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let logits = logits.into_primitive().to_contiguous();
            let (out, log_sum_exp) = forward(&logits, &targets);
            prep.finish(Saved { logits, log_sum_exp: Arc::new(log_sum_exp), targets: Arc::new(targets) }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&logits.into_primitive(), &targets).0),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// Each row's cross-entropy `[rows]` and log-sum-exp.
fn forward(logits: &FlexTensor, targets: &[usize]) -> (FlexTensor, Vec<f32>) {
    let classes = logits.layout().shape()[1];
    let logits = logits.to_contiguous();
    let logits = logits.as_slice::<f32>().expect("f32, checked before");
    let (losses, log_sum_exp): (Vec<f32>, Vec<f32>) = logits
        .par_chunks(classes)
        .zip(targets)
        .with_min_len(16)
        .map(|(row, &target)| {
            let lse = log_sum_exp(row);
            (lse - row[target], lse)
        })
        .unzip();
    let rows = losses.len();
    (FlexTensor::from_data(TensorData::new(losses, [rows])), log_sum_exp)
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let Some((grad, input, Saved { logits, log_sum_exp, targets })) = one_input_backward(ops, grads) else { return };
        let grad = grad.as_slice::<f32>().expect("f32");
        let shape = logits.layout().shape().clone();
        let classes = shape[1];
        let values = logits.as_slice::<f32>().expect("f32, contiguous");
        // Zeroed by the allocator (fresh pages): rows whose loss does not count stay as they are.
        let mut d_logits = vec![0f32; values.len()];
        d_logits
            .par_chunks_mut(classes)
            .zip(values.par_chunks(classes))
            .zip(grad)
            .zip(log_sum_exp.par_iter())
            .zip(targets.par_iter())
            .with_min_len(16)
            .for_each(|((((out, row), &g), &lse), &target)| {
                if g != 0.0 {
                    softmax_gradient(row, lse, g, out);
                    out[target] -= g;
                }
            });
        grads.register::<Flex>(input, FlexTensor::from_data(TensorData::new(d_logits, shape)));
    }
}

compiled_per_cpu! {
    /// log Σ e^v over the row, shifted by its maximum so that nothing overflows. NaN anywhere
    /// gives NaN, as burn's composition does: a NaN is no maximum, but its e^(v − max) is NaN,
    /// and the sum carries it.
    fn log_sum_exp(row: &[f32]) -> f32 {
        let max = lane_max(row);
        max + lane_sum(row, |v| exp_f32(v - max)).ln()
    }
}

compiled_per_cpu! {
    /// `grad · softmax(row)` into `out`, from the row's log-sum-exp.
    fn softmax_gradient(row: &[f32], log_sum_exp: f32, grad: f32, out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = grad * exp_f32(v - log_sum_exp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits `[rows, classes]` over a wide range, one row far out (where an unshifted exp would
    /// overflow), its targets, and per-row loss weights with zeros (masked positions).
    fn case(rows: usize, classes: usize) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
        let mut logits: Vec<f32> = (0..rows * classes).map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * ((i % 5) as f32 + 0.5)).collect();
        logits[..classes].iter_mut().for_each(|v| *v += 400.0);
        let targets = (0..rows).map(|r| ((r * 31 + 7) % classes) as i64).collect();
        let weights = (0..rows).map(|r| if r % 4 == 3 { 0.0 } else { 1.0 + (r % 3) as f32 }).collect();
        (logits, targets, weights)
    }

    /// Σ w·loss, its per-row losses without autodiff and with it, and the logits' gradient.
    fn losses_and_gradient(device: Device, loss: &dyn Fn(Tensor<2>, Tensor<1, Int>) -> Tensor<1>, rows: usize, classes: usize) -> [Vec<f32>; 3] {
        let (logits, targets, weights) = case(rows, classes);
        let logits_on = |device: &Device| Tensor::<2>::from_data(TensorData::new(logits.clone(), [rows, classes]), device);
        let targets_on = |device: &Device| Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), device);
        let plain = loss(logits_on(&device), targets_on(&device));
        let autodiff = device.autodiff();
        let x = logits_on(&autodiff).require_grad();
        let losses = loss(x.clone(), targets_on(&autodiff));
        let grads = (losses.clone() * Tensor::<1>::from_data(TensorData::new(weights, [rows]), &autodiff)).sum().backward();
        let grad = x.grad(&grads).expect("a gradient for the logits");
        [values(plain), values(losses.inner()), values(grad)]
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The fused cross-entropy against burn's composition on burn-ndarray, over more classes
    /// than one vector's lanes and a remainder, and fewer.
    #[test]
    fn fused_softmax_cross_entropy_and_its_gradient_match_burns() {
        for (rows, classes) in [(67, 1_689), (9, 5)] {
            #[allow(deprecated)] // burn-ndarray: burn's composition, the reference
            let want = losses_and_gradient(Device::ndarray(), &|x, t| log_softmax(x, 1).gather(1, t.reshape([rows, 1])).reshape([rows]).neg(), rows, classes);
            let got = losses_and_gradient(Device::flex(), &softmax_cross_entropy, rows, classes);
            for (what, (got, want)) in ["inference loss", "training loss", "logits' gradient"].iter().zip(got.iter().zip(&want)) {
                assert_eq!(got.len(), want.len(), "{what}");
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what} at {i}: {g} against burn's {w} ({rows}×{classes})");
                }
            }
            // It did run fused: the composition goes through burn's log_softmax.
            let (logits, targets, _) = case(rows, classes);
            let device = Device::flex();
            assert!(
                fused(&Tensor::from_data(TensorData::new(logits, [rows, classes]), &device), &Tensor::from_data(TensorData::new(targets, [rows]), &device))
                    .is_some()
            );
        }
    }

    /// NaN in a row gives that row a NaN loss, as burn's composition does; other rows keep theirs.
    #[test]
    fn a_nan_logit_makes_its_row_nan_only() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, f32::NAN, 0.0, 1.0, 2.0, 3.0], [2, 3]), &device);
        let losses = values(softmax_cross_entropy(logits, Tensor::from_data(TensorData::new(vec![0i64, 2], [2]), &device)));
        assert!(losses[0].is_nan());
        let want = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        assert!((losses[1] - want).abs() < 1e-6, "{} against {want}", losses[1]);
    }
}
