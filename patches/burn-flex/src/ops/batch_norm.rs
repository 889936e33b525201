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

use super::kernel_shared::{Scalar, SharedMut, back_to, for_each_task, threads, to_f32, vectorized};
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

/// `f(i)` for `i in 0..tasks` (a channel, or a block of channels or rows), in parallel where
/// rayon is on, each compiled for the CPU's widest vectors ([`vectorized`]).
fn per_task<R: Send>(tasks: usize, f: impl Fn(usize) -> R + Send + Sync) -> Vec<R> {
    let f = |i| vectorized(#[inline(always)] || f(i));
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    (0..tasks).map(f).collect()
}

/// `[rows, channels]` data (one value per plane) cut into column blocks, for tasks that each
/// run down all the rows of their block along memory.
fn column_blocks(channels: usize) -> Vec<core::ops::Range<usize>> {
    let block = channels.div_ceil(threads() * 4).next_multiple_of(16);
    (0..channels).step_by(block.max(1)).map(|start| start..(start + block).min(channels)).collect()
}

/// `Σ f(a_i, b_i)` in 16 lanes, so that the compiler can vectorize it.
#[inline(always)]
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

/// `Σ f(v)` over channel `c`'s planes. A loop: an iterator's `fold` is left out of line, and
/// so out of the task's [`vectorized`] function.
#[inline(always)]
fn plane_sum<T: Scalar>(data: &[T], planes: Planes, c: usize, f: impl Fn(T) -> T) -> f64 {
    let mut total = 0.0;
    for r in planes.rows(c) {
        total += sum(&data[r.clone()], &data[r], |v, _| f(v));
    }
    total
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

/// The statistics of `[batch, channels]` data (one value per plane): each task runs down the
/// rows of its block of columns, so the loops run along memory.
fn column_stats<T: Scalar>(data: &[T], channels: usize) -> Vec<(f64, f64)> {
    let count = (data.len() / channels.max(1)) as f64;
    let blocks = column_blocks(channels);
    per_task(blocks.len(), #[inline(always)] |b| {
        let block = blocks[b].clone();
        let mut means = vec![0.0f64; block.len()];
        for row in data.chunks_exact(channels) {
            for (s, &v) in means.iter_mut().zip(&row[block.clone()]) {
                *s += to_f64(v);
            }
        }
        means.iter_mut().for_each(|m| *m /= count);
        let mut variances = vec![0.0f64; block.len()];
        for row in data.chunks_exact(channels) {
            for ((s, &v), &m) in variances.iter_mut().zip(&row[block.clone()]).zip(&means) {
                *s += (to_f64(v) - m) * (to_f64(v) - m);
            }
        }
        means.into_iter().zip(variances).map(|(m, v)| (m, v / count)).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// `f(row, out)` for each row of `[rows, channels]` data, in runs of rows across the threads
/// (`for_each_task`); `out` is the row's part of the result, every element of which `f`
/// writes.
fn map_rows<T: Scalar>(rows: usize, channels: usize, f: impl Fn(usize, &mut [core::mem::MaybeUninit<T>]) + Send + Sync) -> Vec<T> {
    let mut y = Vec::with_capacity(rows * channels);
    let out = SharedMut(y.as_mut_ptr());
    for_each_task::<T>(rows, 0, |r, _| {
        // Each row belongs to its task alone.
        vectorized(#[inline(always)] || f(r, unsafe { out.uninit(r * channels..(r + 1) * channels) }));
    });
    // SAFETY: the runs cover every row, and `f` wrote each row whole.
    unsafe { y.set_len(rows * channels) };
    y
}

/// `y = x * scale + shift` per channel.
fn normalize<T: Scalar>(x: &[T], planes: Planes, scale: &[f64], shift: &[f64]) -> Vec<T> {
    if planes.plane == 1 {
        let (scale, shift): (Vec<T>, Vec<T>) = scale.iter().zip(shift).map(|(&a, &b)| (T::from(a).unwrap(), T::from(b).unwrap())).unzip();
        let channels = planes.channels;
        return map_rows(planes.batch, channels, #[inline(always)] |r, out| {
            for (((y, &v), &a), &b) in out.iter_mut().zip(&x[r * channels..][..channels]).zip(&scale).zip(&shift) {
                y.write(v * a + b);
            }
        });
    }
    // Not zeroed first: the channels' tasks write every element.
    let mut y = Vec::with_capacity(x.len());
    let out = SharedMut(y.as_mut_ptr());
    per_task(planes.channels, #[inline(always)] |c| {
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
        per_task(planes.channels, #[inline(always)] |c| {
        let mean = plane_sum(data, planes, c, |v| v) / planes.count();
        let m = T::from(mean).unwrap();
        let variance = plane_sum(data, planes, c, |v| (v - m) * (v - m)) / planes.count();
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
    let sums = per_task(planes.channels, #[inline(always)] |c| {
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
    let rows = xs.len() / channels.max(1);
    let count = rows as f64;
    // Σdy and Σdy·x̂ per column, a block of columns per task.
    let blocks = column_blocks(channels);
    let (sum_dy, sum_dy_xhat): (Vec<f64>, Vec<f64>) = per_task(blocks.len(), #[inline(always)] |b| {
        let block = blocks[b].clone();
        let (mean, inv_std) = (&mean[block.clone()], &inv_std[block.clone()]);
        let n = block.len();
        let (mut sum_dy, mut sum_dy_xhat) = (vec![0.0f64; n], vec![0.0f64; n]);
        for (x, dy) in xs.chunks_exact(channels).zip(dys.chunks_exact(channels)) {
            // Every slice exactly `n` long: no bounds checks in the loop, which vectorises.
            let (x, dy) = (&x[block.clone()], &dy[block.clone()]);
            let (sum_dy, sum_dy_xhat) = (&mut sum_dy[..n], &mut sum_dy_xhat[..n]);
            for c in 0..n {
                let d = to_f64(dy[c]);
                sum_dy[c] += d;
                sum_dy_xhat[c] += d * (to_f64(x[c]) - mean[c]) * inv_std[c];
            }
        }
        sum_dy.into_iter().zip(sum_dy_xhat).collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .unzip();
    // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy·x̂)), in the element type as for images.
    let column = |f: &dyn Fn(usize) -> f64| -> Vec<T> { (0..channels).map(|c| T::from(f(c)).unwrap_or_else(T::nan)).collect() };
    let k = column(&|c| gamma[c] * inv_std[c]);
    let (m, s) = (column(&|c| mean[c]), column(&|c| inv_std[c]));
    let (mean_dy, mean_dy_xhat) = (column(&|c| sum_dy[c] / count), column(&|c| sum_dy_xhat[c] / count));
    let dx = map_rows(rows, channels, #[inline(always)] |r, out| {
        let (x, dy, out) = (&xs[r * channels..][..channels], &dys[r * channels..][..channels], &mut out[..channels]);
        let (k, m, s, mean_dy, mean_dy_xhat) = (&k[..channels], &m[..channels], &s[..channels], &mean_dy[..channels], &mean_dy_xhat[..channels]);
        for c in 0..channels {
            out[c].write(k[c] * (dy[c] - mean_dy[c] - (x[c] - m[c]) * s[c] * mean_dy_xhat[c]));
        }
    });
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
    let sums = per_task(planes.channels, #[inline(always)] |c| plane_sum(data, planes, c, |v| v));
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
