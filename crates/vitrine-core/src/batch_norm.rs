//! A convolution followed by batch norm, folded into one convolution at inference.
//!
//! With its running statistics, batch norm is an affine map per channel,
//! `y = γ·(x − μ)/√(σ² + ε) + β`, so it folds into the convolution before it: each output
//! channel's weights scaled by `s = γ/√(σ² + ε)`, its bias turned into `β + (b − μ)·s`. That
//! drops a pass over the activation: batch norm's was 10% of `fashion-cnn`'s inference on
//! `flex`. PyTorch folds the same way in `torch.fx`'s `fuse` and `torch.jit.freeze`; its eager
//! mode does not. In training, where batch norm uses the batch's statistics (and updates its
//! running ones), burn's layers run as they are.

use burn::backend::Flex;
use burn::backend::flex::ops::{conv_transpose2d_fused, conv2d_fused};
use burn::module::Param;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

/// `bn.forward(conv.forward(x))`, as one convolution where batch norm uses its running
/// statistics.
pub fn conv_batch_norm(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if uses_batch_statistics(bn, &x) {
        return bn.forward(conv.forward(x));
    }
    let (weight, shift) = folded_conv(conv, bn);
    let conv = Conv2d { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(shift)), ..conv.clone() };
    conv.forward(x)
}

/// `relu(conv_batch_norm(conv, bn, x) + residual)`, or without a residual
/// `relu(conv_batch_norm(conv, bn, x))`: the ends of a residual block's two branches. At
/// inference on flex, one convolution that adds the residual and activates each value as it
/// writes it (`conv2d_fused`, Vitrine's burn-flex patch): as passes of their own over the
/// output, the sum and the activations were ~7% of `resnet-small`'s inference.
pub fn conv_batch_norm_relu(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, residual: Option<Tensor<4>>) -> Tensor<4> {
    if !uses_batch_statistics(bn, &x)
        && let Some(y) = fused_on_flex(conv, bn, &x, residual.as_ref())
    {
        return y;
    }
    let y = conv_batch_norm(conv, bn, x);
    relu(match residual {
        Some(residual) => y + residual,
        None => y,
    })
}

/// `conv_batch_norm_relu` as one flex operation, where the tensors are flex's (not under
/// autodiff) and the padding is explicit; `None` elsewhere.
fn fused_on_flex(conv: &Conv2d, bn: &BatchNorm, x: &Tensor<4>, residual: Option<&Tensor<4>>) -> Option<Tensor<4>> {
    let on_flex = |t: &Tensor<4>| t.clone().try_into_primitive::<Flex>().ok();
    let input = on_flex(x)?;
    let residual = match residual {
        Some(residual) => Some(on_flex(residual)?),
        None => None,
    };
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0); 2],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return None,
    };
    let (weight, shift) = folded_conv(conv, bn);
    let (weight, shift) = (weight.try_into_primitive::<Flex>().ok()?, shift.try_into_primitive::<Flex>().ok()?);
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    Some(Tensor::from_primitive::<Flex>(conv2d_fused(input, weight, Some(shift), residual, true, &options)))
}

/// `bn.forward(deconv.forward(x))`, as one transposed convolution where batch norm uses its
/// running statistics (and the convolution has one group).
pub fn conv_transpose_batch_norm(deconv: &ConvTranspose2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if uses_batch_statistics(bn, &x) || deconv.groups != 1 {
        return bn.forward(deconv.forward(x));
    }
    let (weight, shift) = folded_transpose(deconv, bn);
    conv_transpose2d(x, weight, Some(shift), transpose_options(deconv))
}

/// `relu(conv_transpose_batch_norm(deconv, bn, x))`. At inference on flex, one transposed
/// convolution that activates each value as it writes it (`conv_transpose2d_fused`, Vitrine's
/// burn-flex patch), instead of a pass of its own over the output.
pub fn conv_transpose_batch_norm_relu(deconv: &ConvTranspose2d, bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !uses_batch_statistics(bn, &x)
        && deconv.groups == 1
        && let Ok(input) = x.clone().try_into_primitive::<Flex>()
    {
        let (weight, shift) = folded_transpose(deconv, bn);
        if let (Ok(weight), Ok(shift)) = (weight.try_into_primitive::<Flex>(), shift.try_into_primitive::<Flex>()) {
            return Tensor::from_primitive::<Flex>(conv_transpose2d_fused(input, weight, Some(shift), true, &transpose_options(deconv)));
        }
    }
    relu(conv_transpose_batch_norm(deconv, bn, x))
}

/// `deconv`'s weights and bias with `bn` folded in (as `folded_conv`).
fn folded_transpose(deconv: &ConvTranspose2d, bn: &BatchNorm) -> (Tensor<4>, Tensor<1>) {
    let (scale, shift) = folded(bn, deconv.bias.as_ref().map(Param::val));
    let [outputs] = scale.dims();
    // The weight is `[inputs, outputs, kh, kw]`: the output channels are its second axis. Each
    // scale repeated over its kernel positions makes one row to multiply every input's row by:
    // broadcast along the middle axis, flex multiplied kh·kw values at a time (at batch 1, 26%
    // of `dcgan`'s inference).
    let weight = deconv.weight.val();
    let [inputs, _, kh, kw] = weight.dims();
    let row = scale.reshape([outputs, 1]).repeat_dim(1, kh * kw).reshape([1, outputs * kh * kw]);
    ((weight.reshape([inputs, outputs * kh * kw]) * row).reshape([inputs, outputs, kh, kw]), shift)
}

fn transpose_options(deconv: &ConvTranspose2d) -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new(deconv.stride, deconv.padding, deconv.padding_out, deconv.dilation, deconv.groups)
}

/// `conv`'s weights and bias with `bn` folded in: each output channel's weights scaled by
/// `s`, its bias the shift of [`folded`].
fn folded_conv(conv: &Conv2d, bn: &BatchNorm) -> (Tensor<4>, Tensor<1>) {
    let (scale, shift) = folded(bn, conv.bias.as_ref().map(Param::val));
    let [outputs] = scale.dims();
    (conv.weight.val() * scale.reshape([outputs, 1, 1, 1]), shift)
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
        assert_eq!(folded.dims(), unfolded.dims());
        let (folded, unfolded) = (folded.into_data().try_to_vec::<f32>().unwrap(), unfolded.into_data().try_to_vec::<f32>().unwrap());
        let largest = unfolded.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (f, u) in folded.iter().zip(&unfolded) {
            assert!((f - u).abs() <= 1e-5 * largest.max(1.0), "got {f}, want {u}");
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

    /// The fused convolution on flex against batch norm, the sum and `relu` applied one after
    /// another, for each of the patched burn-flex's forward paths: Winograd (tiles cut off at
    /// the edges; an image of 72 tiles, in bands), the direct kernel, strided convolutions of
    /// several images to a task and of one image, and the grouped and pointwise convolutions
    /// it leaves to upstream (the epilogue as a pass of its own).
    #[test]
    fn fused_residual_ends_match_their_composition() {
        let device = Device::flex();
        device.seed(11);
        // (input, outputs, kernel, stride, padding, groups)
        let cases = [
            ([3, 16, 7, 9], 17, 3, 1, 1, 1),
            ([2, 16, 34, 30], 16, 3, 1, 1, 1),
            ([2, 5, 14, 14], 20, 3, 1, 1, 1),
            ([9, 4, 9, 7], 6, 3, 2, 1, 1),
            ([1, 3, 10, 7], 5, 4, 2, 1, 1),
            ([2, 4, 6, 6], 6, 3, 1, 1, 2),
            ([2, 8, 5, 5], 4, 1, 1, 0, 1),
        ];
        for (case, (shape, outputs, kernel, stride, padding, groups)) in cases.into_iter().enumerate() {
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let conv = Conv2dConfig::new([shape[1], outputs], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
                .with_groups(groups)
                .with_bias(case % 2 == 0)
                .init(&device);
            let bn = trained_batch_norm(outputs, &device);
            let composed = bn.forward(conv.forward(x.clone()));
            let residual = Tensor::<4>::random(composed.dims(), Distribution::Normal(0.0, 2.0), &device);
            for residual in [Some(residual), None] {
                let fused = fused_on_flex(&conv, &bn, &x, residual.as_ref()).expect("flex tensors, explicit padding");
                let want = relu(match &residual {
                    Some(residual) => composed.clone() + residual.clone(),
                    None => composed.clone(),
                });
                assert_close(fused, want);
            }
        }
    }

    /// `conv_transpose_batch_norm_relu` on flex against the transposed convolution, batch norm
    /// and `relu` one after another, for each path of the patched burn-flex: DCGAN's halving
    /// kind with several images to a task (its row-wise col2im, on AVX-512 machines with the
    /// AVX2 code too) and with one, other strided ones both ways, the direct kernel's and
    /// Winograd's adjoints, and a grouped one (upstream's, the ReLU a pass of its own).
    #[test]
    fn fused_transposed_convolutions_match_their_composition() {
        let device = Device::flex();
        device.seed(13);
        // (input, outputs, kernel, stride, padding, groups)
        let cases = [
            ([9, 6, 7, 7], 5, 4, 2, 1, 1),
            ([2, 6, 5, 4], 5, 4, 2, 1, 1),
            ([12, 4, 6, 5], 3, 3, 2, 1, 1),
            ([3, 4, 6, 5], 3, 3, 2, 1, 1),
            ([2, 5, 14, 14], 8, 3, 1, 1, 1),
            ([2, 16, 8, 9], 16, 3, 1, 1, 1),
            ([2, 4, 5, 5], 6, 3, 2, 0, 2),
        ];
        crate::backend::for_each_instruction_set(|avx512| {
            for (case, (shape, outputs, kernel, stride, padding, groups)) in cases.into_iter().enumerate() {
                let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let deconv = ConvTranspose2dConfig::new([shape[1], outputs], [kernel, kernel])
                    .with_stride([stride, stride])
                    .with_padding([padding, padding])
                    .with_groups(groups)
                    .with_bias(case % 2 == 0)
                    .init(&device);
                let bn = trained_batch_norm(outputs, &device);
                let want = relu(bn.forward(deconv.forward(x.clone())));
                let got = conv_transpose_batch_norm_relu(&deconv, &bn, x.clone());
                let cut = want.clone().equal_elem(0.0).int().sum().into_scalar::<i64>();
                assert!(cut > 0, "case {case} (AVX-512 allowed: {avx512}): ReLU cut nothing");
                assert_close(got, want);
                // The fused operation itself, with and without the ReLU, grouped ones included.
                let plain = deconv.forward(x.clone());
                for (relu_too, want) in [(true, relu(plain.clone())), (false, plain)] {
                    let on_flex = |t: Tensor<4>| t.try_into_primitive::<Flex>().expect("a flex tensor");
                    let bias = deconv.bias.as_ref().map(|b| b.val().try_into_primitive::<Flex>().expect("a flex tensor"));
                    let got = conv_transpose2d_fused(on_flex(x.clone()), on_flex(deconv.weight.val()), bias, relu_too, &transpose_options(&deconv));
                    assert_close(Tensor::from_primitive::<Flex>(got), want);
                }
            }
        });
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
