//! Dropout as one operation on the `flex` CPU backend, forward and backward; burn's own layer
//! elsewhere (ndarray, the GPU).
//!
//! burn's `Dropout` multiplies the input by its mask, then by `1/keep`: two passes and two
//! allocations forward, two more backward. Here each way is one pass, with the same mask drawn
//! from the same generator and the same two roundings in the same order, so training gives the
//! same numbers bit for bit.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::{DType, Distribution};

use crate::activation::{kept_tensor_backward, map};

/// `layer.forward(x)`, one pass each way on `flex` when the layer drops anything.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    fused(layer, &x).unwrap_or_else(|| layer.forward(x))
}

fn fused<const D: usize>(layer: &Dropout, x: &Tensor<D>) -> Option<Tensor<D>> {
    let device = x.device();
    // burn's layer passes the input through in these cases (the first two at inference).
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return None;
    }
    if x.dtype() != DType::F32 || !crate::backend::is_flex(&device) {
        return None;
    }
    let keep = 1.0 - layer.prob;
    // burn's draw: the mask is the first thing taken from the generator, as in `Dropout::forward`.
    let mask = x.random_like(Distribution::Bernoulli(keep)).inner().try_into_primitive::<Flex>().ok()?;
    // burn multiplies by its f64 `1/keep` as an f32 scalar.
    let scale = (1.0 / keep) as f32;
    let x = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let mask_values = mask.to_contiguous();
    let mask_values = mask_values.as_slice::<f32>().expect("an f32 mask, as the input");
    // (x·m)·s and (g·s)·m: burn's two products, in its order.
    let forward = |x: FlexTensor| map(&x, Some(mask_values), move |v, m| v * m * scale);
    let out = match (DropoutBackward { scale }).prepare::<NoCheckpointing>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = forward(x.into_primitive());
            prep.finish(mask, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// The input's gradient: the output's, scaled, where the mask kept the value.
#[derive(Debug)]
struct DropoutBackward {
    scale: f32,
}

impl Backward<Flex, 1> for DropoutBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let scale = self.scale;
        kept_tensor_backward(ops, grads, |grad, mask| map(grad, Some(mask), move |g, m| g * scale * m));
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::DropoutConfig;
    use burn::tensor::TensorData;

    use super::*;

    /// The output and the input's gradient of `Σ y·w`, dropout drawn after seeding `seed`.
    fn output_and_gradient(device: &Device, seed: u64, drop: &dyn Fn(Tensor<2>) -> Tensor<2>) -> [Vec<f32>; 2] {
        let shape = [301, 257]; // more than one chunk of `map`, and a mask split among threads
        let n = shape[0] * shape[1];
        let values: Vec<f32> = (0..n).map(|i| (i * 7919 % 1013) as f32 / 101.3 - 5.0).collect();
        let weights: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let autodiff = device.clone().autodiff();
        // Seen transposed: a non-contiguous input.
        let x = Tensor::<2>::from_data(TensorData::new(values, shape), &autodiff).transpose().require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(weights, shape), &autodiff).transpose();
        autodiff.seed(seed);
        let y = drop(x.clone());
        let grads = (y.clone() * w).sum().backward();
        [y.inner(), x.grad(&grads).expect("a gradient for the input")].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
    }

    #[test]
    fn fused_dropout_equals_burns_bit_for_bit() {
        let _seeded = crate::backend::seeded_draws();
        let device = Device::flex();
        let layer = DropoutConfig::new(0.3).init();
        let ours = output_and_gradient(&device, 11, &|x| dropout(&layer, x));
        let burns = output_and_gradient(&device, 11, &|x| layer.forward(x));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ours[0]), bits(&burns[0]), "output");
        assert_eq!(bits(&ours[1]), bits(&burns[1]), "input gradient");
        // It dropped about 30% (so the comparison above had something to compare) …
        let dropped = ours[0].iter().filter(|&&v| v == 0.0).count() as f64 / ours[0].len() as f64;
        assert!((dropped - 0.3).abs() < 0.01, "{dropped} dropped");
        // … and ran fused: burn's layer gives the same numbers but not as one operation.
        let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32; 8], [8]), &device.clone().autodiff());
        assert!(fused(&layer, &x).is_some());
        // A different draw gives a different mask.
        assert_ne!(output_and_gradient(&device, 12, &|x| dropout(&layer, x))[0], ours[0]);
    }
}
