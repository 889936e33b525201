//! 3×3, stride-1 convolutions with one pixel of zero padding on each side (the output as
//! large as the input), in f32, by Winograd's minimal filtering F(2×2, 3×3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016). Vitrine's patch; see
//! `PATCH.md` at the crate root.
//!
//! Each 2×2 block of output pixels (a tile) is computed from the 4×4 block of padded input
//! around it: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over the input channels, the
//! element-wise products become 16 matrix products, one per position ξ of the 4×4 block:
//! `M_ξ[out, tile] = Σ_in U_ξ[out, in] · V_ξ[in, tile]`, with `U = G g Gᵀ` the weights and
//! `V = Bᵀ d B` the input, transformed once. That is 16 multiply-adds per tile per channel
//! pair where the direct convolution has 36 (2.25× fewer); the transforms are additions.
//! The multiplications are `gemm`'s, on the tiles of a few images at once.
//!
//! The input gradient is the same kind of convolution of the output gradient (the weight's
//! channel axes swapped, its kernel turned by 180°). The weight gradient is the adjoint of
//! the forward computation: `dU_ξ = Σ_tiles dM_ξ · V_ξᵀ` with `dM = A dY Aᵀ`, then
//! `dg = Gᵀ dU G`.
//!
//! Each padded input row is stored with its even columns first and its odd columns after
//! them, and each output-gradient row the same way: the tiles of a row start two columns
//! apart, so the transforms then read contiguous runs and vectorise.

use alloc::vec;
use alloc::vec::Vec;
use core::array::from_fn;
use core::mem::MaybeUninit;
use core::ops::Range;

use super::conv_direct::{Same3x3, Weights};
use super::kernel_shared::{SharedMut, for_each_task, gemm, threads};

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// Tiles (of all of a task's images) that a task's 16 products aim to span.
const COLUMNS: usize = 128;

/// Kernels per task of the weights' transforms.
const KERNELS_PER_TASK: usize = 1024;

/// A 3×3 convolution with stride 1 and padding 1 (the direct kernel's geometry, whose
/// fields it reads through `Deref`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Winograd(pub(super) Same3x3);

impl core::ops::Deref for Winograd {
    type Target = Same3x3;

    fn deref(&self) -> &Same3x3 {
        &self.0
    }
}

/// A task's share of the batch: whole images, or a band of one image's tile rows.
struct Part {
    images: Range<usize>,
    rows: Range<usize>,
}

/// `len` floats to be written before they are read.
fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut values = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { values.set_len(len) };
    values
}

impl Winograd {
    /// Whether the transforms are worth it: with few channels they cost more than the
    /// multiplications they save, and with fewer images than threads (inference at batch 1)
    /// the weights' transform and products a few tiles wide cost more than im2col + gemm
    /// sharing an image's rows out (`resnet-small` at batch 1: ~290 images/s against ~360).
    pub(super) fn worthwhile(&self) -> bool {
        self.inputs >= 16 && self.outputs >= 16 && self.batch >= threads()
    }

    fn tiles_high(&self) -> usize {
        self.height.div_ceil(2)
    }

    fn tiles_wide(&self) -> usize {
        self.width.div_ceil(2)
    }

    fn tiles(&self) -> usize {
        self.tiles_high() * self.tiles_wide()
    }

    /// Even (or odd) columns of a padded row: `tiles_wide() + 1`.
    fn half_row(&self) -> usize {
        self.tiles_wide() + 1
    }

    /// Floats per padded plane: `2·tiles_high() + 2` rows of `2·half_row()`, zero outside
    /// the image.
    fn padded_plane(&self) -> usize {
        (2 * self.tiles_high() + 2) * 2 * self.half_row()
    }

    /// `images` cut into parts of about `COLUMNS` tiles: runs of at most `most` whole
    /// images, or, where an image has more tiles, bands of its tile rows (the transformed
    /// input and the products of a 56×56 image of 64 channels would be 3 MiB each).
    fn parts(&self, images: Range<usize>, most: usize) -> Vec<Part> {
        let (tiles_high, tiles_wide) = (self.tiles_high(), self.tiles_wide());
        if self.tiles() > COLUMNS {
            let band = (COLUMNS / tiles_wide).max(1);
            let bands = move |image: usize| (0..tiles_high).step_by(band).map(move |r| Part { images: image..image + 1, rows: r..(r + band).min(tiles_high) });
            images.flat_map(bands).collect()
        } else {
            let per_part = COLUMNS.div_ceil(self.tiles()).min(most).max(1);
            let end = images.end;
            images.step_by(per_part).map(|first| Part { images: first..(first + per_part).min(end), rows: 0..tiles_high }).collect()
        }
    }

    /// Tiles in `part`: the columns of its products.
    fn columns(&self, part: &Part) -> usize {
        part.images.len() * part.rows.len() * self.tiles_wide()
    }

    /// `U_ξ = G g Gᵀ` for each kernel `g` of `w`, as `[16, kernels]` in `w`'s order of
    /// kernels, with the (column, row) strides of `U_ξ` read as `[outputs, inputs]`: `w` is
    /// `[outputs, inputs, 3, 3]` as given, `[inputs, outputs, 3, 3]` as the adjoint (whose
    /// kernels are turned by 180°). Shared out between the threads: ResNet-18's 512 × 512
    /// kernels on the calling thread alone were 6% of its inference.
    fn transform_weights(&self, w: &[f32], weights: Weights) -> (Vec<f32>, (usize, usize)) {
        let kernels = self.outputs * self.inputs;
        let strides = match weights {
            Weights::AsGiven => (1, self.inputs),
            Weights::Adjoint => (self.outputs, 1),
        };
        let mut u = Vec::<f32>::with_capacity(16 * kernels);
        let u_ptr = SharedMut(u.as_mut_ptr());
        for_each_task::<f32>(kernels.div_ceil(KERNELS_PER_TASK), 0, |task, _| {
            let range = task * KERNELS_PER_TASK..((task + 1) * KERNELS_PER_TASK).min(kernels);
            let mut transformed = vec![[0.0f32; 16]; range.len()];
            for (kernel, u) in range.clone().zip(&mut transformed) {
                let g: [[f32; 3]; 3] = from_fn(|r| {
                    from_fn(|s| match weights {
                        Weights::AsGiven => w[kernel * 9 + 3 * r + s],
                        Weights::Adjoint => w[kernel * 9 + 8 - (3 * r + s)],
                    })
                });
                // G g (4×3), then (G g) Gᵀ row by row.
                let half = |a: [f32; 3], sign: f32| (a[0] + sign * a[1] + a[2]) * 0.5;
                let gg: [[f32; 3]; 4] =
                    [g[0], from_fn(|s| half([g[0][s], g[1][s], g[2][s]], 1.0)), from_fn(|s| half([g[0][s], g[1][s], g[2][s]], -1.0)), g[2]];
                for (a, row) in gg.iter().enumerate() {
                    u[4 * a..4 * a + 4].copy_from_slice(&[row[0], half(*row, 1.0), half(*row, -1.0), row[2]]);
                }
            }
            let u_ptr = u_ptr;
            for xi in 0..16 {
                // SAFETY: each task writes its own kernels of each position's row.
                let target = unsafe { u_ptr.uninit(xi * kernels + range.start..xi * kernels + range.end) };
                for (target, u) in target.iter_mut().zip(&transformed) {
                    target.write(u[xi]);
                }
            }
        });
        // SAFETY: the tasks wrote every kernel of every position.
        unsafe { u.set_len(16 * kernels) };
        (u, strides)
    }

    /// Copies `image`'s planes into `padded` (`padded_plane()` floats each), its pixel
    /// `(r, c)` at padded row `r + 1`, column `c + 1`, each row's even columns before its odd
    /// ones; only the rows that `tile_rows` read. Only the image's pixels are written: the
    /// border stays as it was (zero).
    fn pad_into(&self, image: &[f32], padded: &mut [f32], tile_rows: &Range<usize>) {
        let half = self.half_row();
        // The image rows that tile rows `i` read: 2i - 1 to 2i + 2.
        let rows = (2 * tile_rows.start).saturating_sub(1)..(2 * tile_rows.end + 1).min(self.height);
        for (plane, target) in image.chunks_exact(self.height * self.width).zip(padded.chunks_exact_mut(self.padded_plane())) {
            for (r, source) in plane.chunks_exact(self.width).enumerate().take(rows.end).skip(rows.start) {
                let (even, odd) = target[(r + 1) * 2 * half..][..2 * half].split_at_mut(half);
                // Image column c is padded column c + 1: the image's even columns land among
                // the odd ones, its odd columns among the even ones from the second on.
                // SAFETY: AVX-512F (the caller's contract); `odd` holds `half ≥ ⌈width/2⌉`
                // floats, `even[1..]` `half - 1 ≥ ⌊width/2⌋`.
                unsafe { deinterleave(source, odd.as_mut_ptr(), even[1..].as_mut_ptr()) };
            }
        }
    }

    /// `V_ξ[in, column + tile] = (Bᵀ d B)_ξ` for the tiles of the padded image in
    /// `tile_rows`, into `v` (`[inputs, 16, columns]`).
    fn transform_input(&self, padded: &[f32], v: &mut [MaybeUninit<f32>], columns: usize, column: usize, tile_rows: &Range<usize>) {
        let (tiles_wide, half) = (self.tiles_wide(), self.half_row());
        assert!(v.len() >= 16 * self.inputs * columns && padded.len() >= self.inputs * self.padded_plane());
        for (input, plane) in padded.chunks_exact(self.padded_plane()).enumerate() {
            for (k, i) in tile_rows.clone().enumerate() {
                let rows = &plane[2 * i * 2 * half..][..8 * half];
                let at = input * 16 * columns + column + k * tiles_wide;
                for first in (0..tiles_wide).step_by(16) {
                    // SAFETY: AVX-512F (the caller's contract); the reads stay in the four rows
                    // (`first + 16 ≤ …` is masked to `tiles_wide`, and `tiles_wide + 1 = half`),
                    // the writes in `v` (asserted above).
                    unsafe {
                        input_tiles(rows.as_ptr().add(first), half, (tiles_wide - first).min(16), v.as_mut_ptr().add(at + first).cast(), columns)
                    };
                }
            }
        }
    }

    /// `Y = Aᵀ M A` for the tiles of `image` in `tile_rows`, from `m` (`[outputs, 16,
    /// columns]`, written by the products) into `y` (`[batch, outputs, height, width]`, the
    /// rows of those tiles written whole), plus each channel's `bias`.
    #[allow(clippy::too_many_arguments)]
    fn transform_output(
        &self,
        m: &[MaybeUninit<f32>],
        columns: usize,
        column: usize,
        y: SharedMut<f32>,
        image: usize,
        tile_rows: &Range<usize>,
        bias: Option<&[f32]>,
    ) {
        let (tiles_wide, width, plane_len) = (self.tiles_wide(), self.width, self.height * self.width);
        assert!(m.len() >= 16 * self.outputs * columns);
        for output in 0..self.outputs {
            let bias = bias.map_or(0.0, |bias| bias[output]);
            let plane = (image * self.outputs + output) * plane_len;
            for (k, i) in tile_rows.clone().enumerate() {
                let at = output * 16 * columns + column + k * tiles_wide;
                let row = |r: usize| plane + r * width..plane + (r + 1) * width;
                // SAFETY: rows 2i and 2i + 1 of this plane belong to this part's task alone.
                let top = unsafe { y.uninit(row(2 * i)) }.as_mut_ptr().cast::<f32>();
                let bottom = (2 * i + 1 < self.height).then(|| unsafe { y.uninit(row(2 * i + 1)) }.as_mut_ptr().cast::<f32>());
                for first in (0..tiles_wide).step_by(16) {
                    let pixels = (width - 2 * first).min(32);
                    // SAFETY: AVX-512F (the caller's contract); the reads stay in `m` (asserted),
                    // the writes in rows `2i` and `2i + 1`.
                    unsafe {
                        output_tiles(
                            m.as_ptr().add(at + first).cast(),
                            columns,
                            (tiles_wide - first).min(16),
                            bias,
                            top.add(2 * first),
                            bottom.map(|b| b.add(2 * first)),
                            pixels,
                        )
                    };
                }
            }
        }
    }

    /// The convolution of `x` (`[batch, inputs, height, width]`), plus each output channel's
    /// `bias`: `[batch, outputs, height, width]`. Call only where AVX-512F is available.
    pub(super) fn run(&self, x: &[f32], w: &[f32], weights: Weights, bias: Option<&[f32]>) -> Vec<f32> {
        let (u, u_strides) = self.transform_weights(w, weights);
        let (x_len, y_len) = (self.inputs * self.height * self.width, self.outputs * self.height * self.width);
        // Every thread gets parts.
        let parts = self.parts(0..self.batch, self.batch.div_ceil(threads()));
        let most = parts.iter().map(|part| self.columns(part)).max().unwrap_or(0);
        let mut y = Vec::<f32>::with_capacity(self.batch * y_len);
        let y_ptr = SharedMut(y.as_mut_ptr());
        // `padded` (zeroed once per run of tasks: its border is never written).
        for_each_task(parts.len(), self.inputs * self.padded_plane(), |task, padded: &mut [f32]| {
            let part = &parts[task];
            let (columns, per_image) = (self.columns(part), part.rows.len() * self.tiles_wide());
            // Written whole (by the transform, by the products) before they are read.
            let (mut v, mut m) = (uninit(16 * self.inputs * most), uninit(16 * self.outputs * most));
            for (n, image) in part.images.clone().enumerate() {
                self.pad_into(&x[image * x_len..][..x_len], padded, &part.rows);
                self.transform_input(padded, &mut v, columns, n * per_image, &part.rows);
            }
            for xi in 0..16 {
                // SAFETY: `u_ξ` is `[outputs, inputs]` (read with `u_strides`), `v_ξ`
                // `[inputs, columns]` (rows 16 apart), `m_ξ` `[outputs, columns]` (the same),
                // all inside their buffers.
                unsafe {
                    gemm(
                        [self.outputs, columns, self.inputs],
                        m[xi * columns..].as_mut_ptr().cast(),
                        16 * columns,
                        false,
                        (u[xi * self.outputs * self.inputs..].as_ptr(), u_strides.0, u_strides.1),
                        (v[xi * columns..].as_ptr().cast(), 1, 16 * columns),
                        gemm::Parallelism::None,
                    )
                };
            }
            for (n, image) in part.images.clone().enumerate() {
                self.transform_output(&m, columns, n * per_image, y_ptr, image, &part.rows, bias);
            }
        });
        // SAFETY: the parts cover every row of every image's output planes.
        unsafe { y.set_len(self.batch * y_len) };
        y
    }

    /// Copies `dy`'s planes (one image) into `grid` (`2·tiles_high()` rows of
    /// `2·tiles_wide()` floats per plane, each row's even columns first), the rows of
    /// `tile_rows`; zero where the tiles reach past the output (never written).
    fn dy_on_grid(&self, dy: &[f32], grid: &mut [f32], tile_rows: &Range<usize>) {
        let half = self.tiles_wide();
        let rows = 2 * tile_rows.start..(2 * tile_rows.end).min(self.height);
        for (plane, target) in dy.chunks_exact(self.height * self.width).zip(grid.chunks_exact_mut(4 * self.tiles())) {
            for (r, source) in plane.chunks_exact(self.width).enumerate().take(rows.end).skip(rows.start) {
                let (even, odd) = target[r * 2 * half..][..2 * half].split_at_mut(half);
                // SAFETY: AVX-512F (the caller's contract); each half holds `⌈width/2⌉` floats.
                unsafe { deinterleave(source, even.as_mut_ptr(), odd.as_mut_ptr()) };
            }
        }
    }

    /// `dM_ξ[out, column + tile] = (A dY Aᵀ)_ξ` for the tiles in `tile_rows` of one image's
    /// output gradient on the grid, into `dm` (`[outputs, 16, columns]`).
    fn transform_output_grad(&self, grid: &[f32], dm: &mut [MaybeUninit<f32>], columns: usize, column: usize, tile_rows: &Range<usize>) {
        let half = self.tiles_wide();
        assert!(dm.len() >= 16 * self.outputs * columns && grid.len() >= self.outputs * 4 * self.tiles());
        for (output, plane) in grid.chunks_exact(4 * self.tiles()).enumerate() {
            for (k, i) in tile_rows.clone().enumerate() {
                let rows = &plane[2 * i * 2 * half..][..4 * half];
                let at = output * 16 * columns + column + k * half;
                for first in (0..half).step_by(16) {
                    // SAFETY: AVX-512F (the caller's contract); reads in the two rows, writes in
                    // `dm` (asserted above).
                    unsafe { output_grad_tiles(rows.as_ptr().add(first), half, (half - first).min(16), dm.as_mut_ptr().add(at + first).cast(), columns) };
                }
            }
        }
    }

    /// The weight gradient `[outputs, inputs, 3, 3]` from the input `x` and the output
    /// gradient `dy`. Each thread sums `dU` over a share of the batch; the shares are added
    /// and taken back through `Gᵀ dU G` at the end.
    pub(super) fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (x_len, dy_len) = (self.inputs * self.height * self.width, self.outputs * self.height * self.width);
        let u_len = 16 * self.outputs * self.inputs;
        let shares = threads().min(self.batch).max(1);
        let per_share = self.batch.div_ceil(shares);
        let (padded_len, grid_len) = (self.inputs * self.padded_plane(), self.outputs * 4 * self.tiles());
        let mut partials = vec![0.0f32; shares * u_len];
        let share = |(share, partial): (usize, &mut [f32])| {
            let parts = self.parts(share * per_share..((share + 1) * per_share).min(self.batch), per_share);
            let most = parts.iter().map(|part| self.columns(part)).max().unwrap_or(0);
            // Zeroed: the borders of `padded` and `grid` are never written.
            let mut scratch = vec![0.0f32; padded_len + grid_len];
            let (padded, grid) = scratch.split_at_mut(padded_len);
            // Written whole by the transforms before the products read them.
            let (mut v, mut dm) = (uninit(16 * self.inputs * most), uninit(16 * self.outputs * most));
            for part in &parts {
                let (columns, per_image) = (self.columns(part), part.rows.len() * self.tiles_wide());
                for (n, image) in part.images.clone().enumerate() {
                    self.pad_into(&x[image * x_len..][..x_len], padded, &part.rows);
                    self.transform_input(padded, &mut v, columns, n * per_image, &part.rows);
                    self.dy_on_grid(&dy[image * dy_len..][..dy_len], grid, &part.rows);
                    self.transform_output_grad(grid, &mut dm, columns, n * per_image, &part.rows);
                }
                for xi in 0..16 {
                    // SAFETY: `dm_ξ` is `[outputs, columns]`, `v_ξ` `[inputs, columns]` (read
                    // transposed; both with rows 16 apart), `partial_ξ` `[outputs, inputs]`,
                    // all inside their buffers.
                    unsafe {
                        gemm(
                            [self.outputs, self.inputs, columns],
                            partial[xi * self.outputs * self.inputs..].as_mut_ptr(),
                            self.inputs,
                            true,
                            (dm[xi * columns..].as_ptr().cast(), 1, 16 * columns),
                            (v[xi * columns..].as_ptr().cast(), 16 * columns, 1),
                            gemm::Parallelism::None,
                        )
                    };
                }
            }
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            partials.par_chunks_mut(u_len).enumerate().for_each(share);
        }
        #[cfg(not(feature = "rayon"))]
        partials.chunks_mut(u_len).enumerate().for_each(share);
        // Each kernel's 16 sums over the shares, taken back through Gᵀ dU G, in tasks across
        // the threads (ResNet-18's last layers have 512 × 512 kernels).
        let kernels = self.outputs * self.inputs;
        let mut dw = Vec::<f32>::with_capacity(kernels * 9);
        let dw_ptr = SharedMut(dw.as_mut_ptr());
        // Gᵀ applied to four values: [a0 + (a1 + a2)/2, (a1 - a2)/2, (a1 + a2)/2 + a3].
        let back = |a: [f32; 4]| [a[0] + (a[1] + a[2]) * 0.5, (a[1] - a[2]) * 0.5, (a[1] + a[2]) * 0.5 + a[3]];
        for_each_task::<f32>(kernels.div_ceil(KERNELS_PER_TASK), 0, |task, _| {
            let range = task * KERNELS_PER_TASK..((task + 1) * KERNELS_PER_TASK).min(kernels);
            let dw_ptr = dw_ptr;
            // SAFETY: each task writes its own kernels.
            let target = unsafe { dw_ptr.uninit(range.start * 9..range.end * 9) };
            for (kernel, target) in range.zip(target.chunks_exact_mut(9)) {
                let du: [[f32; 4]; 4] =
                    from_fn(|a| from_fn(|b| partials.chunks_exact(u_len).map(|partial| partial[(4 * a + b) * kernels + kernel]).sum()));
                let columns: [[f32; 3]; 4] = from_fn(|a| back(du[a]));
                for s in 0..3 {
                    let g = back(from_fn(|a| columns[a][s]));
                    for r in 0..3 {
                        target[3 * r + s].write(g[r]);
                    }
                }
            }
        });
        // SAFETY: the tasks wrote every kernel.
        unsafe { dw.set_len(kernels * 9) };
        dw
    }
}

/// The first `count` (≤ 16) lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(count: usize) -> __mmask16 {
    ((1u32 << count) - 1) as __mmask16
}

/// Splits `source` into its even-indexed values (to `even`) and odd-indexed ones (to `odd`).
///
/// # Safety
/// AVX-512F is available; `even` is writable for `⌈len/2⌉` floats, `odd` for `⌊len/2⌋`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave(source: &[f32], even: *mut f32, odd: *mut f32) {
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (block, values) in source.chunks(32).enumerate() {
        let n = values.len();
        // SAFETY: the loads are masked to `values`, the stores to the halves' lengths.
        unsafe {
            let low = _mm512_maskz_loadu_ps(lanes(n.min(16)), values.as_ptr());
            let high = _mm512_maskz_loadu_ps(lanes(n.saturating_sub(16)), values.as_ptr().add(n.min(16)));
            _mm512_mask_storeu_ps(even.add(16 * block), lanes(n.div_ceil(2)), _mm512_permutex2var_ps(low, evens, high));
            _mm512_mask_storeu_ps(odd.add(16 * block), lanes(n / 2), _mm512_permutex2var_ps(low, odds, high));
        }
    }
}

/// `V_ξ` for `count` (≤ 16) tiles side by side: `out[ξ·stride + j]` from four padded rows
/// (`rows + q·2·half`, even columns then odd ones) at tiles `j`.
///
/// # Safety
/// AVX-512F is available; each row is readable at `0..count + 1` and `half..half + count + 1`,
/// `out` writable at `ξ·stride + 0..count`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles(rows: *const f32, half: usize, count: usize, out: *mut f32, stride: usize) {
    let mask = lanes(count);
    // SAFETY: within the bounds the caller guarantees (masked to `count`).
    let load = |q: usize, at: usize| unsafe { _mm512_maskz_loadu_ps(mask, rows.add(q * 2 * half + at)) };
    // Columns 2j, 2j+2, 2j+1, 2j+3 of each row.
    let d: [[__m512; 4]; 4] = from_fn(|q| [load(q, 0), load(q, 1), load(q, half), load(q, half + 1)]);
    // Bᵀ d (rows), then (Bᵀ d) B (columns).
    let e: [[__m512; 4]; 4] = [
        from_fn(|c| _mm512_sub_ps(d[0][c], d[2][c])),
        from_fn(|c| _mm512_add_ps(d[1][c], d[2][c])),
        from_fn(|c| _mm512_sub_ps(d[2][c], d[1][c])),
        from_fn(|c| _mm512_sub_ps(d[1][c], d[3][c])),
    ];
    for (a, [even, even_next, odd, odd_next]) in e.into_iter().enumerate() {
        let v = [
            _mm512_sub_ps(even, even_next),
            _mm512_add_ps(odd, even_next),
            _mm512_sub_ps(even_next, odd),
            _mm512_sub_ps(odd, odd_next),
        ];
        for (b, v) in v.into_iter().enumerate() {
            // SAFETY: within the bounds the caller guarantees.
            unsafe { _mm512_mask_storeu_ps(out.add((4 * a + b) * stride), mask, v) };
        }
    }
}

/// `Y = Aᵀ M A` for `count` (≤ 16) tiles side by side, from `m[ξ·stride + j]`: the tiles'
/// top rows interleaved into `top`, their bottom rows into `bottom` (if the output has that
/// row), `pixels` (≤ 32) of each, plus `bias`.
///
/// # Safety
/// AVX-512F is available; `m` is readable at `ξ·stride + 0..count`, `top` and `bottom`
/// writable for `pixels` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_tiles(m: *const f32, stride: usize, count: usize, bias: f32, top: *mut f32, bottom: Option<*mut f32>, pixels: usize) {
    let mask = lanes(count);
    // SAFETY: within the bounds the caller guarantees (masked to `count`).
    let m: [__m512; 16] = from_fn(|xi| unsafe { _mm512_maskz_loadu_ps(mask, m.add(xi * stride)) });
    // M A (columns), then Aᵀ (M A) (rows).
    let s: [[__m512; 2]; 4] = from_fn(|a| {
        let r = &m[4 * a..4 * a + 4];
        [_mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]), _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3])]
    });
    let bias = _mm512_set1_ps(bias);
    let top_row: [__m512; 2] = from_fn(|c| _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0][c], s[1][c]), s[2][c]), bias));
    let bottom_row: [__m512; 2] = from_fn(|c| _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[1][c], s[2][c]), s[3][c]), bias));
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let store = |target: *mut f32, [left, right]: [__m512; 2]| {
        // SAFETY: within the bounds the caller guarantees (masked to `pixels`).
        unsafe {
            _mm512_mask_storeu_ps(target, lanes(pixels.min(16)), _mm512_permutex2var_ps(left, low, right));
            _mm512_mask_storeu_ps(target.add(16), lanes(pixels.saturating_sub(16)), _mm512_permutex2var_ps(left, high, right));
        }
    };
    store(top, top_row);
    if let Some(bottom) = bottom {
        store(bottom, bottom_row);
    }
}

/// `dM_ξ = (A dY Aᵀ)_ξ` for `count` (≤ 16) tiles side by side, from two rows of the output
/// gradient's grid (`rows`, `rows + 2·half`; even columns then odd ones), into
/// `out[ξ·stride + j]`.
///
/// # Safety
/// AVX-512F is available; each row is readable at `0..count` and `half..half + count`, `out`
/// writable at `ξ·stride + 0..count`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_grad_tiles(rows: *const f32, half: usize, count: usize, out: *mut f32, stride: usize) {
    let mask = lanes(count);
    // SAFETY: within the bounds the caller guarantees (masked to `count`).
    let load = |u: usize, at: usize| unsafe { _mm512_maskz_loadu_ps(mask, rows.add(u * 2 * half + at)) };
    let d: [[__m512; 2]; 2] = from_fn(|u| [load(u, 0), load(u, half)]);
    let zero = _mm512_setzero_ps();
    // A dY (rows), then (A dY) Aᵀ (columns).
    let t: [[__m512; 2]; 4] = [
        d[0],
        from_fn(|c| _mm512_add_ps(d[0][c], d[1][c])),
        from_fn(|c| _mm512_sub_ps(d[0][c], d[1][c])),
        from_fn(|c| _mm512_sub_ps(zero, d[1][c])),
    ];
    for (a, [even, odd]) in t.into_iter().enumerate() {
        let v = [even, _mm512_add_ps(even, odd), _mm512_sub_ps(even, odd), _mm512_sub_ps(zero, odd)];
        for (b, v) in v.into_iter().enumerate() {
            // SAFETY: within the bounds the caller guarantees.
            unsafe { _mm512_mask_storeu_ps(out.add((4 * a + b) * stride), mask, v) };
        }
    }
}
