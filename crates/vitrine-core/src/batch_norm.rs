//! A convolution followed by batch norm, folded into one convolution at inference.
//!
//! With its running statistics, batch norm is an affine map per channel,
//! `y = γ·(x − μ)/√(σ² + ε) + β`, so it folds into the convolution before it: each output
//! channel's weights scaled by `s = γ/√(σ² + ε)`, its bias turned into `β + (b − μ)·s`. That
//! drops a pass over the activation: batch norm's was 10% of `fashion-cnn`'s inference on
//! `flex`. PyTorch folds the same way in `torch.fx`'s `fuse` and `torch.jit.freeze`; its eager
//! mode does not. In training, where batch norm uses the batch's statistics (and updates its
//! running ones), burn's layers run as they are.

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::prelude::*;
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;

/// `bn.forward(conv.forward(x))`, as one convolution where batch norm uses its running
/// statistics.
pub fn conv_batch_norm(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if uses_batch_statistics(bn, &x) {
        return bn.forward(conv.forward(x));
    }
    let (scale, shift) = folded(bn, conv.bias.as_ref().map(Param::val));
    let [outputs] = scale.dims();
    let weight = conv.weight.val() * scale.reshape([outputs, 1, 1, 1]);
    let conv = Conv2d { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(shift)), ..conv.clone() };
    conv.forward(x)
}

/// `bn.forward(deconv.forward(x))`, as one transposed convolution where batch norm uses its
/// running statistics (and the convolution has one group).
pub fn conv_transpose_batch_norm(deconv: &ConvTranspose2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if uses_batch_statistics(bn, &x) || deconv.groups != 1 {
        return bn.forward(deconv.forward(x));
    }
    let (scale, shift) = folded(bn, deconv.bias.as_ref().map(Param::val));
    let [outputs] = scale.dims();
    // The weight is `[inputs, outputs, kh, kw]`: the output channels are its second axis.
    let weight = deconv.weight.val() * scale.reshape([1, outputs, 1, 1]);
    let options = ConvTransposeOptions::new(deconv.stride, deconv.padding, deconv.padding_out, deconv.dilation, deconv.groups);
    conv_transpose2d(x, weight, Some(shift), options)
}

/// Whether `bn` normalizes by the batch's statistics: burn's rule in `BatchNorm::forward`.
fn uses_batch_statistics(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    x.device().is_autodiff() && bn.training.is_enabled()
}

/// Each channel's scale `s = γ/√(σ² + ε)` and shift `β + (b − μ)·s` (`b` the convolution's bias,
/// or 0).
fn folded(bn: &BatchNorm, bias: Option<Tensor<1>>) -> (Tensor<1>, Tensor<1>) {
    let device = bn.gamma.val().device();
    let mean = bn.running_mean.value().to_device(&device);
    let variance = bn.running_var.value().to_device(&device);
    let scale = bn.gamma.val() / (variance + bn.epsilon).sqrt();
    let centred = match bias {
        Some(bias) => bias - mean,
        None => -mean,
    };
    let shift = bn.beta.val() + centred * scale.clone();
    (scale, shift)
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::tensor::Distribution;

    use super::*;

    /// A batch norm with running statistics far from 0 and 1, as after training.
    fn trained_batch_norm(channels: usize, device: &Device) -> BatchNorm {
        let mut bn = BatchNormConfig::new(channels).init(device);
        let random = |low, high| Tensor::<1>::random([channels], Distribution::Uniform(low, high), device);
        bn.gamma = Param::from_tensor(random(0.5, 2.0));
        bn.beta = Param::from_tensor(random(-1.0, 1.0));
        bn.running_mean = burn::module::RunningState::new(random(-2.0, 2.0));
        bn.running_var = burn::module::RunningState::new(random(0.1, 3.0));
        bn
    }

    fn assert_close(folded: Tensor<4>, unfolded: Tensor<4>) {
        let (folded, unfolded) = (folded.into_data().try_to_vec::<f32>().unwrap(), unfolded.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(folded.len(), unfolded.len());
        let largest = unfolded.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (f, u) in folded.iter().zip(&unfolded) {
            assert!((f - u).abs() <= 1e-5 * largest.max(1.0), "folded {f}, unfolded {u}");
        }
    }

    #[test]
    fn folded_convolutions_match_convolution_then_batch_norm() {
        let device = Device::flex();
        device.seed(7);
        let x = Tensor::<4>::random([3, 4, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        for (bias, stride) in [(true, 1), (false, 2)] {
            let conv = Conv2dConfig::new([4, 6], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(bias)
                .init(&device);
            let bn = trained_batch_norm(6, &device);
            assert_close(conv_batch_norm(&conv, &bn, x.clone()), bn.forward(conv.forward(x.clone())));
        }
        for bias in [true, false] {
            let deconv = ConvTranspose2dConfig::new([4, 5], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).with_bias(bias).init(&device);
            let bn = trained_batch_norm(5, &device);
            assert_close(conv_transpose_batch_norm(&deconv, &bn, x.clone()), bn.forward(deconv.forward(x.clone())));
        }
    }

    #[test]
    fn training_keeps_the_batch_statistics() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([4, 2, 5, 5], Distribution::Normal(3.0, 2.0), &device);
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init(&device);
        let bn = trained_batch_norm(3, &device);
        let y = conv_batch_norm(&conv, &bn, x);
        // Normalized by the batch's statistics: each channel's mean is β, whatever the running mean.
        let means = y.mean_dim(3).mean_dim(2).mean_dim(0).flatten::<1>(0, 3).into_data().try_to_vec::<f32>().unwrap();
        let beta = bn.beta.val().into_data().try_to_vec::<f32>().unwrap();
        for (m, b) in means.iter().zip(&beta) {
            assert!((m - b).abs() < 1e-4, "channel mean {m}, beta {b}");
        }
    }
}
