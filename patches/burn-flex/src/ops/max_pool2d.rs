//! Max pooling without dilation, the common case, a row at a time (Vitrine's patch;
//! see `PATCH.md` at the crate root).
//!
//! Upstream's general kernel goes through the 3-D path and recomputes each
//! window's valid range per output value; here each output row reads its
//! `kernel` input rows directly, the window clipped to the plane where there is
//! padding (PyTorch pads with -inf: padding never wins). Same results: the first
//! maximum of a window wins, and a NaN anywhere in the window wins (the last one),
//! as in PyTorch.

use alloc::vec;
use burn_backend::DType;
use burn_std::{Bytes, Shape, bf16, f16};
use num_traits::Float;

use crate::{FlexTensor, Layout};

/// Whether the fast path computes this pooling: padding at most half the kernel (PyTorch's
/// rule; so no window lies wholly in the padding).
pub(crate) fn applies(dtype: DType, kernel: [usize; 2], padding: [usize; 2], dilation: [usize; 2], ceil_mode: bool) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
        && (0..2).all(|i| 2 * padding[i] <= kernel[i])
        && dilation == [1, 1]
        && !ceil_mode
}

/// Output and i64 indices into each input plane, `[batch, channels, out_h, out_w]` both.
pub(crate) fn max_pool2d_with_indices(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> (FlexTensor, FlexTensor) {
    let (values, indices) = dispatch(x, kernel, stride, padding, true);
    (values, indices.expect("indices asked for"))
}

/// The output alone (inference): no index is tracked or stored.
pub(crate) fn max_pool2d(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> FlexTensor {
    dispatch(x, kernel, stride, padding, false).0
}

fn dispatch(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], with_indices: bool) -> (FlexTensor, Option<FlexTensor>) {
    match x.dtype() {
        DType::F32 => run::<f32>(x, kernel, stride, padding, with_indices),
        DType::F64 => run::<f64>(x, kernel, stride, padding, with_indices),
        DType::F16 => run::<f16>(x, kernel, stride, padding, with_indices),
        _ => run::<bf16>(x, kernel, stride, padding, with_indices),
    }
}

fn run<T>(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], with_indices: bool) -> (FlexTensor, Option<FlexTensor>)
where
    T: Float + bytemuck::Pod + burn_backend::Element + Send + Sync,
{
    let x = x.into_contiguous();
    let shape = x.layout().shape();
    let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
    let out = [0, 1].map(|i| {
        let span = shape[2 + i] + 2 * padding[i];
        if span >= kernel[i] { (span - kernel[i]) / stride[i] + 1 } else { 0 }
    });
    let out_len = out[0] * out[1];
    let data: &[T] = x.storage();
    let mut values = vec![T::zero(); planes * out_len];
    // Empty without indices: each plane then gets an empty slice and writes none.
    let mut indices = vec![0i64; if with_indices { planes * out_len } else { 0 }];
    // The vectorised kernels' instruction set, once per call rather than per plane.
    #[cfg(target_arch = "x86_64")]
    let vector_isa = super::lanes::Isa::detect().filter(|_| stride[1] == 2 && T::dtype() == DType::F32 && h * w <= i32::MAX as usize);
    let pool_plane = |p: usize, values: &mut [T], indices: &mut [i64]| {
        let plane = &data[p * h * w..][..h * w];
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = vector_isa {
            use super::lanes::Isa;
            assert!(plane.len() == h * w && values.len() == out_len && indices.len() == if with_indices { out_len } else { 0 });
            let (plane, values) = (plane.as_ptr().cast(), values.as_mut_ptr().cast());
            // SAFETY: the CPU has the instruction set (`Isa::detect`); T is f32; the sizes are
            // the pooling's (asserted), the plane's positions fit in i32.
            unsafe {
                match (isa, with_indices) {
                    (Isa::Avx512, true) => pool_avx512::<true>(plane, [h, w], kernel, stride[0], padding, out, values, indices.as_mut_ptr()),
                    (Isa::Avx512, false) => pool_avx512::<false>(plane, [h, w], kernel, stride[0], padding, out, values, indices.as_mut_ptr()),
                    (Isa::Avx2, true) => pool_avx2::<true>(plane, [h, w], kernel, stride[0], padding, out, values, indices.as_mut_ptr()),
                    (Isa::Avx2, false) => pool_avx2::<false>(plane, [h, w], kernel, stride[0], padding, out, values, indices.as_mut_ptr()),
                }
            };
            return;
        }
        if kernel == [2, 2] && stride == [2, 2] && padding == [0, 0] {
            return match with_indices {
                true => pool_2x2(plane, w, out, values, indices),
                false => pool_2x2_values(plane, w, out, values),
            };
        }
        // The window's rows or columns inside the plane: [start, end) of `size`.
        let inside = |o: usize, i: usize, size: usize| {
            let start = (o * stride[i]).saturating_sub(padding[i]);
            (start, (o * stride[i] + kernel[i] - padding[i]).min(size))
        };
        for oh in 0..out[0] {
            let rows = inside(oh, 0, h);
            for ow in 0..out[1] {
                let cols = inside(ow, 1, w);
                let first = rows.0 * w + cols.0;
                let (mut best, mut at) = (plane[first], first);
                for row in (rows.0..rows.1).map(|r| r * w) {
                    for (c, &v) in plane[row + cols.0..row + cols.1].iter().enumerate() {
                        if beats(v, best) {
                            (best, at) = (v, row + cols.0 + c);
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

/// [`pool_2x2`] without the indices: a loop of selects. The compiler leaves it scalar (the
/// windows' columns are interleaved; 8% of `fashion-cnn`'s inference): in f32 on AVX-512
/// and AVX2 machines [`pool_avx512`] or [`pool_avx2`] runs instead.
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

/// Max pooling in f32 where the windows start two columns apart (any window, row stride and
/// padding within half the window), 16 outputs per step: for each window position in order,
/// a row's 32 columns from that position are loaded as two vectors (masked to the plane) and
/// their even columns taken out by a permute, then the same select as [`beats`], the window's
/// first value inside the plane taken as it comes. With `INDICES` each output's position in
/// the plane follows its value (training). As scalar loops, ResNet's padded 3×3 pooling was
/// 20% of ResNet-18's inference and 5% of its training step, the 2×2 one 8% of
/// `fashion-cnn`'s inference.
///
/// # Safety
/// AVX-512F is available; `plane` holds `h` rows of `w` floats, `h·w ≤ i32::MAX`; `values`
/// holds `out[0]·out[1]` floats, and `indices` as many i64 with `INDICES`; `out` is the
/// pooling's output size for these settings.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pool_avx512<const INDICES: bool>(plane: *const f32, [h, w]: [usize; 2], kernel: [usize; 2], row_stride: usize, padding: [usize; 2], out: [usize; 2], values: *mut f32, indices: *mut i64) {
    use core::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // Bits lo..hi (hi ≤ 32).
    let bits = |lo: usize, hi: usize| -> u32 { if hi > lo { (((1u64 << hi) - 1) & !((1u64 << lo) - 1)) as u32 } else { 0 } };
    let beats = |v: __m512, best: __m512| _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    for oh in 0..out[0] {
        let top = (oh * row_stride) as isize - padding[0] as isize;
        let rows = (top.max(0) as usize)..((top + kernel[0] as isize).min(h as isize) as usize);
        for ow in (0..out[1]).step_by(16) {
            let n = (out[1] - ow).min(16);
            let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
            let (mut at_best, mut seen) = (_mm512_setzero_si512(), 0 as __mmask16);
            for r in rows.clone() {
                let row = plane.wrapping_add(r * w);
                for kw in 0..kernel[1] {
                    // Lane l holds column base + l; output j reads lane 2j.
                    let base = (2 * ow + kw) as isize - padding[1] as isize;
                    let (lo, hi) = ((-base).max(0) as usize, (w as isize - base).clamp(0, 32) as usize);
                    let loaded = bits(lo, hi);
                    let at = row.wrapping_offset(base);
                    // SAFETY: the unmasked lanes are columns 0..w of a row of the plane.
                    let v = unsafe {
                        let (first, second) = (_mm512_maskz_loadu_ps(loaded as u16, at), _mm512_maskz_loadu_ps((loaded >> 16) as u16, at.wrapping_add(16)));
                        _mm512_permutex2var_ps(first, even, second)
                    };
                    let inside = bits(lo.div_ceil(2), hi.div_ceil(2).min(n)) as __mmask16;
                    if INDICES {
                        // As the scalar loop: the first value inside, then any that beats it.
                        let take = inside & (beats(v, best) | !seen);
                        best = _mm512_mask_blend_ps(take, best, v);
                        // Output j's value is column base + 2j of row r.
                        let at = _mm512_add_epi32(_mm512_set1_epi32((r * w) as i32 + base as i32), even);
                        at_best = _mm512_mask_blend_epi32(take, at_best, at);
                        seen |= inside;
                    } else {
                        // From -inf: the first value beats it, or is -inf.
                        best = _mm512_mask_blend_ps(inside & beats(v, best), best, v);
                    }
                }
            }
            let first = oh * out[1] + ow;
            // SAFETY: outputs ow..ow + n of row oh lie in `values` (and `indices`).
            unsafe {
                _mm512_mask_storeu_ps(values.wrapping_add(first), bits(0, n) as __mmask16, best);
                if INDICES {
                    let [low, high] = [_mm512_castsi512_si256(at_best), _mm512_extracti64x4_epi64::<1>(at_best)].map(|half| _mm512_cvtepi32_epi64(half));
                    _mm512_mask_storeu_epi64(indices.wrapping_add(first), bits(0, n.min(8)) as __mmask8, low);
                    _mm512_mask_storeu_epi64(indices.wrapping_add(first + 8), bits(0, n.saturating_sub(8)) as __mmask8, high);
                }
            }
        }
    }
}

/// [`pool_avx512`] on AVX2: 8 outputs per step, a row's 16 columns from each window position
/// loaded as two vectors (masked to the plane) and their even columns taken out by a shuffle
/// and a cross-lane permute.
///
/// # Safety
/// AVX2 is available; otherwise as [`pool_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn pool_avx2<const INDICES: bool>(plane: *const f32, [h, w]: [usize; 2], kernel: [usize; 2], row_stride: usize, padding: [usize; 2], out: [usize; 2], values: *mut f32, indices: *mut i64) {
    use core::arch::x86_64::*;
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    // Lanes lo..hi (of 8) set.
    let between = |lo: usize, hi: usize| _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(lo as i32), lane), _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), lane));
    let beats = |v: __m256, best: __m256| _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, best), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    for oh in 0..out[0] {
        let top = (oh * row_stride) as isize - padding[0] as isize;
        let rows = (top.max(0) as usize)..((top + kernel[0] as isize).min(h as isize) as usize);
        for ow in (0..out[1]).step_by(8) {
            let n = (out[1] - ow).min(8);
            let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
            let (mut at_best, mut seen) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for r in rows.clone() {
                let row = plane.wrapping_add(r * w);
                for kw in 0..kernel[1] {
                    // Column base + l of the 16 loaded; output j reads column base + 2j.
                    let base = (2 * ow + kw) as isize - padding[1] as isize;
                    let (lo, hi) = ((-base).max(0) as usize, (w as isize - base).clamp(0, 16) as usize);
                    let at = row.wrapping_offset(base);
                    // SAFETY: the unmasked lanes are columns 0..w of a row of the plane.
                    let v = unsafe {
                        let first = _mm256_maskload_ps(at, between(lo, hi));
                        let second = _mm256_maskload_ps(at.wrapping_add(8), between(lo.saturating_sub(8), hi.saturating_sub(8)));
                        // [f0 f2 s0 s2 | f4 f6 s4 s6], then its 64-bit quarters in the order 0, 2, 1, 3.
                        let evens = _mm256_shuffle_ps::<0b10_00_10_00>(first, second);
                        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(evens)))
                    };
                    let inside = _mm256_castsi256_ps(between(lo.div_ceil(2), hi.div_ceil(2).min(n)));
                    if INDICES {
                        // As the scalar loop: the first value inside, then any that beats it.
                        let take = _mm256_and_ps(inside, _mm256_or_ps(beats(v, best), _mm256_castsi256_ps(_mm256_xor_si256(seen, _mm256_set1_epi32(-1)))));
                        best = _mm256_blendv_ps(best, v, take);
                        // Output j's value is column base + 2j of row r.
                        let at = _mm256_add_epi32(_mm256_set1_epi32((r * w) as i32 + base as i32), even);
                        at_best = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(at_best), _mm256_castsi256_ps(at), take));
                        seen = _mm256_or_si256(seen, _mm256_castps_si256(inside));
                    } else {
                        // From -inf: the first value beats it, or is -inf.
                        best = _mm256_blendv_ps(best, v, _mm256_and_ps(inside, beats(v, best)));
                    }
                }
            }
            let first = oh * out[1] + ow;
            let (mut best_values, mut best_at) = ([0.0f32; 8], [0i32; 8]);
            // SAFETY: the arrays hold 8 lanes; outputs ow..ow + n of row oh lie in `values`
            // (and `indices`).
            unsafe {
                _mm256_storeu_ps(best_values.as_mut_ptr(), best);
                _mm256_storeu_si256(best_at.as_mut_ptr().cast(), at_best);
                for j in 0..n {
                    *values.add(first + j) = best_values[j];
                    if INDICES {
                        *indices.add(first + j) = best_at[j] as i64;
                    }
                }
            }
        }
    }
}
