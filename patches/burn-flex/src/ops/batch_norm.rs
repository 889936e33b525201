//! Batch normalization in one or two passes per channel (Vitrine's patch; see
//! `PATCH.md` at the crate root).
//!
//! burn-backend's defaults compute the batch statistics and the gradients out
//! of tensor operations: each swaps the batch and channel axes (a copy of the
//! whole activation), and the rest is a dozen element-wise passes. Here each
//! channel is one task that reads its `batch × spatial` values in place.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::{BatchNormTrain, BatchNormTrainBackward};
use burn_std::{Bytes, Shape};
use num_traits::ToPrimitive;

use super::kernel_shared::{Scalar, SharedMut, back_to, to_f32};
use crate::{Flex, FlexTensor, Layout};


/// `[batch, channels, spatial…]` seen as `batch` rows of `channels` planes of `plane` values.
#[derive(Clone, Copy)]
struct Planes {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Planes {
    fn of(t: &FlexTensor) -> Self {
        let shape = t.layout().shape();
        let (batch, channels) = (shape[0], shape[1]);
        Self {
            batch,
            channels,
            plane: shape.num_elements() / (batch * channels).max(1),
        }
    }

    /// Channel `c`'s plane in each image.
    fn rows(self, c: usize) -> impl Iterator<Item = core::ops::Range<usize>> {
        (0..self.batch).map(move |n| {
            let start = (n * self.channels + c) * self.plane;
            start..start + self.plane
        })
    }

    fn count(self) -> f64 {
        (self.batch * self.plane) as f64
    }
}

fn per_channel<R: Send>(channels: usize, f: impl Fn(usize) -> R + Send + Sync) -> Vec<R> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..channels).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    (0..channels).map(f).collect()
}

/// `Σ f(a_i, b_i)` in 16 lanes, so that the compiler can vectorize it.
fn sum<T: Scalar>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    const LANES: usize = 16;
    let mut lanes = [T::zero(); LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (a, b) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] = lanes[i] + f(a[i], b[i]);
        }
    }
    let rest = a_rest.iter().zip(b_rest).fold(T::zero(), |acc, (&a, &b)| acc + f(a, b));
    to_f64(lanes.iter().fold(rest, |acc, &v| acc + v))
}

fn to_f64<T: Scalar>(v: T) -> f64 {
    ToPrimitive::to_f64(&v).unwrap_or(f64::NAN)
}

fn values<T: Scalar>(t: &FlexTensor) -> Vec<f64> {
    t.to_contiguous().storage::<T>().iter().map(|&v| to_f64(v)).collect()
}

fn tensor<T: Scalar>(data: Vec<T>, shape: Shape) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(shape), T::dtype())
}

fn channel_tensor<T: Scalar>(values: impl Iterator<Item = f64>) -> FlexTensor {
    let data: Vec<T> = values.map(|v| T::from(v).unwrap_or_else(T::nan)).collect();
    let len = data.len();
    tensor(data, Shape::from(vec![len]))
}

/// The statistics of `[batch, channels]` data (one value per plane): the rows are added
/// whole, so the loops run along memory.
fn column_stats<T: Scalar>(data: &[T], channels: usize) -> Vec<(f64, f64)> {
    let column_sums = |f: &dyn Fn(usize, T) -> f64| {
        let mut sums = vec![0.0f64; channels];
        for row in data.chunks_exact(channels) {
            for (c, (s, &v)) in sums.iter_mut().zip(row).enumerate() {
                *s += f(c, v);
            }
        }
        sums
    };
    let count = (data.len() / channels.max(1)) as f64;
    let means: Vec<f64> = column_sums(&|_, v| to_f64(v)).into_iter().map(|s| s / count).collect();
    let variances = column_sums(&|c, v| (to_f64(v) - means[c]).powi(2));
    means.into_iter().zip(variances).map(|(m, v)| (m, v / count)).collect()
}

/// `y = x * scale + shift` per channel.
fn normalize<T: Scalar>(x: &[T], planes: Planes, scale: &[f64], shift: &[f64]) -> Vec<T> {
    if planes.plane == 1 {
        let (scale, shift): (Vec<T>, Vec<T>) = scale.iter().zip(shift).map(|(&a, &b)| (T::from(a).unwrap(), T::from(b).unwrap())).unzip();
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(planes.channels) {
            for ((v, &a), &b) in row.iter_mut().zip(&scale).zip(&shift) {
                *v = *v * a + b;
            }
        }
        return y;
    }
    // Not zeroed first: the channels' tasks write every element.
    let mut y = Vec::with_capacity(x.len());
    let out = SharedMut(y.as_mut_ptr());
    per_channel(planes.channels, |c| {
        let (scale, shift) = (T::from(scale[c]).unwrap(), T::from(shift[c]).unwrap());
        for rows in planes.rows(c) {
            // Each channel's planes belong to its task alone.
            let y = unsafe { out.uninit(rows.clone()) };
            for (y, &v) in y.iter_mut().zip(&x[rows]) {
                y.write(v * scale + shift);
            }
        }
    });
    unsafe { y.set_len(x.len()) };
    y
}

fn inference<T: Scalar>(x: FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, mean: &FlexTensor, variance: &FlexTensor, epsilon: f64) -> FlexTensor {
    let x = x.into_contiguous();
    let planes = Planes::of(&x);
    let (gamma, beta, mean, variance) = (values::<T>(gamma), values::<T>(beta), values::<T>(mean), values::<T>(variance));
    let scale: Vec<f64> = (0..planes.channels).map(|c| gamma[c] / (variance[c] + epsilon).sqrt()).collect();
    let shift: Vec<f64> = (0..planes.channels).map(|c| beta[c] - mean[c] * scale[c]).collect();
    let shape = x.layout().shape().clone();
    tensor(normalize(x.storage::<T>(), planes, &scale, &shift), shape)
}

fn train<T: Scalar>(x: FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64) -> BatchNormTrain<Flex> {
    let x = x.into_contiguous();
    let planes = Planes::of(&x);
    let data = x.storage::<T>();
    // Two passes (mean, then squared deviations) as the default does, for the same accuracy.
    let stats = if planes.plane == 1 {
        column_stats(data, planes.channels)
    } else {
        per_channel(planes.channels, |c| {
        let mean = planes.rows(c).map(|r| sum(&data[r.clone()], &data[r], |v, _| v)).sum::<f64>() / planes.count();
        let m = T::from(mean).unwrap();
        let variance = planes.rows(c).map(|r| sum(&data[r.clone()], &data[r], |v, _| (v - m) * (v - m))).sum::<f64>() / planes.count();
        (mean, variance)
        })
    };
    let (gamma, beta) = (values::<T>(gamma), values::<T>(beta));
    let scale: Vec<f64> = stats.iter().zip(&gamma).map(|((_, var), g)| g / (var + epsilon).sqrt()).collect();
    let shift: Vec<f64> = stats.iter().zip(&beta).zip(&scale).map(|(((mean, _), b), s)| b - mean * s).collect();
    let shape = x.layout().shape().clone();
    BatchNormTrain {
        output: tensor(normalize(data, planes, &scale, &shift), shape),
        mean: channel_tensor::<T>(stats.iter().map(|s| s.0)),
        variance: channel_tensor::<T>(stats.iter().map(|s| s.1)),
    }
}

fn train_backward<T: Scalar>(
    x: FlexTensor,
    gamma: &FlexTensor,
    mean: &FlexTensor,
    variance: &FlexTensor,
    epsilon: f64,
    dy: FlexTensor,
) -> BatchNormTrainBackward<Flex> {
    let (x, dy) = (x.into_contiguous(), dy.into_contiguous());
    let planes = Planes::of(&x);
    let (xs, dys) = (x.storage::<T>(), dy.storage::<T>());
    let (gamma, mean, variance) = (values::<T>(gamma), values::<T>(mean), values::<T>(variance));
    let inv_std: Vec<f64> = variance.iter().map(|v| 1.0 / (v + epsilon).sqrt()).collect();
    let shape = x.layout().shape().clone();
    if planes.plane == 1 {
        return column_backward(xs, dys, planes.channels, &gamma, &mean, &inv_std, shape);
    }
    // Not zeroed first: the channels' tasks write every element.
    let mut dx = Vec::with_capacity(xs.len());
    let out = SharedMut(dx.as_mut_ptr());
    // Per channel: Σdy (beta's gradient) and Σdy·x̂ (gamma's), then
    // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy·x̂)).
    let sums = per_channel(planes.channels, |c| {
        let (m, s) = (T::from(mean[c]).unwrap(), T::from(inv_std[c]).unwrap());
        let mut sum_dy = 0.0;
        let mut sum_dy_xhat = 0.0;
        for r in planes.rows(c) {
            let (x, dy) = (&xs[r.clone()], &dys[r]);
            sum_dy += sum(dy, dy, |d, _| d);
            sum_dy_xhat += sum(x, dy, |x, d| d * (x - m) * s);
        }
        let k = T::from(gamma[c] * inv_std[c]).unwrap();
        let (mean_dy, mean_dy_xhat) = (T::from(sum_dy / planes.count()).unwrap(), T::from(sum_dy_xhat / planes.count()).unwrap());
        for r in planes.rows(c) {
            // Each channel's planes belong to its task alone.
            let dx = unsafe { out.uninit(r.clone()) };
            for ((dx, &x), &d) in dx.iter_mut().zip(&xs[r.clone()]).zip(&dys[r]) {
                dx.write(k * (d - mean_dy - (x - m) * s * mean_dy_xhat));
            }
        }
        (sum_dy_xhat, sum_dy)
    });
    unsafe { dx.set_len(xs.len()) };
    BatchNormTrainBackward {
        x_grad: tensor(dx, shape),
        gamma_grad: channel_tensor::<T>(sums.iter().map(|s| s.0)),
        beta_grad: channel_tensor::<T>(sums.iter().map(|s| s.1)),
    }
}

/// The backward pass for `[batch, channels]` data, a row at a time.
fn column_backward<T: Scalar>(
    xs: &[T],
    dys: &[T],
    channels: usize,
    gamma: &[f64],
    mean: &[f64],
    inv_std: &[f64],
    shape: Shape,
) -> BatchNormTrainBackward<Flex> {
    let count = (xs.len() / channels.max(1)) as f64;
    let (mut sum_dy, mut sum_dy_xhat) = (vec![0.0f64; channels], vec![0.0f64; channels]);
    for (x, dy) in xs.chunks_exact(channels).zip(dys.chunks_exact(channels)) {
        for c in 0..channels {
            let d = to_f64(dy[c]);
            sum_dy[c] += d;
            sum_dy_xhat[c] += d * (to_f64(x[c]) - mean[c]) * inv_std[c];
        }
    }
    let mut dx = vec![T::zero(); xs.len()];
    for ((out, x), dy) in dx.chunks_exact_mut(channels).zip(xs.chunks_exact(channels)).zip(dys.chunks_exact(channels)) {
        for c in 0..channels {
            let xhat = (to_f64(x[c]) - mean[c]) * inv_std[c];
            let g = gamma[c] * inv_std[c] * (to_f64(dy[c]) - sum_dy[c] / count - xhat * sum_dy_xhat[c] / count);
            out[c] = T::from(g).unwrap_or_else(T::nan);
        }
    }
    BatchNormTrainBackward {
        x_grad: tensor(dx, shape),
        gamma_grad: channel_tensor::<T>(sum_dy_xhat.into_iter()),
        beta_grad: channel_tensor::<T>(sum_dy.into_iter()),
    }
}

/// Each channel's sum over the batch and the spatial positions of `[batch, channels,
/// spatial…]`: a convolution's bias gradient. burn-backend's default swaps the batch and
/// channel axes first, a copy of the whole output gradient on the calling thread.
fn channel_sums<T: Scalar>(grad: FlexTensor) -> FlexTensor {
    let grad = grad.into_contiguous();
    let planes = Planes::of(&grad);
    let data = grad.storage::<T>();
    let sums = per_channel(planes.channels, |c| planes.rows(c).map(|r| sum(&data[r.clone()], &data[r], |v, _| v)).sum::<f64>());
    channel_tensor::<T>(sums.into_iter())
}

pub(crate) fn sum_per_channel(grad: FlexTensor) -> FlexTensor {
    match grad.dtype() {
        DType::F32 => channel_sums::<f32>(grad),
        DType::F64 => channel_sums::<f64>(grad),
        dtype => back_to(dtype, channel_sums::<f32>(to_f32(grad))),
    }
}

pub(crate) fn batch_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, mean: FlexTensor, variance: FlexTensor, epsilon: f64) -> FlexTensor {
    match x.dtype() {
        DType::F32 => inference::<f32>(x, &gamma, &beta, &mean, &variance, epsilon),
        DType::F64 => inference::<f64>(x, &gamma, &beta, &mean, &variance, epsilon),
        dtype => {
            let [gamma, beta, mean, variance] = [gamma, beta, mean, variance].map(to_f32);
            back_to(dtype, inference::<f32>(to_f32(x), &gamma, &beta, &mean, &variance, epsilon))
        }
    }
}

pub(crate) fn batch_norm_train(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> BatchNormTrain<Flex> {
    match x.dtype() {
        DType::F32 => train::<f32>(x, &gamma, &beta, epsilon),
        DType::F64 => train::<f64>(x, &gamma, &beta, epsilon),
        dtype => {
            let r = train::<f32>(to_f32(x), &to_f32(gamma), &to_f32(beta), epsilon);
            BatchNormTrain {
                output: back_to(dtype, r.output),
                mean: back_to(dtype, r.mean),
                variance: back_to(dtype, r.variance),
            }
        }
    }
}

pub(crate) fn batch_norm_train_backward(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    output_grad: FlexTensor,
) -> BatchNormTrainBackward<Flex> {
    match x.dtype() {
        DType::F32 => train_backward::<f32>(x, &gamma, &mean, &variance, epsilon, output_grad),
        DType::F64 => train_backward::<f64>(x, &gamma, &mean, &variance, epsilon, output_grad),
        dtype => {
            let [gamma, mean, variance] = [gamma, mean, variance].map(to_f32);
            let r = train_backward::<f32>(to_f32(x), &gamma, &mean, &variance, epsilon, to_f32(output_grad));
            BatchNormTrainBackward {
                x_grad: back_to(dtype, r.x_grad),
                gamma_grad: back_to(dtype, r.gamma_grad),
                beta_grad: back_to(dtype, r.beta_grad),
            }
        }
    }
}
