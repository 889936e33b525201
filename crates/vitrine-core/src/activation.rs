//! Activations that burn composes from several operations, as one operation on the `flex` CPU
//! backend, forward and backward; burn's own composition elsewhere (ndarray, the GPU).
//!
//! burn's leaky ReLU is a comparison, a scaling and a masked select; under autodiff its gradient
//! is two masked selects over fresh zero tensors, a scaling and a sum. That is nine passes over
//! the activation and two allocations where one pass each way does: with both of `dcgan`'s
//! discriminator activations, 15–20% of its training step.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, DispatchDevice, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 15;

/// `x` where `x ≥ 0`, `slope · x` below: burn's `leaky_relu`, one pass each way on `flex`.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    fused_leaky_relu(&x, slope as f32).unwrap_or_else(|| burn::tensor::activation::leaky_relu(x, slope))
}

fn fused_leaky_relu<const D: usize>(x: &Tensor<D>, slope: f32) -> Option<Tensor<D>> {
    let device = x.device();
    if x.dtype() != DType::F32 || !matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Flex(_)) {
        return None;
    }
    if !device.is_autodiff() {
        let x = x.clone().try_into_primitive::<Flex>().ok()?;
        return Some(Tensor::from_primitive::<Flex>(scale_negative(&x, None, slope)));
    }
    let x = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let forward = |x: &FlexTensor| scale_negative(x, None, slope);
    let out = match (LeakyReluBackward { slope }).prepare::<NoCheckpointing>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            let out = forward(&x);
            prep.finish(x, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x.into_primitive())),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// The gradient `g · (slope where x < 0, else 1)`, from the input kept by the forward pass.
#[derive(Debug)]
struct LeakyReluBackward {
    slope: f32,
}

impl Backward<Flex, 1> for LeakyReluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let x = ops.state.to_contiguous();
        let x = x.as_slice::<f32>().expect("f32 input, checked before the forward pass");
        grads.register::<Flex>(node.id, scale_negative(&grad, Some(x), self.slope));
    }
}

/// `x · (slope where x < 0, else 1)`, and the same of the gradient `g` (where `x` is given):
/// one kernel for both passes, since the gradient scales where the input was negative.
fn scale_negative(values: &FlexTensor, sign_of: Option<&[f32]>, slope: f32) -> FlexTensor {
    let shape = values.layout().shape().clone();
    let values = values.to_contiguous();
    let values = values.as_slice::<f32>().expect("f32, checked before the forward pass");
    let sign_of = sign_of.unwrap_or(values);
    assert_eq!(values.len(), sign_of.len(), "a gradient of the activation's shape");
    let mut out = Vec::with_capacity(values.len());
    out.spare_capacity_mut().par_chunks_mut(CHUNK).zip(values.par_chunks(CHUNK).zip(sign_of.par_chunks(CHUNK))).for_each(|(out, (values, sign_of))| {
        for ((o, &v), &s) in out.iter_mut().zip(values).zip(sign_of) {
            // Both sides computed, then selected: the loop vectorises.
            let scaled = v * slope;
            o.write(if s < 0.0 { scaled } else { v });
        }
    });
    // SAFETY: the chunks above cover the whole spare capacity, one write per element.
    unsafe { out.set_len(values.len()) };
    FlexTensor::from_data(TensorData::new(out, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused leaky ReLU against burn's composition on burn-ndarray: outputs and input
    /// gradients equal, over more values than one chunk, with zeros, -0, NaN and infinities, on
    /// a transposed (non-contiguous) input, with and without autodiff.
    #[test]
    fn fused_leaky_relu_and_its_gradient_equal_burns() {
        let (rows, cols) = (211, 317);
        let mut values: Vec<f32> = (0..rows * cols).map(|i| (i * 7919 % 1013) as f32 / 1013.0 - 0.5).collect();
        values[..6].copy_from_slice(&[0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -3.0]);
        let weights: Vec<f32> = (0..rows * cols).map(|i| (i % 13) as f32 - 6.0).collect();
        let run = |device: Device, fused: bool| -> [Vec<f32>; 3] {
            let input = |device: &Device| Tensor::<2>::from_data(TensorData::new(values.clone(), [rows, cols]), device).transpose();
            let activation = |x: Tensor<2>| if fused { leaky_relu(x, 0.2) } else { burn::tensor::activation::leaky_relu(x, 0.2) };
            let plain = activation(input(&device));
            let autodiff = device.autodiff();
            let x = input(&autodiff).require_grad();
            let y = activation(x.clone());
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [rows, cols]), &autodiff).transpose();
            let grads = (y.clone() * w).sum().backward();
            let grad = x.grad(&grads).expect("a gradient for the input");
            [plain, y.inner(), grad].map(|t| t.into_data().to_vec::<f32>().unwrap())
        };
        #[allow(deprecated)] // burn-ndarray: burn's composition, the reference
        let reference = run(Device::ndarray(), false);
        let fused = run(Device::flex(), true);
        for (what, (got, want)) in ["inference output", "training output", "input gradient"].iter().zip(fused.iter().zip(&reference)) {
            assert_eq!(got.len(), want.len(), "{what}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{what} [{i}]: {g} against burn's {w}");
            }
        }
        // It did run fused on flex: burn's composition gives the same numbers but not one operation.
        assert!(fused_leaky_relu(&Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 2.0], [2]), &Device::flex()), 0.2).is_some());
    }
}
