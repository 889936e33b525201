//! 2-D convolutions, their transposes and all their gradients as im2col + gemm
//! (Vitrine's patch; see `PATCH.md` at the crate root).
//!
//! Upstream computes a convolution's weight gradient as another convolution
//! over batch-swapped tensors (a kernel the size of the image, a handful of
//! output positions, layout copies around it) and its input gradient as a
//! transposed convolution. Here every one of the six operations is one
//! im2col (or its adjoint, col2im) and one gemm per image, on NCHW data
//! directly:
//!
//! - forward:         Y_n = W · col(X_n)
//! - input gradient:  dX_n = col2im(Wᵀ · dY_n)
//! - weight gradient: dW = Σ_n dY_n · col(X_n)ᵀ
//!
//! A transposed convolution is the input gradient of the convolution that
//! goes the other way, so it reuses the same three kernels with the roles
//! of input and output swapped. The column matrix is built a tile of output
//! rows at a time, so large images stay in bounded memory.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::{ConvOptions, ConvTransposeOptions};
use burn_std::{Bytes, Shape, f16};

#[cfg(target_arch = "x86_64")]
use super::conv_direct::{Same3x3, Weights};
#[cfg(target_arch = "x86_64")]
use super::conv_winograd::Winograd;
#[cfg(target_arch = "x86_64")]
use super::lanes::Isa;
use super::kernel_shared::{Epilogue, Scalar, SharedMut, back_to, for_each_task_overwriting, gemm, threads, to_f32};
use crate::{FlexTensor, Layout};

/// The most column-matrix bytes one task builds at a time.
const COLUMN_BYTES: usize = 4 * 1024 * 1024;

/// The most column-matrix bytes of the images one task takes together (`images_per_task`),
/// so that they stay in the core's L2 cache between the gather and the gemm.
const IMAGES_COLUMN_BYTES: usize = 1024 * 1024;

/// The most images one task takes together.
const MAX_IMAGES_PER_TASK: usize = 16;

/// A convolution from `[batch, channels_in, height, width]` to
/// `[batch, channels_out, out_height, out_width]`.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    channels_in: usize,
    height: usize,
    width: usize,
    channels_out: usize,
    groups: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    out: [usize; 2],
}

impl Geometry {
    fn in_per_group(&self) -> usize {
        self.channels_in / self.groups
    }

    fn out_per_group(&self) -> usize {
        self.channels_out / self.groups
    }

    /// Rows of the column matrix: one per (input channel of a group, kernel position).
    fn col_rows(&self) -> usize {
        self.in_per_group() * self.kernel[0] * self.kernel[1]
    }

    fn out_pixels(&self) -> usize {
        self.out[0] * self.out[1]
    }

    fn image_len(&self) -> usize {
        self.channels_in * self.height * self.width
    }

    /// The convolutions that `conv_winograd` and `conv_direct` compute: f32 on an AVX-512 or
    /// AVX2 machine, 3×3, stride 1, padding 1 all round, no dilation, one group.
    #[cfg(target_arch = "x86_64")]
    fn same_3x3<T: Scalar>(&self) -> Option<Same3x3> {
        let applies = T::dtype() == DType::F32
            && self.kernel == [3, 3]
            && self.stride == [1, 1]
            && self.padding == [1, 1]
            && self.dilation == [1, 1]
            && self.groups == 1
            && self.out == [self.height, self.width];
        let isa = Isa::detect().filter(|_| applies)?;
        Some(Same3x3 {
            batch: self.batch,
            inputs: self.channels_in,
            outputs: self.channels_out,
            height: self.height,
            width: self.width,
            isa,
        })
    }

    /// Winograd's F(M×M, 3×3) (`conv_winograd`), where it applies and there are enough
    /// channels (`Winograd::worthwhile`): M = 4 for the convolution and its input gradient,
    /// 2 for the weight gradient.
    #[cfg(target_arch = "x86_64")]
    fn winograd<T: Scalar, const M: usize>(&self) -> Option<Winograd<M>> {
        self.same_3x3::<T>().map(Winograd).filter(Winograd::worthwhile)
    }

    /// The direct kernel (`conv_direct`), where it applies and the images are large enough
    /// (`Same3x3::worthwhile`).
    #[cfg(target_arch = "x86_64")]
    fn direct<T: Scalar>(&self) -> Option<Same3x3> {
        self.same_3x3::<T>().filter(Same3x3::worthwhile)
    }

    /// Column stride 2 without dilation on input rows of at most 32 pixels, in f32 on an
    /// AVX-512 machine: `im2col` permutes each kernel column's pixels out of the even or odd
    /// half of their input row (`halved_patches`) instead of gathering them. AVX2 machines
    /// and wider rows keep the gathers.
    #[cfg(target_arch = "x86_64")]
    fn halved_columns<T: Scalar>(&self) -> bool {
        let applies = T::dtype() == DType::F32 && self.stride[1] == 2 && self.dilation[1] == 1 && self.width <= 32 && self.out[1] <= 16;
        applies && Isa::detect() == Some(Isa::Avx512)
    }

    /// Whether `im2col` gathers through tables: strided columns that `halved_patches` does not copy.
    fn gathers<T: Scalar>(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.halved_columns::<T>() {
            return false;
        }
        self.stride[1] != 1
    }

    /// Whole images per task for strided convolutions (those with gather tables) of small
    /// images, 1 elsewhere. Their per-image gemms are short (one column per output pixel:
    /// 49 for `dcgan`'s 7×7 outputs), so several images' column matrices side by side make
    /// one longer gemm, the weights packed once for all of them.
    fn images_per_task<T>(&self) -> usize {
        let image_col = self.col_rows() * self.out_pixels() * core::mem::size_of::<T>();
        if self.stride[1] == 1 || self.groups != 1 || image_col == 0 || self.tile_rows::<T>() < self.out[0] {
            return 1;
        }
        // Keep several tasks per thread, and the gather's indices inside i32.
        let by_threads = self.batch / (2 * threads());
        let by_index = (i32::MAX as usize).saturating_sub(self.image_len()) / self.image_len().max(1) + 1;
        (IMAGES_COLUMN_BYTES / image_col).min(by_threads).min(by_index).clamp(1, MAX_IMAGES_PER_TASK)
    }

    /// Kernel 4, stride 2, padding 1 both ways, halving the image exactly (DCGAN's down- and
    /// up-sampling layers), f32: `col2im_halves` applies.
    #[cfg(target_arch = "x86_64")]
    fn halves<T: Scalar>(&self) -> bool {
        T::dtype() == DType::F32
            && self.kernel == [4, 4]
            && self.stride == [2, 2]
            && self.padding == [1, 1]
            && self.dilation == [1, 1]
            && self.groups == 1
            && [self.height, self.width] == [2 * self.out[0], 2 * self.out[1]]
    }

    /// Output rows per tile, so that a tile's column matrix stays under `COLUMN_BYTES`.
    fn tile_rows<T>(&self) -> usize {
        let row_bytes = self.col_rows() * self.out[1] * core::mem::size_of::<T>();
        (COLUMN_BYTES / row_bytes.max(1)).clamp(1, self.out[0].max(1))
    }

    /// The output columns whose input column `ow*stride + kw*dilation - padding` is inside the image.
    fn valid_out_cols(&self, kw: usize) -> (usize, usize) {
        let offset = kw * self.dilation[1];
        let (stride, padding) = (self.stride[1], self.padding[1]);
        let lo = if padding > offset {
            (padding - offset).div_ceil(stride)
        } else {
            0
        };
        let hi = if self.width + padding > offset {
            ((self.width + padding - offset - 1) / stride + 1).min(self.out[1])
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Stride 1 and output rows as wide as the input's ("same" padding): each row of the
    /// column matrix is then its channel's plane shifted by a constant, one contiguous copy
    /// per tile instead of one per output row.
    fn shifts_planes(&self) -> bool {
        self.stride == [1, 1] && self.out[1] == self.width
    }

    /// For `shifts_planes`: where the column-matrix rows of kernel position `position`
    /// (`kh · kernel_w + kw`) of the tile `rows` read their channel's plane. `None` when they
    /// read only padding; else the tile's valid output rows `top..bottom`, the valid output
    /// columns `lo..hi`, the tile positions `first..last` spanning them and the plane position
    /// of `first`.
    fn plane_shift(&self, position: usize, rows: (usize, usize)) -> Option<PlaneShift> {
        let (kh, kw) = (position / self.kernel[1], position % self.kernel[1]);
        let (lo, hi) = self.valid_out_cols(kw);
        let offset = kh * self.dilation[0];
        let top = self.padding[0].saturating_sub(offset).clamp(rows.0, rows.1);
        let bottom = (self.height + self.padding[0]).saturating_sub(offset).clamp(rows.0, rows.1);
        if lo == hi || top >= bottom {
            return None;
        }
        let width = self.width;
        let (first, last) = ((top - rows.0) * width + lo, (bottom - 1 - rows.0) * width + hi);
        // Output (oh, ow) reads (oh + offset - padding, ow + kw·dilation - padding); at `first`
        // both are inside the image.
        let source = (top + offset - self.padding[0]) * width + lo + kw * self.dilation[1] - self.padding[1];
        Some(PlaneShift { top, bottom, lo, hi, first, last, source })
    }

    /// The input row that output row `oh` reads at kernel row `kh`, if inside the image.
    fn input_row(&self, oh: usize, kh: usize) -> Option<usize> {
        let row = (oh * self.stride[0] + kh * self.dilation[0]) as isize - self.padding[0] as isize;
        (row >= 0 && row < self.height as isize).then_some(row as usize)
    }
}

/// See `Geometry::plane_shift`.
struct PlaneShift {
    top: usize,
    bottom: usize,
    lo: usize,
    hi: usize,
    first: usize,
    last: usize,
    source: usize,
}

impl PlaneShift {
    /// Zeroes the tile positions of valid rows outside `lo..hi`, where a contiguous copy of
    /// the plane wraps into the neighbouring row (a column at a time: a handful of elements
    /// per row, not worth a `memset` call each).
    fn zero_wrapped<T: Scalar>(&self, tile: &mut [T], rows: (usize, usize), width: usize) {
        let valid_rows = (self.top - rows.0) * width..(self.bottom - rows.0) * width;
        for column in (0..self.lo).chain(self.hi..width) {
            for at in valid_rows.clone().skip(column).step_by(width) {
                tile[at] = T::zero();
            }
        }
    }
}

/// Where each column of the column matrix reads in its channel's plane, kernel position by
/// kernel position (`[kernel_h · kernel_w, (rows.end - rows.start) · out_width]`); `u32::MAX`
/// where the kernel overhangs. For strided convolutions, whose rows are gathers: one lookup per
/// element instead of the geometry worked out again for every short row of every channel.
fn gather_table(g: &Geometry, rows: (usize, usize)) -> Vec<u32> {
    let mut table = Vec::with_capacity(g.kernel[0] * g.kernel[1] * (rows.1 - rows.0) * g.out[1]);
    for kh in 0..g.kernel[0] {
        for kw in 0..g.kernel[1] {
            for oh in rows.0..rows.1 {
                let ih = g.input_row(oh, kh);
                for ow in 0..g.out[1] {
                    let iw = (ow * g.stride[1] + kw * g.dilation[1]).checked_sub(g.padding[1]);
                    table.push(match (ih, iw) {
                        (Some(ih), Some(iw)) if iw < g.width => (ih * g.width + iw) as u32,
                        _ => u32::MAX,
                    });
                }
            }
        }
    }
    table
}

/// The gather tables of an operation's tiles of `tile_rows` output rows, built once for all
/// its images; none for unit column strides (their rows are contiguous copies) or planes
/// too large for 32-bit indices.
fn gather_tables(g: &Geometry, tile_rows: usize) -> Vec<Vec<u32>> {
    if g.stride[1] == 1 || g.height * g.width >= u32::MAX as usize {
        return Vec::new();
    }
    (0..g.out[0]).step_by(tile_rows).map(|row| gather_table(g, (row, (row + tile_rows).min(g.out[0])))).collect()
}

/// [`gather_table`] for `images` whole consecutive images side by side: row `kernel
/// position` holds image 0's output pixels, then image 1's, ..., each read `image_len`
/// further on than the one before (the plane of one channel of the first image begins a
/// span over the same channel of the others).
fn images_table(g: &Geometry, images: usize) -> Vec<u32> {
    let one = gather_table(g, (0, g.out[0]));
    let pixels = g.out_pixels();
    let mut table = Vec::with_capacity(one.len() * images);
    for position in one.chunks_exact(pixels) {
        for image in 0..images {
            let offset = (image * g.image_len()) as u32;
            table.extend(position.iter().map(|&at| if at == u32::MAX { at } else { at + offset }));
        }
    }
    table
}

/// The span from channel `c`'s plane in the first of `images` images to its plane in the last.
fn channel_span(g: &Geometry, c: usize, images: usize) -> core::ops::Range<usize> {
    let plane_len = g.height * g.width;
    c * plane_len..(images - 1) * g.image_len() + (c + 1) * plane_len
}

/// `im2col` of `images` whole images (from the first of `x`) side by side:
/// `col` is `[col_rows, images · out_pixels]`, `table` their `images_table`.
fn im2col_images<T: Scalar>(g: &Geometry, x: &[T], images: usize, col: &mut [T], table: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    if g.halved_columns::<T>() {
        let (n, block) = (images * g.out_pixels(), g.kernel[0] * g.kernel[1] * images * g.out_pixels());
        let (x, col, picks) = (as_f32(x), as_f32_mut(col), HalfPick::all(g));
        let plane_len = g.height * g.width;
        for c in 0..g.channels_in {
            for image in 0..images {
                let plane = &x[image * g.image_len() + c * plane_len..][..plane_len];
                // SAFETY: `halved_columns` holds: the CPU has AVX-512F.
                unsafe { halved_patches(g, &picks, plane, (0, g.out[0]), &mut col[c * block + image * g.out_pixels()..], n) };
            }
        }
        return;
    }
    let row = table.len();
    for c in 0..g.channels_in {
        gather(&x[channel_span(g, c, images)], table, &mut col[c * row..][..row]);
    }
}

/// `col2im` of `images` whole images side by side (the adjoint of `im2col_images`).
fn col2im_images<T: Scalar>(g: &Geometry, col: &[T], images: usize, dx: &mut [T], table: &[u32]) {
    let row = table.len();
    for c in 0..g.channels_in {
        scatter_add(&col[c * row..][..row], table, &mut dx[channel_span(g, c, images)]);
    }
}

/// `col2im_images` for `Geometry::halves`, whole rows of the image at a time with AVX-512 or
/// AVX2 instead of a scalar scatter-add, and each row written once: its bias (or zero), its
/// kernel rows' sums and, with `relu`, the activation (`Epilogue`'s), so that no pass sets the
/// planes before and none activates them after. Pixel `(y, x)` takes kernel row `kh` of
/// output row `oh` where `y = 2·oh - 1 + kh`: an even row takes (kh 1, oh y/2) and (kh 3, oh
/// y/2 - 1), an odd one (kh 2, oh y/2) and (kh 0, oh y/2 + 1). Columns the same way: along one
/// (kh, oh), the even pixels `2q` sum kernel columns 1 (at q) and 3 (at q - 1), the odd pixels
/// `2q + 1` columns 2 (at q) and 0 (at q + 1); eight of each are added, interleaved, onto 16
/// pixels.
///
/// `col` is `[in channels · 16, images · out pixels]`, `dx` holds `images` images of `g`.
#[cfg(target_arch = "x86_64")]
fn col2im_halves(isa: Isa, g: &Geometry, col: &[f32], images: usize, dx: &mut [core::mem::MaybeUninit<f32>], bias: Option<&[f32]>, relu: bool) {
    let row_len = images * g.out_pixels();
    assert!(col.len() >= g.channels_in * 16 * row_len && dx.len() >= images * g.image_len());
    assert!(bias.is_none_or(|bias| bias.len() >= g.channels_in));
    let dx = dx.as_mut_ptr().cast::<f32>();
    match isa {
        // SAFETY: the CPU has the instruction set (the caller's `Isa::detect`); the shapes are asserted above.
        Isa::Avx512 => unsafe { col2im_halves_avx512(g, col, images, dx, bias, relu) },
        // SAFETY: as above.
        Isa::Avx2 => unsafe { col2im_halves_avx2(g, col, images, dx, bias, relu) },
    }
}

/// Calls `write_row(channel, first, second, out)` for each image row (`out`: its `2·g.out[1]`
/// pixels) with the one or two kernel rows that add onto it, in the order the sums go: each
/// the `g.out[1]` values of its kernel column 0, those of column `kw` `kw · row_len` further
/// on (`row_len = images · out pixels`), for `col2im_halves`.
///
/// # Safety
/// `col` and `dx` hold the shapes `col2im_halves` asserts; `write_row` stays in its row.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn for_each_halves_row(g: &Geometry, col: &[f32], images: usize, dx: *mut f32, mut write_row: impl FnMut(usize, *const f32, Option<*const f32>, *mut f32)) {
    let [rows, cols] = g.out;
    let (pixels, plane_len) = (rows * cols, g.height * g.width);
    let row_len = images * pixels;
    for c in 0..g.channels_in {
        for image in 0..images {
            let plane = image * g.image_len() + c * plane_len;
            let tap = |kh: usize, oh: usize| col.as_ptr().wrapping_add((c * 16 + kh * 4) * row_len + image * pixels + oh * cols);
            for y in 0..g.height {
                let m = y / 2;
                let (first, second) = if y % 2 == 0 {
                    (tap(1, m), m.checked_sub(1).map(|oh| tap(3, oh)))
                } else {
                    (tap(2, m), Some(m + 1).filter(|&oh| oh < rows).map(|oh| tap(0, oh)))
                };
                write_row(c, first, second, dx.wrapping_add(plane + y * g.width));
            }
        }
    }
}

/// [`col2im_halves`] with AVX-512.
///
/// # Safety
/// AVX-512F is available; the shapes are `col2im_halves`'.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn col2im_halves_avx512(g: &Geometry, col: &[f32], images: usize, dx: *mut f32, bias: Option<&[f32]>, relu: bool) {
    use super::lanes::mask16 as lanes;
    use core::arch::x86_64::*;
    let cols = g.out[1];
    let interleave = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    // SAFETY: every load and store is masked to the lanes inside its kernel row's `cols`
    // values (or the image row's `2·cols` pixels); masked-off lanes do not fault.
    unsafe {
        let row_len = images * g.out_pixels();
        // A kernel row's sums for output columns q.., interleaved onto pixels 2q...
        let pairs = |tap: *const f32, q: usize, count: usize| {
            let column = |kw: usize| tap.wrapping_add(kw * row_len + q);
            let r1 = _mm512_maskz_loadu_ps(lanes(count), column(1));
            let r2 = _mm512_maskz_loadu_ps(lanes(count), column(2));
            // Kernel column 3 one output column back: nothing left of q = 0.
            let r3 = _mm512_maskz_loadu_ps(lanes(count) & if q == 0 { !1 } else { !0 }, column(3).wrapping_sub(1));
            // Kernel column 0 one output column on: nothing right of the last.
            let r0 = _mm512_maskz_loadu_ps(lanes(count.min(cols - q - 1)), column(0).wrapping_add(1));
            _mm512_permutex2var_ps(_mm512_add_ps(r1, r3), interleave, _mm512_add_ps(r2, r0))
        };
        for_each_halves_row(g, col, images, dx, |c, first, second, out| {
            let start = _mm512_set1_ps(bias.map_or(0.0, |bias| bias[c]));
            for q in (0..cols).step_by(8) {
                let count = (cols - q).min(8);
                let mut sum = _mm512_add_ps(start, pairs(first, q, count));
                if let Some(second) = second {
                    sum = _mm512_add_ps(sum, pairs(second, q, count));
                }
                if relu {
                    // Epilogue's `if v <= 0 { 0 } else { v }`: a NaN stays.
                    sum = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLE_UQ>(sum, _mm512_setzero_ps()), sum);
                }
                _mm512_mask_storeu_ps(out.add(2 * q), lanes(2 * count), sum);
            }
        })
    }
}

/// [`col2im_halves`] with AVX2: the same eight output columns a step, interleaved by
/// unpacks and a swap of 128-bit halves; masked loads only at a row's ends.
///
/// # Safety
/// AVX2 is available; the shapes are `col2im_halves`'.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn col2im_halves_avx2(g: &Geometry, col: &[f32], images: usize, dx: *mut f32, bias: Option<&[f32]>, relu: bool) {
    use super::lanes::{load8 as load, mask8 as mask};
    use core::arch::x86_64::*;
    let cols = g.out[1];
    // A row's last pixels go through a buffer: AVX2's masked store (`vmaskmovps`) is
    // microcoded and slow on AMD's cores.
    let store = |at: *mut f32, count: usize, value: __m256| unsafe {
        if count >= 8 {
            _mm256_storeu_ps(at, value);
        } else {
            let mut staged = [0.0f32; 8];
            _mm256_storeu_ps(staged.as_mut_ptr(), value);
            core::ptr::copy_nonoverlapping(staged.as_ptr(), at, count);
        }
    };
    let activated = |sum: __m256| {
        // Epilogue's `if v <= 0 { 0 } else { v }`: a NaN stays.
        if relu { _mm256_and_ps(sum, _mm256_cmp_ps::<_CMP_NLE_UQ>(sum, _mm256_setzero_ps())) } else { sum }
    };
    // SAFETY: every load and store is masked to the lanes inside its kernel row's `cols`
    // values (or the image row's `2·cols` pixels).
    unsafe {
        let row_len = images * g.out_pixels();
        // A kernel row's sums for output columns q.., interleaved: pixels 2q..2q + 8, then 2q + 8...
        let pairs = |tap: *const f32, q: usize, count: usize| {
            let column = |kw: usize| tap.wrapping_add(kw * row_len + q);
            let (r1, r2) = (load(column(1), count), load(column(2), count));
            // Kernel column 3 one output column back: nothing left of q = 0.
            let r3 = if q == 0 {
                let past_first = _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1);
                _mm256_maskload_ps(column(3).wrapping_sub(1), _mm256_and_si256(mask(count), past_first))
            } else {
                load(column(3).wrapping_sub(1), count)
            };
            // Kernel column 0 one output column on: nothing right of the last.
            let r0 = load(column(0).wrapping_add(1), count.min(cols - q - 1));
            let (even, odd) = (_mm256_add_ps(r1, r3), _mm256_add_ps(r2, r0));
            // Pairs 0, 1, 4, 5 and 2, 3, 6, 7; then the halves in order.
            let (low, high) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
            (_mm256_permute2f128_ps::<0x20>(low, high), _mm256_permute2f128_ps::<0x31>(low, high))
        };
        for_each_halves_row(g, col, images, dx, |c, first, second, out| {
            let start = _mm256_set1_ps(bias.map_or(0.0, |bias| bias[c]));
            for q in (0..cols).step_by(8) {
                let count = (cols - q).min(8);
                let (a, b) = pairs(first, q, count);
                let (mut low, mut high) = (_mm256_add_ps(start, a), _mm256_add_ps(start, b));
                if let Some(second) = second {
                    let (a, b) = pairs(second, q, count);
                    (low, high) = (_mm256_add_ps(low, a), _mm256_add_ps(high, b));
                }
                let at = out.add(2 * q);
                store(at, 2 * count, activated(low));
                if count > 4 {
                    store(at.add(8), 2 * count - 8, activated(high));
                }
            }
        })
    }
}

/// `col[i] = plane[table[i]]`, zero where `table[i]` is past the plane (`u32::MAX` where the
/// kernel overhangs).
fn gather<T: Scalar>(plane: &[T], table: &[u32], col: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if T::dtype() == DType::F32 && plane.len() <= i32::MAX as usize {
        let (plane, col) = (bytemuck::cast_slice(plane), bytemuck::cast_slice_mut(col));
        match Isa::detect() {
            // SAFETY: the CPU has the instruction set (`Isa::detect`); the plane's indices fit in i32.
            Some(Isa::Avx512) => return unsafe { gather_avx512(plane, table, col) },
            // SAFETY: as above.
            Some(Isa::Avx2) => return unsafe { gather_avx2(plane, table, col) },
            None => {}
        }
    }
    for (out, &at) in col.iter_mut().zip(table) {
        *out = plane.get(at as usize).copied().unwrap_or(T::zero());
    }
}

/// The adjoint of [`gather`]: `plane[table[i]] += col[i]`, nothing where `table[i]` is past
/// the plane. Scalar: with AVX-512 gathers and scatters (targets are distinct within a kernel
/// position) it took more of dcgan's step (one thread: 9% against 8%).
fn scatter_add<T: Scalar>(col: &[T], table: &[u32], plane: &mut [T]) {
    for (&value, &at) in col.iter().zip(table) {
        if let Some(target) = plane.get_mut(at as usize) {
            *target = *target + value;
        }
    }
}

/// [`gather`] with AVX-512 gathers, 16 pixels at a time (the scalar loop's bounds check per
/// pixel was most of im2col's time at stride 2), where `halved_patches` does not apply.
///
/// # Safety
/// AVX-512F is available; `plane.len() ≤ i32::MAX`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_avx512(plane: &[f32], table: &[u32], col: &mut [f32]) {
    use core::arch::x86_64::*;
    let (n, len) = (col.len().min(table.len()), _mm512_set1_epi32(plane.len() as i32));
    for at in (0..n).step_by(16) {
        let lanes: __mmask16 = if n - at >= 16 { 0xffff } else { (1u16 << (n - at)) - 1 };
        // SAFETY: the masked load and store touch only lanes below `n` from `at`; the gather
        // reads only lanes whose index is inside the plane (an unsigned compare: the overhang's
        // u32::MAX is outside).
        unsafe {
            let indices = _mm512_maskz_loadu_epi32(lanes, table.as_ptr().add(at).cast());
            let inside = _mm512_mask_cmplt_epu32_mask(lanes, indices, len);
            let values = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), inside, indices, plane.as_ptr());
            _mm512_mask_storeu_ps(col.as_mut_ptr().add(at), lanes, values);
        }
    }
}

/// [`gather`] with AVX2 gathers, 8 pixels at a time (the last few as the scalar loop).
///
/// # Safety
/// AVX2 is available; `plane.len() ≤ i32::MAX`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_avx2(plane: &[f32], table: &[u32], col: &mut [f32]) {
    use core::arch::x86_64::*;
    let (n, len) = (col.len().min(table.len()), _mm256_set1_epi32(plane.len() as i32));
    let whole = n - n % 8;
    for at in (0..whole).step_by(8) {
        // SAFETY: lanes `at..at + 8` are below `n`; the gather reads only lanes whose index is
        // inside the plane (0 ≤ index < len as i32: the overhang's u32::MAX reads as -1).
        unsafe {
            let indices = _mm256_loadu_si256(table.as_ptr().add(at).cast());
            let inside = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), indices), _mm256_cmpgt_epi32(len, indices));
            let values = _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), plane.as_ptr(), indices, _mm256_castsi256_ps(inside));
            _mm256_storeu_ps(col.as_mut_ptr().add(at), values);
        }
    }
    for (out, &at) in col[whole..n].iter_mut().zip(&table[whole..n]) {
        *out = plane.get(at as usize).copied().unwrap_or(0.0);
    }
}

/// Where kernel column `kw`'s run of output pixels comes from in `halved_patches`: the row's
/// odd or even half, the lane of it each output lane takes, and which lanes are inside the
/// row (the others read padding: zero).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct HalfPick {
    odd: bool,
    index: [i32; 16],
    inside: u16,
}

#[cfg(target_arch = "x86_64")]
impl HalfPick {
    /// One per kernel column of `g` (`Geometry::halved_columns`).
    fn all(g: &Geometry) -> Vec<HalfPick> {
        let (width, out_wide) = (g.width, g.out[1]);
        (0..g.kernel[1])
            .map(|kw| {
                let column = kw as isize - g.padding[1] as isize;
                let (odd, shift) = (column.rem_euclid(2) == 1, column.div_euclid(2));
                let half_len = if odd { width / 2 } else { width.div_ceil(2) } as isize;
                let (mut index, mut inside) = ([0i32; 16], 0u16);
                for (ow, index) in index.iter_mut().enumerate().take(out_wide) {
                    let at = ow as isize + shift;
                    if (0..half_len).contains(&at) {
                        (*index, inside) = (at as i32, inside | 1 << ow);
                    }
                }
                HalfPick { odd, index, inside }
            })
            .collect()
    }
}

/// The patches of one channel's `plane` for output rows `rows` where the columns have stride
/// 2 (`Geometry::halved_columns`): kernel position `(kh, kw)`'s row of pixels at `col[(kh ·
/// kernel width + kw) · pitch ..]`, `out[1]` per output row. Output column `ow` of kernel
/// column `kw` reads input column `2·ow + kw − padding`: the row's even half at `ow + (kw −
/// padding)/2` where `kw − padding` is even, its odd half at `ow + (kw − padding − 1)/2`
/// where it is odd. So each input row (at most 32 pixels: two vectors) is split into its
/// halves in registers, and each kernel column's run is one permute of a half.
///
/// # Safety
/// AVX-512F is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn halved_patches(g: &Geometry, picks: &[HalfPick], plane: &[f32], rows: (usize, usize), col: &mut [f32], pitch: usize) {
    use core::arch::x86_64::*;
    use super::lanes::mask16;
    let ([kernel_high, kernel_wide], width, out_wide) = (g.kernel, g.width, g.out[1]);
    let run = (rows.1 - rows.0) * out_wide;
    assert!(width <= 32 && out_wide <= 16 && plane.len() >= g.height * width && picks.len() == kernel_wide);
    assert!(col.len() >= (kernel_high * kernel_wide - 1) * pitch + run && run <= pitch);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let store = mask16(out_wide);
    for kh in 0..kernel_high {
        for oh in rows.0..rows.1 {
            let at = (oh - rows.0) * out_wide;
            let halves = g.input_row(oh, kh).map(|ih| {
                let row = &plane[ih * width..][..width];
                // SAFETY: the loads are masked to the row.
                let (low, high) = unsafe { (_mm512_maskz_loadu_ps(mask16(width), row.as_ptr()), _mm512_maskz_loadu_ps(mask16(width.saturating_sub(16)), row.as_ptr().add(width.min(16)))) };
                (_mm512_permutex2var_ps(low, evens, high), _mm512_permutex2var_ps(low, odds, high))
            });
            for (kw, &HalfPick { odd, index, inside }) in picks.iter().enumerate() {
                // SAFETY: AVX-512F is available (the caller's contract).
                let index = unsafe { _mm512_loadu_si512(index.as_ptr().cast()) };
                let values = match halves {
                    Some((even_half, odd_half)) => _mm512_maskz_permutexvar_ps(inside, index, if odd { odd_half } else { even_half }),
                    // The kernel row reads padding.
                    None => _mm512_setzero_ps(),
                };
                // SAFETY: `at + out_wide ≤ run ≤ pitch` (asserted above), inside `col`.
                unsafe { _mm512_mask_storeu_ps(col.as_mut_ptr().add((kh * kernel_wide + kw) * pitch + at), store, values) };
            }
        }
    }
}

/// Fills `col` (`[col_rows, (rows.end - rows.start) * out_width]`) with the patches of
/// one group of one image for output rows `rows`; zero where the kernel overhangs.
/// `table`: the tile's gather table, where `gather_tables` makes one.
fn im2col<T: Scalar>(g: &Geometry, image: &[T], group: usize, rows: (usize, usize), col: &mut [T], table: Option<&[u32]>) {
    let width = (rows.1 - rows.0) * g.out[1];
    let plane_len = g.height * g.width;
    let kernel = g.kernel[0] * g.kernel[1];
    #[cfg(target_arch = "x86_64")]
    if g.halved_columns::<T>() {
        let (image, col, picks) = (as_f32(image), as_f32_mut(col), HalfPick::all(g));
        for c in 0..g.in_per_group() {
            let plane = &image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
            // SAFETY: `halved_columns` holds: the CPU has AVX-512F.
            unsafe { halved_patches(g, &picks, plane, rows, &mut col[c * kernel * width..], width) };
        }
        return;
    }
    if let Some(table) = table {
        for c in 0..g.in_per_group() {
            let plane = &image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
            gather(plane, table, &mut col[c * kernel * width..][..kernel * width]);
        }
        return;
    }
    if g.shifts_planes() {
        for (position, shift) in (0..kernel).map(|position| g.plane_shift(position, rows)).enumerate() {
            for c in 0..g.in_per_group() {
                let row = &mut col[(c * kernel + position) * width..][..width];
                let Some(shift) = &shift else {
                    row.fill(T::zero());
                    continue;
                };
                let plane = &image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
                row[..shift.first].fill(T::zero());
                row[shift.last..].fill(T::zero());
                row[shift.first..shift.last].copy_from_slice(&plane[shift.source..][..shift.last - shift.first]);
                shift.zero_wrapped(row, rows, g.width);
            }
        }
        return;
    }
    for c in 0..g.in_per_group() {
        let plane = &image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
        for kh in 0..g.kernel[0] {
            for kw in 0..g.kernel[1] {
                let row = (c * g.kernel[0] + kh) * g.kernel[1] + kw;
                let row = &mut col[row * width..][..width];
                let (lo, hi) = g.valid_out_cols(kw);
                let shift = kw * g.dilation[1];
                for (oh, out) in (rows.0..rows.1).zip(row.chunks_exact_mut(g.out[1])) {
                    let Some(ih) = g.input_row(oh, kh) else {
                        out.fill(T::zero());
                        continue;
                    };
                    let src = &plane[ih * g.width..][..g.width];
                    out[..lo].fill(T::zero());
                    out[hi..].fill(T::zero());
                    if lo == hi {
                        // This kernel column reads only padding (images narrower than the kernel).
                    } else if g.stride[1] == 1 {
                        let start = lo + shift - g.padding[1];
                        out[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                    } else {
                        for (ow, value) in out[lo..hi].iter_mut().enumerate() {
                            *value = src[(lo + ow) * g.stride[1] + shift - g.padding[1]];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds the column matrix back onto the image (and may overwrite
/// the column matrix's entries that fall in the padding).
fn col2im<T: Scalar>(g: &Geometry, col: &mut [T], group: usize, rows: (usize, usize), image: &mut [T], table: Option<&[u32]>) {
    let width = (rows.1 - rows.0) * g.out[1];
    let plane_len = g.height * g.width;
    if let Some(table) = table {
        let kernel = g.kernel[0] * g.kernel[1];
        for c in 0..g.in_per_group() {
            let plane = &mut image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
            scatter_add(&col[c * kernel * width..][..kernel * width], table, plane);
        }
        return;
    }
    if g.shifts_planes() {
        let kernel = g.kernel[0] * g.kernel[1];
        for position in 0..kernel {
            let Some(shift) = g.plane_shift(position, rows) else {
                continue;
            };
            for c in 0..g.in_per_group() {
                let row = &mut col[(c * kernel + position) * width..][..width];
                let plane = &mut image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
                // Zero where the copy wraps (x + 0 = x up to a zero's sign), then one contiguous add.
                shift.zero_wrapped(row, rows, g.width);
                let dst = &mut plane[shift.source..][..shift.last - shift.first];
                for (d, s) in dst.iter_mut().zip(&row[shift.first..shift.last]) {
                    *d = *d + *s;
                }
            }
        }
        return;
    }
    for c in 0..g.in_per_group() {
        let plane = &mut image[(group * g.in_per_group() + c) * plane_len..][..plane_len];
        for kh in 0..g.kernel[0] {
            for kw in 0..g.kernel[1] {
                let row = (c * g.kernel[0] + kh) * g.kernel[1] + kw;
                let row = &col[row * width..][..width];
                let (lo, hi) = g.valid_out_cols(kw);
                let shift = kw * g.dilation[1];
                for (oh, src) in (rows.0..rows.1).zip(row.chunks_exact(g.out[1])) {
                    let Some(ih) = g.input_row(oh, kh) else {
                        continue;
                    };
                    let dst = &mut plane[ih * g.width..][..g.width];
                    if lo == hi {
                        // Only padding under this kernel column.
                    } else if g.stride[1] == 1 {
                        let start = lo + shift - g.padding[1];
                        for (d, s) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d = *d + *s;
                        }
                    } else {
                        for (ow, s) in src[lo..hi].iter().enumerate() {
                            let d = &mut dst[(lo + ow) * g.stride[1] + shift - g.padding[1]];
                            *d = *d + *s;
                        }
                    }
                }
            }
        }
    }
}

/// The gemm's own threading when there are fewer images than threads.
fn inner_parallelism(tasks: usize) -> gemm::Parallelism {
    #[cfg(feature = "rayon")]
    if tasks < threads() {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = tasks;
    gemm::Parallelism::None
}

/// The gather tables of `images_per_task` images and of the last task's fewer, if fewer.
struct ImageTables {
    per_task: usize,
    full: Vec<u32>,
    last: Vec<u32>,
}

impl ImageTables {
    /// The tables of `per_task` images and of the last task's, or none unless `needed` (the
    /// tasks' `table` then empty).
    fn new(g: &Geometry, per_task: usize, needed: bool) -> Self {
        let table = |images: usize| if needed && images > 0 { images_table(g, images) } else { Vec::new() };
        Self { per_task, full: table(per_task), last: table(g.batch % per_task) }
    }

    fn tasks(&self, g: &Geometry) -> usize {
        g.batch.div_ceil(self.per_task)
    }

    /// Task `task`'s first image, image count and table.
    fn task(&self, g: &Geometry, task: usize) -> (usize, usize, &[u32]) {
        let first = task * self.per_task;
        let images = self.per_task.min(g.batch - first);
        (first, images, if images == self.per_task { &self.full } else { &self.last })
    }
}

/// Copies `images` images' `[channels, pixels]` planes (from the first of `planes`) side by
/// side into `dst`, `[channels, images · pixels]`.
fn side_by_side<T: Scalar>(planes: &[T], channels: usize, pixels: usize, images: usize, dst: &mut [T]) {
    for c in 0..channels {
        for image in 0..images {
            let src = &planes[(image * channels + c) * pixels..][..pixels];
            dst[(c * images + image) * pixels..][..pixels].copy_from_slice(src);
        }
    }
}

/// `forward` for `images_per_task` > 1: `Y[co, images · P] = W · col`, then each image's
/// rows copied out (with the bias).
fn forward_images<T: Scalar>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>, epilogue: Epilogue<T>, per_task: usize) -> Vec<T> {
    let (k, p, co) = (g.col_rows(), g.out_pixels(), g.channels_out);
    let tables = ImageTables::new(g, per_task, g.gathers::<T>());
    let mut y = Vec::<T>::with_capacity(g.batch * co * p);
    let y_ptr = SharedMut(y.as_mut_ptr());
    for_each_task_overwriting(tables.tasks(g), (k + co) * per_task * p, |task, scratch| {
        let (first, images, table) = tables.task(g, task);
        let n = images * p;
        let (col, out) = scratch.split_at_mut(k * n);
        im2col_images(g, &x[first * g.image_len()..], images, col, table);
        // SAFETY: w is [co, k], col [k, n] and out [co, n], all row-major.
        unsafe { gemm([co, n, k], out.as_mut_ptr(), n, false, (w.as_ptr(), 1, k), (col.as_ptr(), 1, n), gemm::Parallelism::None) };
        let y_ptr = y_ptr;
        // SAFETY: this task's images of y, each element written below.
        let mine = unsafe { y_ptr.uninit(first * co * p..(first + images) * co * p) };
        for c in 0..co {
            let b = bias.map_or(T::zero(), |bias| bias[c]);
            for image in 0..images {
                let src = &out[(c * images + image) * p..][..p];
                for (d, &v) in mine[(image * co + c) * p..][..p].iter_mut().zip(src) {
                    d.write(v + b);
                }
                if !epilogue.is_none() {
                    let start = ((first + image) * co + c) * p;
                    // SAFETY: the plane written just above, by this task alone.
                    epilogue.finish(unsafe { y_ptr.slice(start..start + p) }, start);
                }
            }
        }
    });
    // Each task wrote every element of its images.
    unsafe { y.set_len(g.batch * co * p) };
    y
}

/// Sets whole images of an input gradient (`[images, channels_in, height, width]`, not yet
/// written) to their starting values: each channel plane its bias (a transposed convolution's),
/// or zero.
fn start_planes<T: Scalar>(g: &Geometry, images: &mut [core::mem::MaybeUninit<T>], bias: Option<&[T]>) {
    match bias {
        Some(bias) => images.chunks_exact_mut((g.height * g.width).max(1)).zip(bias.iter().cycle()).for_each(|(plane, &b)| {
            plane.iter_mut().for_each(|v| _ = v.write(b));
        }),
        None => images.iter_mut().for_each(|v| _ = v.write(T::zero())),
    }
}

/// `input_grad` for `images_per_task` > 1: `col = Wᵀ · dY[co, images · P]`, then one
/// `col2im` for all the task's images.
fn input_grad_images<T: Scalar>(g: &Geometry, w: &[T], dy: &[T], bias: Option<&[T]>, relu: bool, per_task: usize) -> Vec<T> {
    let (k, p, co) = (g.col_rows(), g.out_pixels(), g.channels_out);
    let tables = ImageTables::new(g, per_task, true);
    let wt = WeightsT::new(g, w, tables.tasks(g));
    let mut dx = Vec::<T>::with_capacity(g.batch * g.image_len());
    let dx_ptr = SharedMut(dx.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let halves = if g.halves::<T>() { Isa::detect() } else { None };
    for_each_task_overwriting(tables.tasks(g), (k + co) * per_task * p, |task, scratch| {
        let (first, images, table) = tables.task(g, task);
        let n = images * p;
        let (col, dy_side) = scratch.split_at_mut(k * n);
        side_by_side(&dy[first * co * p..], co, p, images, dy_side);
        // SAFETY: wt is [k, co] (one group), dy_side [co, n] and col [k, n].
        unsafe { gemm([k, n, co], col.as_mut_ptr(), n, false, wt.group(0), (dy_side.as_ptr(), 1, n), gemm::Parallelism::None) };
        let dx_ptr = dx_ptr;
        let range = first * g.image_len()..(first + images) * g.image_len();
        // SAFETY: this task's images of dx.
        let mine = unsafe { dx_ptr.uninit(range.clone()) };
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = halves {
            // SAFETY: `halves` holds for f32 only, so T is f32.
            let mine = unsafe { core::slice::from_raw_parts_mut(mine.as_mut_ptr().cast(), mine.len()) };
            return col2im_halves(isa, g, as_f32(col), images, mine, bias.map(as_f32), relu);
        }
        start_planes(g, mine, bias);
        // SAFETY: as above; each element was set by `start_planes`.
        let mine = unsafe { dx_ptr.slice(range) };
        col2im_images(g, col, images, mine, table);
        Epilogue { residual: None, relu }.finish(mine, 0);
    });
    // Every image was set by its task.
    unsafe { dx.set_len(g.batch * g.image_len()) };
    dx
}

/// `Wᵀ` as the gemms of `Wᵀ · dY` read it, each group's `[k, out per group]`. gemm packs its
/// operand again in every call, reading it along the output channels: as given, that is a
/// stride of `k` (a 4 KiB step for `dcgan`'s 1,024), and the packing was 9% of `dcgan`'s
/// inference at batch 128. Transposed once per operation (`transposed_weights`) where several
/// gemms pack the weights; as given where one or two do: at batch 1 the transposition (and
/// its zeroed buffer) took 13% + 5% of `dcgan`'s inference, more than the packing it spares.
struct WeightsT<'a, T> {
    given: &'a [T],
    transposed: Option<Vec<T>>,
    k: usize,
    per_group: usize,
}

impl<'a, T: Scalar> WeightsT<'a, T> {
    fn new(g: &Geometry, w: &'a [T], gemms: usize) -> Self {
        let transposed = (gemms > 2).then(|| transposed_weights(g, w));
        Self { given: w, transposed, k: g.col_rows(), per_group: g.out_per_group() }
    }

    /// Group `group`'s `Wᵀ` as gemm's left operand: pointer, column stride, row stride.
    fn group(&self, group: usize) -> (*const T, usize, usize) {
        let start = group * self.per_group * self.k;
        match &self.transposed {
            Some(wt) => (wt[start..].as_ptr(), 1, self.per_group),
            None => (self.given[start..].as_ptr(), self.k, 1),
        }
    }
}

/// Each group's weights `[out per group, k]` transposed to `[k, out per group]` (see `WeightsT`).
fn transposed_weights<T: Scalar>(g: &Geometry, w: &[T]) -> Vec<T> {
    let (k, per_group) = (g.col_rows(), g.out_per_group());
    let mut wt = vec![T::zero(); w.len()];
    for (group, wt) in w.chunks_exact(per_group * k).zip(wt.chunks_exact_mut(per_group * k)) {
        // Eight channels at a time: eight rows read side by side, eight values written together.
        for channels in (0..per_group).step_by(8).map(|c| c..per_group.min(c + 8)) {
            for (i, out) in wt.chunks_exact_mut(per_group).enumerate() {
                for c in channels.clone() {
                    out[c] = group[c * k + i];
                }
            }
        }
    }
    wt
}

/// The weight gradient from the threads' partial sums (`partials`, one of `w_len` after another).
fn sum_shares<T: Scalar>(mut partials: Vec<T>, w_len: usize) -> Vec<T> {
    let (first, rest) = partials.split_at_mut(w_len);
    for partial in rest.chunks_exact(w_len) {
        for (a, b) in first.iter_mut().zip(partial) {
            *a = *a + *b;
        }
    }
    partials.truncate(w_len);
    partials
}

/// `weight_grad` for `images_per_task` > 1: each thread's share of the batch a task of
/// images at a time, `dW += dY[co, images · P] · colᵀ`.
fn weight_grad_images<T: Scalar>(g: &Geometry, x: &[T], dy: &[T], per_task: usize) -> Vec<T> {
    let (k, p, co) = (g.col_rows(), g.out_pixels(), g.channels_out);
    let tables = ImageTables::new(g, per_task, g.gathers::<T>());
    let tasks = tables.tasks(g);
    let shares = threads().min(tasks).max(1);
    let w_len = co * k;
    let mut partials = vec![T::zero(); shares * w_len];
    let partials_ptr = SharedMut(partials.as_mut_ptr());
    for_each_task_overwriting(shares, (k + co) * per_task * p, |share, scratch| {
        let partials_ptr = partials_ptr;
        // Each share owns one partial sum.
        let acc = unsafe { partials_ptr.slice(share * w_len..(share + 1) * w_len) };
        for task in share * tasks / shares..(share + 1) * tasks / shares {
            let (first, images, table) = tables.task(g, task);
            let n = images * p;
            let (col, dy_side) = scratch.split_at_mut(k * n);
            im2col_images(g, &x[first * g.image_len()..], images, col, table);
            side_by_side(&dy[first * co * p..], co, p, images, dy_side);
            // SAFETY: dy_side is [co, n], col [k, n] (read transposed) and acc [co, k].
            unsafe { gemm([co, k, n], acc.as_mut_ptr(), k, true, (dy_side.as_ptr(), 1, n), (col.as_ptr(), n, 1), gemm::Parallelism::None) };
        }
    });
    sum_shares(partials, w_len)
}

/// `Y_n[co, P] = W[co, K] · col(X_n)[K, P] (+ bias[co])`, then the `epilogue`, tiled over
/// output rows. The bias and the epilogue are applied by each task to the rows its gemm has
/// just written, still in cache: the bias as a pass over the whole output after the
/// convolution was 5% of `fashion-cnn`'s inference.
fn forward<T: Scalar>(g: &Geometry, x: &[T], w: &[T], bias: Option<&[T]>, epilogue: Epilogue<T>) -> Vec<T> {
    let (k, p) = (g.col_rows(), g.out_pixels());
    let out_len = g.channels_out * p;
    if k == 0 {
        let mut y = vec![T::zero(); g.batch * out_len];
        if let Some(bias) = bias {
            y.chunks_exact_mut(p.max(1)).zip(bias.iter().cycle()).for_each(|(plane, &b)| plane.fill(b));
        }
        epilogue.finish(&mut y, 0);
        return y;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(winograd) = g.winograd::<T, 4>() {
        return as_t(winograd.run(as_f32(x), as_f32(w), Weights::AsGiven, bias.map(as_f32), epilogue_as_f32(epilogue)));
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(direct) = g.direct::<T>() {
        return as_t(direct.run(as_f32(x), as_f32(w), Weights::AsGiven, bias.map(as_f32), epilogue_as_f32(epilogue)));
    }
    let per_task = g.images_per_task::<T>();
    if per_task > 1 {
        return forward_images(g, x, w, bias, epilogue, per_task);
    }
    // Not zeroed: the tasks' gemms overwrite every element (`set_len` below).
    let mut y = Vec::<T>::with_capacity(g.batch * out_len);
    // With fewer images than threads, split each image's rows among the threads.
    let tile_rows = if g.batch < threads() {
        g.out[0].div_ceil(threads().div_ceil(g.batch)).min(g.tile_rows::<T>())
    } else {
        g.tile_rows::<T>()
    }
    .max(1);
    let tiles = g.out[0].div_ceil(tile_rows);
    let tables = if g.gathers::<T>() { gather_tables(g, tile_rows) } else { Vec::new() };
    let y_ptr = SharedMut(y.as_mut_ptr());
    for_each_task_overwriting(g.batch * tiles * g.groups, k * tile_rows * g.out[1], |task, col| {
        let (b, rest) = (task / (tiles * g.groups), task % (tiles * g.groups));
        let (tile, group) = (rest / g.groups, rest % g.groups);
        let rows = (tile * tile_rows, ((tile + 1) * tile_rows).min(g.out[0]));
        let n = (rows.1 - rows.0) * g.out[1];
        im2col(g, &x[b * g.image_len()..][..g.image_len()], group, rows, col, tables.get(tile).map(Vec::as_slice));
        let w_group = &w[group * g.out_per_group() * k..];
        let y_ptr = y_ptr;
        // Each task writes its own rows of its own channels of its own image.
        unsafe {
            let dst = y_ptr
                .0
                .add(b * out_len + group * g.out_per_group() * p + rows.0 * g.out[1]);
            gemm(
                [g.out_per_group(), n, k],
                dst,
                p,
                false,
                (w_group.as_ptr(), 1, k),
                (col.as_ptr(), 1, n),
                gemm::Parallelism::None,
            );
        }
        if bias.is_some() || !epilogue.is_none() {
            for c in 0..g.out_per_group() {
                let channel = group * g.out_per_group() + c;
                let start = b * out_len + channel * p + rows.0 * g.out[1];
                // SAFETY: this task's rows of its channel, written by its gemm above.
                let written = unsafe { y_ptr.slice(start..start + n) };
                if let Some(bias) = bias {
                    let value = bias[channel];
                    written.iter_mut().for_each(|v| *v = *v + value);
                }
                epilogue.finish(written, start);
            }
        }
    });
    // The tasks cover every (image, tile, group), and each gemm wrote its whole block.
    unsafe { y.set_len(g.batch * out_len) };
    y
}

/// `dX_n = col2im(Wᵀ[K, co] · dY_n[co, P])`, one image per task.
///
/// With a `bias` (a transposed convolution's), each image's channel planes start from their
/// bias instead of zero; with `relu`, the result is activated as `Epilogue`'s (a transposed
/// convolution followed by ReLU at inference).
fn input_grad<T: Scalar>(g: &Geometry, w: &[T], dy: &[T], bias: Option<&[T]>, relu: bool) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if let Some(winograd) = g.winograd::<T, 4>() {
        let epilogue = Epilogue { residual: None, relu };
        return as_t(Winograd::<4>(winograd.0.adjoint()).run(as_f32(dy), as_f32(w), Weights::Adjoint, bias.map(as_f32), epilogue));
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(direct) = g.direct::<T>() {
        return as_t(direct.adjoint().run(as_f32(dy), as_f32(w), Weights::Adjoint, bias.map(as_f32), Epilogue { residual: None, relu }));
    }
    let per_task = g.images_per_task::<T>();
    if per_task > 1 {
        return input_grad_images(g, w, dy, bias, relu, per_task);
    }
    let (k, p) = (g.col_rows(), g.out_pixels());
    let tile_rows = g.tile_rows::<T>();
    let tables = gather_tables(g, tile_rows);
    let wt = WeightsT::new(g, w, g.batch * g.groups * g.out[0].div_ceil(tile_rows));
    // Zeroed image by image in the tasks (in parallel, and still in cache for col2im).
    let mut dx = Vec::<T>::with_capacity(g.batch * g.image_len());
    let dx_ptr = SharedMut(dx.as_mut_ptr());
    let parallelism = inner_parallelism(g.batch);
    for_each_task_overwriting(g.batch, k * tile_rows * g.out[1], |b, col: &mut [T]| {
        let dx_ptr = dx_ptr;
        // Each task owns one image of dx.
        let image = unsafe {
            let start = b * g.image_len();
            start_planes(g, dx_ptr.uninit(start..start + g.image_len()), bias);
            dx_ptr.slice(start..start + g.image_len())
        };
        let dy_image = &dy[b * g.channels_out * p..][..g.channels_out * p];
        for group in 0..g.groups {
            let dy_group = &dy_image[group * g.out_per_group() * p..];
            for row in (0..g.out[0]).step_by(tile_rows) {
                let rows = (row, (row + tile_rows).min(g.out[0]));
                let n = (rows.1 - rows.0) * g.out[1];
                unsafe {
                    gemm(
                        [k, n, g.out_per_group()],
                        col.as_mut_ptr(),
                        n,
                        false,
                        wt.group(group),
                        (dy_group[rows.0 * g.out[1]..].as_ptr(), 1, p),
                        parallelism,
                    );
                }
                col2im(g, col, group, rows, image, tables.get(row / tile_rows).map(Vec::as_slice));
            }
        }
        Epilogue { residual: None, relu }.finish(image, 0);
    });
    // Every image was zeroed by its task.
    unsafe { dx.set_len(g.batch * g.image_len()) };
    dx
}

/// `dW[co, K] = Σ_n dY_n[co, P] · col(X_n)[K, P]ᵀ`: each worker sums a share of the
/// batch into its own copy, and the copies are added at the end.
fn weight_grad<T: Scalar>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if let Some(winograd) = g.winograd::<T, 2>() {
        return as_t(winograd.weight_grad(as_f32(x), as_f32(dy)));
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(direct) = g.direct::<T>().filter(Same3x3::weight_grad_fits) {
        return as_t(direct.weight_grad(as_f32(x), as_f32(dy)));
    }
    let per_task = g.images_per_task::<T>();
    if per_task > 1 {
        return weight_grad_images(g, x, dy, per_task);
    }
    let (k, p) = (g.col_rows(), g.out_pixels());
    let tile_rows = g.tile_rows::<T>();
    let tables = if g.gathers::<T>() { gather_tables(g, tile_rows) } else { Vec::new() };
    let shares = threads().min(g.batch).max(1);
    let per_share = g.batch.div_ceil(shares);
    let w_len = g.channels_out * k;
    let mut partials = vec![T::zero(); shares * w_len];
    let partials_ptr = SharedMut(partials.as_mut_ptr());
    let parallelism = inner_parallelism(shares);
    for_each_task_overwriting(shares, k * tile_rows * g.out[1], |share, col| {
        let partials_ptr = partials_ptr;
        // Each task owns one partial sum.
        let acc = unsafe { partials_ptr.slice(share * w_len..(share + 1) * w_len) };
        for b in share * per_share..((share + 1) * per_share).min(g.batch) {
            let image = &x[b * g.image_len()..][..g.image_len()];
            for group in 0..g.groups {
                let acc_group = &mut acc[group * g.out_per_group() * k..];
                let dy_group = &dy[(b * g.channels_out + group * g.out_per_group()) * p..];
                for row in (0..g.out[0]).step_by(tile_rows) {
                    let rows = (row, (row + tile_rows).min(g.out[0]));
                    let n = (rows.1 - rows.0) * g.out[1];
                    im2col(g, image, group, rows, col, tables.get(row / tile_rows).map(Vec::as_slice));
                    unsafe {
                        gemm(
                            [g.out_per_group(), k, n],
                            acc_group.as_mut_ptr(),
                            k,
                            true,
                            (dy_group[rows.0 * g.out[1]..].as_ptr(), 1, p),
                            (col.as_ptr(), n, 1),
                            parallelism,
                        );
                    }
                }
            }
        }
    });
    sum_shares(partials, w_len)
}

/// An f32 slice seen as one (for `Geometry::same_3x3`, which holds only for f32).
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Scalar>(values: &[T]) -> &[f32] {
    bytemuck::cast_slice(values)
}

/// `as_f32` for a mutable slice.
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: Scalar>(values: &mut [T]) -> &mut [f32] {
    bytemuck::cast_slice_mut(values)
}

/// An epilogue seen as an f32 one (as `as_f32`).
#[cfg(target_arch = "x86_64")]
fn epilogue_as_f32<T: Scalar>(epilogue: Epilogue<'_, T>) -> Epilogue<'_, f32> {
    Epilogue { residual: epilogue.residual.map(as_f32), relu: epilogue.relu }
}

/// The direct kernel's f32 output as `Vec<T>` (for `Geometry::same_3x3`: `T` is f32).
#[cfg(target_arch = "x86_64")]
fn as_t<T: Scalar>(values: Vec<f32>) -> Vec<T> {
    assert_eq!(T::dtype(), DType::F32);
    let mut values = core::mem::ManuallyDrop::new(values);
    // SAFETY: T is f32 (same size and alignment), and the vector's ownership moves over.
    unsafe { Vec::from_raw_parts(values.as_mut_ptr().cast::<T>(), values.len(), values.capacity()) }
}

fn tensor<T: Scalar>(data: Vec<T>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(Shape::from(shape.to_vec())), T::dtype())
}

fn dims(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

fn conv_geometry(x: [usize; 4], w: [usize; 4], out: [usize; 2], options: &ConvOptions<2>) -> Geometry {
    Geometry {
        batch: x[0],
        channels_in: x[1],
        height: x[2],
        width: x[3],
        channels_out: w[0],
        groups: options.groups,
        kernel: [w[2], w[3]],
        stride: options.stride,
        padding: options.padding_begin(),
        dilation: options.dilation,
        out,
    }
}

/// The convolution whose input gradient a transposed convolution is: from the
/// transposed convolution's output (`y`) back to its input (`x`).
fn transpose_geometry(x: [usize; 4], w: [usize; 4], y: [usize; 2], options: &ConvTransposeOptions<2>) -> Geometry {
    Geometry {
        batch: x[0],
        channels_in: w[1] * options.groups,
        height: y[0],
        width: y[1],
        channels_out: x[1],
        groups: options.groups,
        kernel: [w[2], w[3]],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
        out: [x[2], x[3]],
    }
}

/// Runs `f` in the tensors' own float type.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            dtype => panic!("conv2d: unsupported dtype {:?}", dtype),
        }
    };
}

/// Whether `conv2d` here computes a convolution with these weights: all but the pointwise and
/// grouped ones, for which upstream has faster special cases.
pub(crate) fn takes(w: &FlexTensor, options: &ConvOptions<2>) -> bool {
    let pointwise = w.layout().shape()[2..] == [1, 1] && options.stride == [1, 1] && options.padding == [(0, 0); 2];
    options.groups == 1 && !pointwise
}

pub(crate) fn conv2d(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, options: &ConvOptions<2>) -> FlexTensor {
    conv2d_then(x, w, bias, None, false, options)
}

/// `conv2d`, then `residual` (a tensor of the output's shape and type) added and, with `relu`,
/// burn's `relu`, in the same pass over the output: what a residual block does at inference
/// after its convolutions (see `Epilogue`). Convolutions that `conv2d` leaves to upstream
/// (grouped, pointwise) get the epilogue as a pass of its own.
pub fn conv2d_fused(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, residual: Option<FlexTensor>, relu: bool, options: &ConvOptions<2>) -> FlexTensor {
    if takes(&w, options) {
        return conv2d_then(x, w, bias, residual, relu, options);
    }
    let y = <crate::Flex as burn_backend::ops::ModuleOps<crate::Flex>>::conv2d(x, w, bias, options.clone());
    epilogue_pass(y, residual, relu)
}

/// The epilogue of `conv2d_fused` or `conv_transpose2d_fused` as a pass of its own over `y`,
/// the output of a convolution these leave to upstream.
fn epilogue_pass(y: FlexTensor, residual: Option<FlexTensor>, relu: bool) -> FlexTensor {
    fn finish<T: Scalar>(y: FlexTensor, residual: Option<FlexTensor>, relu: bool) -> FlexTensor {
        let (mut y, residual) = (y.into_contiguous(), residual.map(FlexTensor::into_contiguous));
        check_residual::<T>(residual.as_ref(), dims(&y));
        // In place: the convolution's output is the tensor's alone.
        Epilogue { residual: residual.as_ref().map(|r| r.storage::<T>()), relu }.finish(y.storage_mut::<T>(), 0);
        y
    }
    if y.dtype() == DType::BF16 {
        return back_to(DType::BF16, by_dtype!(DType::F32, finish(to_f32(y), residual.map(to_f32), relu)));
    }
    by_dtype!(y.dtype(), finish(y, residual, relu))
}

/// Panics unless `residual` (if any) has the output's `shape` and element type `T`.
fn check_residual<T: Scalar>(residual: Option<&FlexTensor>, shape: [usize; 4]) {
    if let Some(residual) = residual {
        assert!(
            residual.layout().shape()[..] == shape[..] && residual.dtype() == T::dtype(),
            "conv2d_fused: the residual is {:?} {:?}, the output {shape:?} {:?}",
            residual.layout().shape(),
            residual.dtype(),
            T::dtype()
        );
    }
}

/// The forward convolution of `conv_gemm` with the epilogue of `conv2d_fused`.
fn conv2d_then(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, residual: Option<FlexTensor>, relu: bool, options: &ConvOptions<2>) -> FlexTensor {
    fn run<T: Scalar>(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, residual: Option<FlexTensor>, relu: bool, options: &ConvOptions<2>) -> FlexTensor {
        let (x, w) = (x.into_contiguous(), w.into_contiguous());
        let (xs, ws) = (dims(&x), dims(&w));
        let out = [0, 1].map(|i| {
            let span = xs[2 + i] + options.padding[i].0 + options.padding[i].1;
            (span - options.dilation[i] * (ws[2 + i] - 1) - 1) / options.stride[i] + 1
        });
        let g = conv_geometry(xs, ws, out, options);
        let shape = [g.batch, g.channels_out, out[0], out[1]];
        let bias = bias.map(FlexTensor::into_contiguous);
        let residual = residual.map(FlexTensor::into_contiguous);
        check_residual::<T>(residual.as_ref(), shape);
        let epilogue = Epilogue { residual: residual.as_ref().map(|r| r.storage::<T>()), relu };
        let y = forward(&g, x.storage::<T>(), w.storage::<T>(), bias.as_ref().map(|b| b.storage::<T>()), epilogue);
        tensor(y, shape)
    }
    if x.dtype() == DType::BF16 {
        return back_to(DType::BF16, conv2d_then(to_f32(x), to_f32(w), bias.map(to_f32), residual.map(to_f32), relu, options));
    }
    by_dtype!(x.dtype(), run(x, w, bias, residual, relu, options))
}

pub(crate) fn conv2d_x_backward(x: FlexTensor, w: FlexTensor, dy: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
    fn run<T: Scalar>(x: FlexTensor, w: FlexTensor, dy: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
        let (w, dy) = (w.into_contiguous(), dy.into_contiguous());
        let (xs, dys) = (dims(&x), dims(&dy));
        let g = conv_geometry(xs, dims(&w), [dys[2], dys[3]], options);
        tensor(input_grad(&g, w.storage::<T>(), dy.storage::<T>(), None, false), xs)
    }
    if x.dtype() == DType::BF16 {
        return back_to(DType::BF16, conv2d_x_backward(x, to_f32(w), to_f32(dy), options));
    }
    by_dtype!(x.dtype(), run(x, w, dy, options))
}

pub(crate) fn conv2d_weight_backward(x: FlexTensor, w: FlexTensor, dy: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
    fn run<T: Scalar>(x: FlexTensor, w: FlexTensor, dy: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
        let (x, dy) = (x.into_contiguous(), dy.into_contiguous());
        let (ws, dys) = (dims(&w), dims(&dy));
        let g = conv_geometry(dims(&x), ws, [dys[2], dys[3]], options);
        tensor(weight_grad(&g, x.storage::<T>(), dy.storage::<T>()), ws)
    }
    if x.dtype() == DType::BF16 {
        return back_to(DType::BF16, conv2d_weight_backward(to_f32(x), w, to_f32(dy), options));
    }
    by_dtype!(x.dtype(), run(x, w, dy, options))
}

pub(crate) fn conv_transpose2d(
    x: FlexTensor,
    w: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvTransposeOptions<2>,
) -> FlexTensor {
    conv_transpose2d_then(x, w, bias, false, options)
}

/// `conv_transpose2d`, then with `relu` burn's `relu`, in the pass that writes the output: a
/// transposed convolution followed by batch norm (folded in) and ReLU at inference, as in
/// DCGAN's generator. Grouped ones, which upstream computes, get the ReLU as a pass of its own.
pub fn conv_transpose2d_fused(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, relu: bool, options: &ConvTransposeOptions<2>) -> FlexTensor {
    if options.groups == 1 {
        return conv_transpose2d_then(x, w, bias, relu, options);
    }
    let y = <crate::Flex as burn_backend::ops::ModuleOps<crate::Flex>>::conv_transpose2d(x, w, bias, options.clone());
    if !relu {
        return y;
    }
    epilogue_pass(y, None, relu)
}

fn conv_transpose2d_then(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, relu: bool, options: &ConvTransposeOptions<2>) -> FlexTensor {
    fn run<T: Scalar>(x: FlexTensor, w: FlexTensor, bias: Option<FlexTensor>, relu: bool, options: &ConvTransposeOptions<2>) -> FlexTensor {
        let (x, w) = (x.into_contiguous(), w.into_contiguous());
        let (xs, ws) = (dims(&x), dims(&w));
        let y = [0, 1].map(|i| {
            (xs[2 + i] - 1) * options.stride[i] + options.dilation[i] * (ws[2 + i] - 1) + options.padding_out[i] + 1
                - 2 * options.padding[i]
        });
        let g = transpose_geometry(xs, ws, y, options);
        let bias = bias.map(FlexTensor::into_contiguous);
        let out = input_grad(&g, w.storage::<T>(), x.storage::<T>(), bias.as_ref().map(|b| b.storage::<T>()), relu);
        tensor(out, [g.batch, g.channels_in, y[0], y[1]])
    }
    if x.dtype() == DType::BF16 {
        return back_to(DType::BF16, conv_transpose2d_then(to_f32(x), to_f32(w), bias.map(to_f32), relu, options));
    }
    by_dtype!(x.dtype(), run(x, w, bias, relu, options))
}

pub(crate) fn conv_transpose2d_x_backward(w: FlexTensor, dy: FlexTensor, options: &ConvTransposeOptions<2>) -> FlexTensor {
    fn run<T: Scalar>(w: FlexTensor, dy: FlexTensor, options: &ConvTransposeOptions<2>) -> FlexTensor {
        let (w, dy) = (w.into_contiguous(), dy.into_contiguous());
        let (ws, dys) = (dims(&w), dims(&dy));
        // The input's size: the convolution back from the output (padding_out < stride
        // only ever adds rows the floor drops).
        let x = [0, 1].map(|i| {
            (dys[2 + i] + 2 * options.padding[i] - options.dilation[i] * (ws[2 + i] - 1) - 1) / options.stride[i] + 1
        });
        let x_dims = [dys[0], ws[0], x[0], x[1]];
        let g = transpose_geometry(x_dims, ws, [dys[2], dys[3]], options);
        tensor(forward(&g, dy.storage::<T>(), w.storage::<T>(), None, Epilogue::none()), x_dims)
    }
    if w.dtype() == DType::BF16 {
        return back_to(DType::BF16, conv_transpose2d_x_backward(to_f32(w), to_f32(dy), options));
    }
    by_dtype!(w.dtype(), run(w, dy, options))
}

pub(crate) fn conv_transpose2d_weight_backward(
    x: FlexTensor,
    w: FlexTensor,
    dy: FlexTensor,
    options: &ConvTransposeOptions<2>,
) -> FlexTensor {
    fn run<T: Scalar>(x: FlexTensor, w: FlexTensor, dy: FlexTensor, options: &ConvTransposeOptions<2>) -> FlexTensor {
        let (x, dy) = (x.into_contiguous(), dy.into_contiguous());
        let (ws, dys) = (dims(&w), dims(&dy));
        let g = transpose_geometry(dims(&x), ws, [dys[2], dys[3]], options);
        // The transposed convolution's weight gradient is the weight gradient of the
        // convolution going back, with its input (dy) and output gradient (x).
        tensor(weight_grad(&g, dy.storage::<T>(), x.storage::<T>()), ws)
    }
    if x.dtype() == DType::BF16 {
        return back_to(DType::BF16, conv_transpose2d_weight_backward(to_f32(x), w, to_f32(dy), options));
    }
    by_dtype!(x.dtype(), run(x, w, dy, options))
}
