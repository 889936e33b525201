//! What Vitrine's kernels (`conv_gemm`, `conv_direct`, `batch_norm`) share; see `PATCH.md`.

use alloc::vec;
use burn_backend::DType;
use burn_std::{bf16, f16};
use num_traits::Float;

use crate::FlexTensor;
use crate::ops::module::{cast_from_f32, cast_to_f32};

/// The element types the kernels run in (bf16 goes through f32: gemm has no bf16).
pub(super) trait Scalar: Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static {}
impl Scalar for f32 {}
impl Scalar for f64 {}
impl Scalar for burn_std::f16 {}

/// What a forward convolution does to each output after its bias, as it writes it: add
/// `residual` (a tensor of the output's shape) at the same index, then, with `relu`, set it
/// to zero where it is not above zero (burn's `relu`: NaN stays NaN). A residual block's sum
/// and activation then need no passes over the output of their own.
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a, T> {
    pub(super) residual: Option<&'a [T]>,
    pub(super) relu: bool,
}

impl<T: Scalar> Epilogue<'_, T> {
    /// The output as the convolution computes it.
    pub(super) fn none() -> Self {
        Self { residual: None, relu: false }
    }

    pub(super) fn is_none(&self) -> bool {
        self.residual.is_none() && !self.relu
    }

    /// Applies it to `values`, the outputs from index `start` on, already written (and
    /// still in cache).
    pub(super) fn finish(&self, values: &mut [T], start: usize) {
        let zero = T::zero();
        match (self.residual, self.relu) {
            (Some(residual), true) => values.iter_mut().zip(&residual[start..]).for_each(|(v, &r)| {
                let sum = *v + r;
                *v = if sum <= zero { zero } else { sum };
            }),
            (Some(residual), false) => values.iter_mut().zip(&residual[start..]).for_each(|(v, &r)| *v = *v + r),
            // A select, not a conditional store: that one is not vectorised.
            (None, true) => values.iter_mut().for_each(|v| *v = if *v <= zero { zero } else { *v }),
            (None, false) => {}
        }
    }
}

/// A raw pointer that tasks writing disjoint parts of one buffer may share (with or
/// without rayon, unlike `SendMutPtr`).
#[derive(Clone, Copy)]
pub(super) struct SharedMut<T>(pub(super) *mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// # Safety
    /// `range` lies in the buffer, and no two callers hold overlapping ranges at once.
    pub(super) unsafe fn slice<'a>(self, range: core::ops::Range<usize>) -> &'a mut [T] {
        unsafe { core::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }

    /// The not yet written elements `range`, for a task to fill before the buffer's length is
    /// set (no zeroing pass first). A loop writing them through this slice is vectorised,
    /// where writes through the shared pointer one element at a time reload the pointer after
    /// every store (it might have been overwritten).
    ///
    /// # Safety
    /// `range` lies in the buffer's capacity, and no two callers hold overlapping ranges at once.
    pub(super) unsafe fn uninit<'a>(self, range: core::ops::Range<usize>) -> &'a mut [core::mem::MaybeUninit<T>] {
        unsafe { core::slice::from_raw_parts_mut(self.0.add(range.start).cast(), range.len()) }
    }
}

/// The threads the kernels share their work among.
pub(super) fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads().max(1)
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// Runs `task(i, scratch)` for `i in 0..count`, in parallel where rayon is on. The tasks
/// are dealt out in a few runs per thread, each run with one scratch buffer of
/// `scratch_len` elements (a fresh buffer per task costs more than the task's copies).
pub(super) fn for_each_task<T: Scalar>(count: usize, scratch_len: usize, task: impl Fn(usize, &mut [T]) + Send + Sync) {
    in_runs(count, |tasks| {
        let mut scratch = vec![T::zero(); scratch_len];
        tasks.for_each(|i| task(i, &mut scratch));
    });
}

/// [`for_each_task`] for tasks that write each element of their scratch before reading it: the
/// buffer is the thread's own, kept from call to call and not zeroed. Zeroing a fresh one for
/// every run was 2-4% of `dcgan`'s inference.
pub(super) fn for_each_task_overwriting<T: Scalar>(count: usize, scratch_len: usize, task: impl Fn(usize, &mut [T]) + Send + Sync) {
    in_runs(count, |tasks| with_kept_scratch(scratch_len, |scratch| tasks.for_each(|i| task(i, scratch))));
}

/// Calls `run` on a few runs of consecutive tasks per thread, in parallel where rayon is on.
fn in_runs(count: usize, run: impl Fn(core::ops::Range<usize>) + Send + Sync) {
    let runs = (threads() * 4).min(count).max(1);
    let run = |r: usize| run(r * count / runs..(r + 1) * count / runs);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..runs).into_par_iter().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    (0..runs).for_each(run);
}

/// Calls `f` with `len` elements of this thread's kept scratch (grown as needed; its contents
/// are whatever the last user left).
#[cfg(feature = "std")]
fn with_kept_scratch<T: Scalar, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    use core::cell::Cell;
    std::thread_local! {
        static KEPT: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    }
    // Taken out while in use, so that a call nested on this thread (a task rayon steals while
    // a gemm waits) starts a buffer of its own rather than sharing this one.
    let mut kept = KEPT.with(Cell::take);
    let words = (len * core::mem::size_of::<T>()).div_ceil(8);
    if kept.len() < words {
        kept.resize(words, 0);
    }
    let result = f(&mut bytemuck::cast_slice_mut::<u64, T>(&mut kept[..words])[..len]);
    KEPT.with(|cell| {
        let other = cell.take();
        cell.set(if other.len() > kept.len() { other } else { kept });
    });
    result
}

#[cfg(not(feature = "std"))]
fn with_kept_scratch<T: Scalar, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    f(&mut alloc::vec![T::zero(); len])
}

/// Runs `f` compiled for AVX-512 (or AVX2) where the CPU has it: the default build targets
/// SSE2, and these loops stream whole activations (`dcgan`'s batch norms ran 4 lanes wide).
/// Without fast-math the arithmetic is the same, only wider.
#[inline(always)]
pub(super) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { avx512(f) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, row stride of dst given, its column stride 1; the
/// operands as (pointer, column stride, row stride).
///
/// # Safety
/// The operands hold the elements their shapes and strides reach.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm<T: Scalar>(
    [m, n, k]: [usize; 3],
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    parallelism: gemm::Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0,
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0,
            rhs.1 as isize,
            rhs.2 as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Half-precision tensors as f32 (the kernels' bf16 has no gemm, f16 no accurate sums); others as they are.
pub(super) fn to_f32(t: FlexTensor) -> FlexTensor {
    match t.dtype() {
        DType::F16 => cast_to_f32(t, f16::to_f32),
        DType::BF16 => cast_to_f32(t, bf16::to_f32),
        _ => t,
    }
}

/// An f32 result back in the half-precision `dtype` it was computed for; others as they are.
pub(super) fn back_to(dtype: DType, t: FlexTensor) -> FlexTensor {
    match dtype {
        DType::F16 => cast_from_f32(t, f16::from_f32),
        DType::BF16 => cast_from_f32(t, bf16::from_f32),
        _ => t,
    }
}
