//! Max pooling without padding or dilation, the common case, a row at a time
//! (Vitrine's patch; see `PATCH.md` at the crate root).
//!
//! Upstream's general kernel goes through the 3-D path and recomputes each
//! window's valid range per output value; here each output row reads its
//! `kernel` input rows directly. Same results: the first maximum of a window
//! wins, and a NaN anywhere in the window wins (the last one), as in PyTorch.

use alloc::vec;
use burn_backend::DType;
use burn_std::{Bytes, Shape, bf16, f16};
use num_traits::Float;

use crate::{FlexTensor, Layout};

/// Whether the fast path computes this pooling.
pub(crate) fn applies(dtype: DType, padding: [usize; 2], dilation: [usize; 2], ceil_mode: bool) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
        && padding == [0, 0]
        && dilation == [1, 1]
        && !ceil_mode
}

/// Output and i64 indices into each input plane, `[batch, channels, out_h, out_w]` both.
pub(crate) fn max_pool2d_with_indices(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> (FlexTensor, FlexTensor) {
    let (values, indices) = dispatch(x, kernel, stride, true);
    (values, indices.expect("indices asked for"))
}

/// The output alone (inference): no index is tracked or stored.
pub(crate) fn max_pool2d(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> FlexTensor {
    dispatch(x, kernel, stride, false).0
}

fn dispatch(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], with_indices: bool) -> (FlexTensor, Option<FlexTensor>) {
    match x.dtype() {
        DType::F32 => run::<f32>(x, kernel, stride, with_indices),
        DType::F64 => run::<f64>(x, kernel, stride, with_indices),
        DType::F16 => run::<f16>(x, kernel, stride, with_indices),
        _ => run::<bf16>(x, kernel, stride, with_indices),
    }
}

fn run<T>(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], with_indices: bool) -> (FlexTensor, Option<FlexTensor>)
where
    T: Float + bytemuck::Pod + burn_backend::Element + Send + Sync,
{
    let x = x.into_contiguous();
    let shape = x.layout().shape();
    let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
    let out = [0, 1].map(|i| if shape[2 + i] >= kernel[i] { (shape[2 + i] - kernel[i]) / stride[i] + 1 } else { 0 });
    let out_len = out[0] * out[1];
    let data: &[T] = x.storage();
    let mut values = vec![T::zero(); planes * out_len];
    // Empty without indices: each plane then gets an empty slice and writes none.
    let mut indices = vec![0i64; if with_indices { planes * out_len } else { 0 }];
    let pool_plane = |p: usize, values: &mut [T], indices: &mut [i64]| {
        let plane = &data[p * h * w..][..h * w];
        if kernel == [2, 2] && stride == [2, 2] {
            return match with_indices {
                true => pool_2x2(plane, w, out, values, indices),
                false => pool_2x2_values(plane, w, out, values),
            };
        }
        for oh in 0..out[0] {
            for ow in 0..out[1] {
                let first = oh * stride[0] * w + ow * stride[1];
                let (mut best, mut at) = (plane[first], first);
                for kh in 0..kernel[0] {
                    let row = first + kh * w;
                    for (kw, &v) in plane[row..row + kernel[1]].iter().enumerate() {
                        if beats(v, best) {
                            (best, at) = (v, row + kw);
                        }
                    }
                }
                values[oh * out[1] + ow] = best;
                if with_indices {
                    indices[oh * out[1] + ow] = at as i64;
                }
            }
        }
    };
    if out_len > 0 {
        let index_chunks: alloc::vec::Vec<&mut [i64]> = match with_indices {
            true => indices.chunks_mut(out_len).collect(),
            false => (0..planes).map(|_| <&mut [i64]>::default()).collect(),
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            values
                .par_chunks_mut(out_len)
                .zip(index_chunks)
                .enumerate()
                .for_each(|(p, (v, i))| pool_plane(p, v, i));
        }
        #[cfg(not(feature = "rayon"))]
        for (p, (v, i)) in values.chunks_mut(out_len).zip(index_chunks).enumerate() {
            pool_plane(p, v, i);
        }
    }
    let out_shape = Shape::from(vec![shape[0], shape[1], out[0], out[1]]);
    (
        FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(out_shape.clone()), x.dtype()),
        with_indices.then(|| FlexTensor::new(Bytes::from_elems(indices), Layout::contiguous(out_shape), DType::I64)),
    )
}

/// PyTorch's window rule: a larger value or a NaN replaces the best so far, so the first
/// maximum wins ties and the last NaN wins.
#[inline(always)]
fn beats<T: Float>(v: T, best: T) -> bool {
    v > best || v.is_nan()
}

/// The 2×2, stride-2 window of most CNNs, unrolled: three selects per output and no inner
/// loops (the general loop above spent 15% of `fashion-cnn`'s training step). Same rule.
fn pool_2x2<T: Float>(plane: &[T], w: usize, out: [usize; 2], values: &mut [T], indices: &mut [i64]) {
    for oh in 0..out[0] {
        let top_at = 2 * oh * w;
        let (top, bottom) = plane[top_at..top_at + 2 * w].split_at(w);
        let values = &mut values[oh * out[1]..][..out[1]];
        let indices = &mut indices[oh * out[1]..][..out[1]];
        for (ow, (value, index)) in values.iter_mut().zip(indices.iter_mut()).enumerate() {
            let c = 2 * ow;
            let (mut best, mut at) = (top[c], c);
            for (v, position) in [(top[c + 1], c + 1), (bottom[c], w + c), (bottom[c + 1], w + c + 1)] {
                let take = beats(v, best);
                best = if take { v } else { best };
                at = if take { position } else { at };
            }
            *value = best;
            *index = (top_at + at) as i64;
        }
    }
}

/// [`pool_2x2`] without the indices: a loop of selects the compiler can vectorise.
fn pool_2x2_values<T: Float>(plane: &[T], w: usize, out: [usize; 2], values: &mut [T]) {
    for oh in 0..out[0] {
        let top_at = 2 * oh * w;
        let (top, bottom) = plane[top_at..top_at + 2 * w].split_at(w);
        let values = &mut values[oh * out[1]..][..out[1]];
        for (ow, value) in values.iter_mut().enumerate() {
            let c = 2 * ow;
            let mut best = top[c];
            for v in [top[c + 1], bottom[c], bottom[c + 1]] {
                best = if beats(v, best) { v } else { best };
            }
            *value = best;
        }
    }
}
