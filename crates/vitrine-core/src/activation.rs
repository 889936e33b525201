//! Activations that burn composes from several operations, as one operation on the `flex` CPU
//! backend, forward and backward; burn's own composition elsewhere (ndarray, the GPU).
//!
//! burn's leaky ReLU is a comparison, a scaling and a masked select; under autodiff its gradient
//! is two masked selects over fresh zero tensors, a scaling and a sum. That is nine passes over
//! the activation and two allocations where one pass each way does: with both of `dcgan`'s
//! discriminator activations, 15–20% of its training step. burn's tanh gradient computes tanh of
//! the input again, then squares, negates, adds 1 and multiplies: five passes on the calling
//! thread (with the forward pass, ~7% of `text-lstm-attn`'s step, in its attention) where one
//! pass across the threads does.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::flex::ops::fast_math::tanh_f32;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 15;

/// `x` where `x ≥ 0`, `slope · x` below: burn's `leaky_relu`, one pass each way on `flex`.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    fused(&x, Activation::LeakyRelu { slope: slope as f32 }).unwrap_or_else(|| burn::tensor::activation::leaky_relu(x, slope))
}

/// The hyperbolic tangent: burn's `tanh` (the same values on `flex`: burn-flex's own f32
/// tanh), one pass each way there.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    fused(&x, Activation::Tanh).unwrap_or_else(|| x.tanh())
}

#[derive(Clone, Copy, Debug)]
enum Activation {
    LeakyRelu { slope: f32 },
    Tanh,
}

impl Activation {
    fn forward(self, x: &FlexTensor) -> FlexTensor {
        match self {
            Self::LeakyRelu { slope } => map(x, None, move |v, s| {
                let scaled = v * slope;
                if s < 0.0 { scaled } else { v }
            }),
            Self::Tanh => map(x, None, |v, _| tanh_f32(v)),
        }
    }

    /// The input's gradient from the output's, `kept` being what [`Self::keeps_input`] says.
    fn backward(self, grad: &FlexTensor, kept: &[f32]) -> FlexTensor {
        match self {
            // The gradient scales where the input was negative.
            Self::LeakyRelu { slope } => map(grad, Some(kept), move |g, x| {
                let scaled = g * slope;
                if x < 0.0 { scaled } else { g }
            }),
            // burn's `grad · (-(y²) + 1)`, which is `grad · (1 - y²)` exactly.
            Self::Tanh => map(grad, Some(kept), |g, y| g * (1.0 - y * y)),
        }
    }

    /// Whether the backward pass needs the input (else the output).
    fn keeps_input(self) -> bool {
        matches!(self, Self::LeakyRelu { .. })
    }
}

fn fused<const D: usize>(x: &Tensor<D>, activation: Activation) -> Option<Tensor<D>> {
    let device = x.device();
    if x.dtype() != DType::F32 || !crate::backend::is_flex(&device) {
        return None;
    }
    if !device.is_autodiff() {
        let x = x.clone().try_into_primitive::<Flex>().ok()?;
        return Some(Tensor::from_primitive::<Flex>(activation.forward(&x)));
    }
    let x = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let out = match (FusedBackward { activation }).prepare::<NoCheckpointing>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            let out = activation.forward(&x);
            let kept = if activation.keeps_input() { x } else { out.clone() };
            prep.finish(kept, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(activation.forward(&x.into_primitive())),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// The gradient, from the input or the output kept by the forward pass.
#[derive(Debug)]
struct FusedBackward {
    activation: Activation,
}

impl Backward<Flex, 1> for FusedBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let kept = ops.state.to_contiguous();
        let kept = kept.as_slice::<f32>().expect("f32, checked before the forward pass");
        grads.register::<Flex>(node.id, self.activation.backward(&grad, kept));
    }
}

/// `f(v_i, o_i)` over `values` and `other` (the values themselves when not given), in chunks
/// across the threads, into a new contiguous tensor of `values`' shape.
fn map(values: &FlexTensor, other: Option<&[f32]>, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let shape = values.layout().shape().clone();
    let values = values.to_contiguous();
    let values = values.as_slice::<f32>().expect("f32, checked before the forward pass");
    let other = other.unwrap_or(values);
    assert_eq!(values.len(), other.len(), "a gradient of the activation's shape");
    let mut out = Vec::with_capacity(values.len());
    out.spare_capacity_mut().par_chunks_mut(CHUNK).zip(values.par_chunks(CHUNK).zip(other.par_chunks(CHUNK))).for_each(|(out, (values, other))| {
        for ((o, &v), &w) in out.iter_mut().zip(values).zip(other) {
            // `f` computes both sides and selects (no branch, no captured reference to reload):
            // the loop vectorises.
            o.write(f(v, w));
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
            [plain, y.inner(), grad].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
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
        assert!(super::fused(&Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 2.0], [2]), &Device::flex()), Activation::LeakyRelu { slope: 0.2 }).is_some());
    }

    /// The fused tanh against burn's own on `flex` (the same f32 tanh underneath): outputs and
    /// input gradients equal bit for bit (NaN as NaN), over more values than one chunk, with ±0, NaN and
    /// infinities, on a transposed input, with and without autodiff.
    #[test]
    fn fused_tanh_and_its_gradient_equal_burns() {
        let (rows, cols) = (257, 301);
        let mut values: Vec<f32> = (0..rows * cols).map(|i| (i * 7919 % 1013) as f32 / 101.3 - 5.0).collect();
        values[..5].copy_from_slice(&[0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        let weights: Vec<f32> = (0..rows * cols).map(|i| (i % 13) as f32 - 6.0).collect();
        let run = |fused: bool| -> [Vec<u32>; 3] {
            let device = Device::flex();
            let input = |device: &Device| Tensor::<2>::from_data(TensorData::new(values.clone(), [rows, cols]), device).transpose();
            let activation = |x: Tensor<2>| if fused { tanh(x) } else { x.tanh() };
            let plain = activation(input(&device));
            let autodiff = device.autodiff();
            let x = input(&autodiff).require_grad();
            let y = activation(x.clone());
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [rows, cols]), &autodiff).transpose();
            let grads = (y.clone() * w).sum().backward();
            let grad = x.grad(&grads).expect("a gradient for the input");
            [plain, y.inner(), grad].map(|t| t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        };
        let (fused, reference) = (run(true), run(false));
        for (what, (got, want)) in ["inference output", "training output", "input gradient"].iter().zip(fused.iter().zip(&reference)) {
            // Bit for bit, but any NaN equals any NaN (their sign bits differ).
            let same = |g: u32, w: u32| g == w || (f32::from_bits(g).is_nan() && f32::from_bits(w).is_nan());
            let differs = got.iter().zip(want).position(|(&g, &w)| !same(g, w));
            assert!(differs.is_none(), "{what} differs from burn's at {differs:?}");
        }
        assert!(super::fused(&Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 2.0], [2]), &Device::flex()), Activation::Tanh).is_some());
    }
}
