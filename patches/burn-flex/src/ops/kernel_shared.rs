//! What Vitrine's kernels (`conv_gemm`, `batch_norm`) share; see `PATCH.md`.

use num_traits::Float;

/// The element types the kernels run in (bf16 goes through f32: gemm has no bf16).
pub(super) trait Scalar: Float + bytemuck::Pod + burn_backend::Element + Send + Sync + 'static {}
impl Scalar for f32 {}
impl Scalar for f64 {}
impl Scalar for burn_std::f16 {}

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
}
