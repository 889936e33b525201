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

use crate::backend::one_input_backward;
use crate::compiled_per_cpu;

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
        kept_tensor_backward(ops, grads, |grad, kept| self.activation.backward(grad, kept));
    }
}

/// The backward pass of a one-input element-wise operation that kept one f32 tensor (its input,
/// its output or a mask): registers `gradient(output's gradient, kept values)` as the input's.
pub(crate) fn kept_tensor_backward(ops: Ops<FlexTensor, 1>, grads: &mut Gradients, gradient: impl FnOnce(&FlexTensor, &[f32]) -> FlexTensor) {
    let Some((grad, input, kept)) = one_input_backward(ops, grads) else { return };
    let kept = kept.to_contiguous();
    let kept = kept.as_slice::<f32>().expect("f32, checked before the forward pass");
    grads.register::<Flex>(input, gradient(&grad, kept));
}

/// `f(v_i, o_i)` over `values` and `other` (the values themselves when not given), in chunks
/// across the threads, into a new contiguous tensor of `values`' shape.
pub(crate) fn map(values: &FlexTensor, other: Option<&[f32]>, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let shape = values.layout().shape().clone();
    let values = values.to_contiguous();
    let values = values.as_slice::<f32>().expect("f32, checked before the forward pass");
    let other = other.unwrap_or(values);
    assert_eq!(values.len(), other.len(), "a gradient of the activation's shape");
    let mut out = Vec::with_capacity(values.len());
    out.spare_capacity_mut()
        .par_chunks_mut(CHUNK)
        .zip(values.par_chunks(CHUNK).zip(other.par_chunks(CHUNK)))
        .for_each(|(out, (values, other))| map_chunk(out, values, other, &f));
    // SAFETY: the chunks above cover the whole spare capacity, one write per element.
    unsafe { out.set_len(values.len()) };
    FlexTensor::from_data(TensorData::new(out, shape))
}

compiled_per_cpu! {
    /// One chunk of [`map`], compiled for the CPU: the default build targets SSE2, 4 lanes (the
    /// attention's tanh was 6% of `text-lstm-attn`'s inference so).
    fn map_chunk(out: &mut [std::mem::MaybeUninit<f32>], values: &[f32], other: &[f32], f: &impl Fn(f32, f32) -> f32) {
        for ((o, &v), &w) in out.iter_mut().zip(values).zip(other) {
            // `f` computes both sides and selects (no branch, no captured reference to reload):
            // the loop vectorises.
            o.write(f(v, w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 2] = [211, 317];

    /// `activation` on `values` seen transposed (a non-contiguous input) on `device`: the output
    /// without autodiff, then with it the output and the input's gradient of `Σ y·w`.
    fn outputs_and_gradient(device: Device, values: &[f32], activation: &dyn Fn(Tensor<2>) -> Tensor<2>) -> [Vec<f32>; 3] {
        let weights: Vec<f32> = (0..values.len()).map(|i| (i % 13) as f32 - 6.0).collect();
        let input = |data: &[f32], device: &Device| Tensor::<2>::from_data(TensorData::new(data.to_vec(), SHAPE), device).transpose();
        let plain = activation(input(values, &device));
        let autodiff = device.autodiff();
        let x = input(values, &autodiff).require_grad();
        let y = activation(x.clone());
        let grads = (y.clone() * input(&weights, &autodiff)).sum().backward();
        let grad = x.grad(&grads).expect("a gradient for the input");
        [plain, y.inner(), grad].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
    }

    /// Bit for bit, any NaN equal to any NaN (their sign bits may differ).
    fn assert_same(got: &[Vec<f32>; 3], want: &[Vec<f32>; 3]) {
        for (what, (got, want)) in ["inference output", "training output", "input gradient"].iter().zip(got.iter().zip(want)) {
            assert_eq!(got.len(), want.len(), "{what}");
            let differs = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()));
            assert!(differs.is_none(), "{what} differs from burn's at {differs:?}");
        }
    }

    /// Values over more than one chunk, with ±0, NaN and the infinities first.
    fn values(scale: f32, offset: f32) -> Vec<f32> {
        let mut values: Vec<f32> = (0..SHAPE[0] * SHAPE[1]).map(|i| (i * 7919 % 1013) as f32 / scale - offset).collect();
        values[..6].copy_from_slice(&[0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -3.0]);
        values
    }

    /// The fused leaky ReLU against burn's composition on burn-ndarray.
    #[test]
    fn fused_leaky_relu_and_its_gradient_equal_burns() {
        let values = values(1013.0, 0.5);
        #[allow(deprecated)] // burn-ndarray: burn's composition, the reference
        let reference = outputs_and_gradient(Device::ndarray(), &values, &|x| burn::tensor::activation::leaky_relu(x, 0.2));
        assert_same(&outputs_and_gradient(Device::flex(), &values, &|x| leaky_relu(x, 0.2)), &reference);
        // It did run fused on flex: burn's composition gives the same numbers but not one operation.
        assert!(fused(&Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 2.0], [2]), &Device::flex()), Activation::LeakyRelu { slope: 0.2 }).is_some());
    }

    /// The fused tanh against burn's own on `flex` (the same f32 tanh underneath).
    #[test]
    fn fused_tanh_and_its_gradient_equal_burns() {
        let values = values(101.3, 5.0);
        let reference = outputs_and_gradient(Device::flex(), &values, &|x| x.tanh());
        assert_same(&outputs_and_gradient(Device::flex(), &values, &tanh), &reference);
        assert!(fused(&Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 2.0], [2]), &Device::flex()), Activation::Tanh).is_some());
    }
}
