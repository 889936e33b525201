//! 3×3, stride-1 convolutions with one pixel of zero padding on each side (the output as
//! large as the input), in f32, by Winograd's minimal filtering F(m×m, 3×3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016). Vitrine's patch; see
//! `PATCH.md` at the crate root.
//!
//! Each m×m block of output pixels (a tile) is computed from the α×α block of padded input
//! around it (α = m + 2): `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over the input channels,
//! the element-wise products become α² matrix products, one per position ξ of the block:
//! `M_ξ[out, tile] = Σ_in U_ξ[out, in] · V_ξ[in, tile]`, with `U = G g Gᵀ` the weights and
//! `V = Bᵀ d B` the input, transformed once. The multiplications are `gemm`'s, on the tiles
//! of a few images at once. Per output pixel and channel pair that is 36/16 = 2.25
//! multiply-adds with F(4×4, 3×3), which the convolution and its input gradient use, and
//! 16/4 = 4 with F(2×2, 3×3), which the weight gradient uses; the direct convolution has 9.
//!
//! The input gradient is the same kind of convolution of the output gradient (the weight's
//! channel axes swapped, its kernel turned by 180°). The weight gradient is the adjoint of
//! the forward computation: `dU_ξ = Σ_tiles dM_ξ · V_ξᵀ` with `dM = A dY Aᵀ`, then
//! `dg = Gᵀ dU G`.
//!
//! The transforms run over 16 tiles at a time on AVX-512, 8 on AVX2 (one to a vector lane;
//! the code is written once over `lanes::Lanes`). So that every lane is
//! a tile on small images too (a 28×28 image has 7 tiles of 4×4 to a row), each padded input
//! plane is stored as segments, one per (row mod m, column offset in the block), in which the
//! tiles of a band follow one another row after row (`Winograd::padded_plane`); the output
//! gradient of F(2×2) likewise (`dy_on_grid`). The output goes through a buffer by position
//! in the tile, then into its rows (`interleave_4`).

use alloc::vec;
use alloc::vec::Vec;
use core::array::from_fn;
use core::mem::MaybeUninit;
use core::ops::Range;

use super::conv_direct::{Same3x3, Weights};
use super::kernel_shared::{Epilogue, SharedMut, for_each_task, gemm, threads};
use super::lanes::{Avx2, Avx512, Isa, Lanes, mask16, per_isa};

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// Tiles (of all of a task's images) that a task's products aim to span.
const COLUMNS: usize = 64;

/// Kernels per task of the weights' transforms.
const KERNELS_PER_TASK: usize = 1024;

/// A 3×3 convolution with stride 1 and padding 1 (the direct kernel's geometry), computed in
/// tiles of `M`×`M` output pixels (2 or 4). No `Deref` to the geometry: a method missing here
/// must not quietly become the direct kernel's.
#[derive(Clone, Copy, Debug)]
pub(super) struct Winograd<const M: usize>(pub(super) Same3x3);

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

impl<const M: usize> Winograd<M> {
    /// Side of the transformed block: the tile and the kernel's reach around it. The
    /// transforms exist for tiles of 2 and 4 (any other `M` fails to compile here).
    const ALPHA: usize = {
        assert!(M == 2 || M == 4, "Winograd tiles are 2×2 or 4×4");
        M + 2
    };

    /// Positions ξ of the transformed block: the products per task.
    const POSITIONS: usize = Self::ALPHA * Self::ALPHA;

    /// Whether the transforms are worth it: with few channels they cost more than the
    /// multiplications they save, and with fewer images than threads (inference at batch 1)
    /// the weights' transform and products a few tiles wide cost more than im2col + gemm
    /// sharing an image's rows out (`resnet-small` at batch 1: ~290 images/s against ~360).
    pub(super) fn worthwhile(&self) -> bool {
        self.0.inputs >= 16 && self.0.outputs >= 16 && self.0.batch >= threads()
    }

    fn tiles_high(&self) -> usize {
        self.0.height.div_ceil(M)
    }

    fn tiles_wide(&self) -> usize {
        self.0.width.div_ceil(M)
    }

    fn tiles(&self) -> usize {
        self.tiles_high() * self.tiles_wide()
    }

    /// Floats per segment of the padded plane: `tiles_high() + 1` rows of `tiles_wide()`.
    fn segment(&self) -> usize {
        (self.tiles_high() + 1) * self.tiles_wide()
    }

    /// Floats per padded plane: `M·α` segments, zero outside the image. Segment `(a, b)`
    /// holds padded pixel `(M·i + a, M·j + b)` at `i·tiles_wide() + j`, so that tile `(i, j)`'s
    /// pixel `(a, b)` is at `(i + a / M)·tiles_wide() + j` of segment `(a mod M, b)`: each
    /// position of a run of tiles is a run of floats.
    fn padded_plane(&self) -> usize {
        M * Self::ALPHA * self.segment()
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

    /// `U_ξ = G g Gᵀ` for each kernel `g` of `w`, as `[POSITIONS, kernels]` in `w`'s order of
    /// kernels, with the (column, row) strides of `U_ξ` read as `[outputs, inputs]`: `w` is
    /// `[outputs, inputs, 3, 3]` as given, `[inputs, outputs, 3, 3]` as the adjoint (whose
    /// kernels are turned by 180°). Shared out between the threads: ResNet-18's 512 × 512
    /// kernels on the calling thread alone were 6% of its inference.
    fn transform_weights(&self, w: &[f32], weights: Weights) -> (Vec<f32>, (usize, usize)) {
        let kernels = self.0.outputs * self.0.inputs;
        let strides = match weights {
            Weights::AsGiven => (1, self.0.inputs),
            Weights::Adjoint => (self.0.outputs, 1),
        };
        let positions = Self::POSITIONS;
        let mut u = Vec::<f32>::with_capacity(positions * kernels);
        let u_ptr = SharedMut(u.as_mut_ptr());
        for_each_task::<f32>(kernels.div_ceil(KERNELS_PER_TASK), 0, |task, _| {
            let range = task * KERNELS_PER_TASK..((task + 1) * KERNELS_PER_TASK).min(kernels);
            let mut transformed = vec![0.0f32; positions * range.len()];
            for (kernel, u) in range.clone().zip(transformed.chunks_exact_mut(positions)) {
                let g: [[f32; 3]; 3] = from_fn(|r| {
                    from_fn(|s| match weights {
                        Weights::AsGiven => w[kernel * 9 + 3 * r + s],
                        Weights::Adjoint => w[kernel * 9 + 8 - (3 * r + s)],
                    })
                });
                // G g (α×3) column by column, then (G g) Gᵀ row by row.
                let columns: [[f32; 6]; 3] = from_fn(|s| weight_column::<M>([g[0][s], g[1][s], g[2][s]]));
                for (a, u) in u.chunks_exact_mut(Self::ALPHA).enumerate() {
                    u.copy_from_slice(&weight_column::<M>(from_fn(|s| columns[s][a]))[..Self::ALPHA]);
                }
            }
            let u_ptr = u_ptr;
            for xi in 0..positions {
                // SAFETY: each task writes its own kernels of each position's row.
                let target = unsafe { u_ptr.uninit(xi * kernels + range.start..xi * kernels + range.end) };
                for (target, u) in target.iter_mut().zip(transformed.chunks_exact(positions)) {
                    target.write(u[xi]);
                }
            }
        });
        // SAFETY: the tasks wrote every kernel of every position.
        unsafe { u.set_len(positions * kernels) };
        (u, strides)
    }

    /// `V_ξ[in, column + tile] = (Bᵀ d B)_ξ` for the tiles in `tile_rows` of `image`
    /// (`[inputs, height, width]`), into `v` (`[inputs, POSITIONS, columns]`). Each input
    /// plane is copied into `padded` (`padded_plane()` floats, zero outside the image: only
    /// the image's pixels are written) and transformed while it is in cache.
    fn transform_input(&self, image: &[f32], padded: &mut [f32], v: &mut [MaybeUninit<f32>], columns: usize, column: usize, tile_rows: &Range<usize>) {
        let (tiles_wide, segment) = (self.tiles_wide(), self.segment());
        assert!(v.len() >= Self::POSITIONS * self.0.inputs * columns && padded.len() >= self.padded_plane());
        // The image rows that tile rows `i` read: M·i - 1 to M·i + M.
        let image_rows = (M * tile_rows.start).saturating_sub(1)..(M * tile_rows.end + 1).min(self.0.height);
        let (start, end) = (tile_rows.start * tiles_wide, tile_rows.end * tiles_wide);
        let target = padded.as_mut_ptr();
        // Only AVX-512's `to_slots` reads the masks.
        let lanes = if self.0.isa == Isa::Avx512 { slot_lanes::<M>(self.0.width, tiles_wide) } else { Vec::new() };
        let width = self.0.width;
        for (input, plane) in image.chunks_exact(self.0.height * self.0.width).enumerate() {
            let out = v[input * Self::POSITIONS * columns + column..].as_mut_ptr().cast::<f32>();
            // SAFETY: the instruction set is the CPU's (`Isa::detect`); each row is in the
            // plane, the slots' rows in the padded plane; the tiles' reads stay in the padded
            // plane (`first + count ≤ (tiles_high() + 1 - a / M)·tiles_wide()`), the writes in
            // `v` (asserted above).
            unsafe {
                per_isa!(self.0.isa, V => {
                    for r in image_rows.clone() {
                        // Image pixel (r, c) is padded pixel (r + 1, c + 1).
                        let row = target.wrapping_add((r + 1) % M * Self::ALPHA * segment + (r + 1) / M * tiles_wide);
                        let slots = from_fn(|b| row.wrapping_add(b.min(Self::ALPHA - 1) * segment));
                        V::to_slots::<M>(plane[r * width..].as_ptr(), width, slots, &lanes, tiles_wide);
                    }
                    for first in (start..end).step_by(V::LANES) {
                        let (padded, count, out) = (padded.as_ptr().wrapping_add(first), (end - first).min(V::LANES), out.wrapping_add(first - start));
                        match M {
                            2 => V::input_tiles_2(padded, segment, tiles_wide, count, out, columns),
                            _ => V::input_tiles_4(padded, segment, tiles_wide, count, out, columns),
                        }
                    }
                })
            }
        }
    }
}

impl Winograd<4> {
    /// `Y = Aᵀ M A` for the tiles of `part`, from `m` (`[outputs, POSITIONS, columns]`,
    /// written by the products) into `y` (`[batch, outputs, height, width]`, the rows of
    /// those tiles written whole), plus each channel's `bias`, then the `epilogue`. Each
    /// channel's pixels go to `pixels` first (`[16, columns]`: by position in their tile),
    /// then to their rows.
    #[allow(clippy::too_many_arguments)]
    fn transform_output(
        &self,
        m: &[MaybeUninit<f32>],
        columns: usize,
        part: &Part,
        y: SharedMut<f32>,
        bias: Option<&[f32]>,
        epilogue: Epilogue<f32>,
        pixels: &mut [MaybeUninit<f32>],
    ) {
        let (tiles_wide, width, plane_len) = (self.tiles_wide(), self.0.width, self.0.height * self.0.width);
        let per_image = part.rows.len() * tiles_wide;
        assert!(m.len() >= Self::POSITIONS * self.0.outputs * columns && pixels.len() >= 16 * columns);
        for output in 0..self.0.outputs {
            let bias = bias.map_or(0.0, |bias| bias[output]);
            let m = m[output * Self::POSITIONS * columns..].as_ptr().cast::<f32>();
            let written = pixels.as_mut_ptr().cast::<f32>();
            // SAFETY: the instruction set is the CPU's (`Isa::detect`); the reads stay in `m`,
            // the writes in `pixels` (asserted above); then the four runs of each tile row's
            // pixels were written, and the rows of this part's tiles belong to its task alone.
            unsafe {
                per_isa!(self.0.isa, V => {
                    for first in (0..columns).step_by(V::LANES) {
                        V::output_tiles_4(m.add(first), columns, (columns - first).min(V::LANES), bias, written.add(first), columns);
                    }
                    for (n, image) in part.images.clone().enumerate() {
                        let plane = (image * self.0.outputs + output) * plane_len;
                        for (k, i) in part.rows.clone().enumerate() {
                            for r in (0..4).take_while(|r| 4 * i + r < self.0.height) {
                                let row = plane + (4 * i + r) * width;
                                let target = y.uninit(row..row + width).as_mut_ptr().cast();
                                // The residual's row, bounds-checked here.
                                let finish = Epilogue { residual: epilogue.residual.map(|residual| &residual[row..row + width]), relu: epilogue.relu };
                                V::interleave_4(written.add(4 * r * columns + n * per_image + k * tiles_wide), columns, tiles_wide, target, width, finish);
                            }
                        }
                    }
                })
            }
        }
    }

    /// The convolution of `x` (`[batch, inputs, height, width]`), plus each output channel's
    /// `bias`, then the `epilogue`: `[batch, outputs, height, width]`.
    pub(super) fn run(&self, x: &[f32], w: &[f32], weights: Weights, bias: Option<&[f32]>, epilogue: Epilogue<f32>) -> Vec<f32> {
        let (u, u_strides) = self.transform_weights(w, weights);
        let (x_len, y_len) = (self.0.inputs * self.0.height * self.0.width, self.0.outputs * self.0.height * self.0.width);
        let positions = Self::POSITIONS;
        // Every thread gets parts.
        let parts = self.parts(0..self.0.batch, self.0.batch.div_ceil(threads()));
        let most = parts.iter().map(|part| self.columns(part)).max().unwrap_or(0);
        let mut y = Vec::<f32>::with_capacity(self.0.batch * y_len);
        let y_ptr = SharedMut(y.as_mut_ptr());
        // `padded` (zeroed once per run of tasks: its border is never written).
        for_each_task(parts.len(), self.padded_plane(), |task, padded: &mut [f32]| {
            let part = &parts[task];
            let (columns, per_image) = (self.columns(part), part.rows.len() * self.tiles_wide());
            // Written whole (by the transforms, by the products) before they are read.
            let (mut v, mut m, mut pixels) = (uninit(positions * self.0.inputs * most), uninit(positions * self.0.outputs * most), uninit(16 * most));
            for (n, image) in part.images.clone().enumerate() {
                self.transform_input(&x[image * x_len..][..x_len], padded, &mut v, columns, n * per_image, &part.rows);
            }
            for xi in 0..positions {
                // SAFETY: `u_ξ` is `[outputs, inputs]` (read with `u_strides`), `v_ξ`
                // `[inputs, columns]` (rows `positions` apart), `m_ξ` `[outputs, columns]`
                // (the same), all inside their buffers.
                unsafe {
                    gemm(
                        [self.0.outputs, columns, self.0.inputs],
                        m[xi * columns..].as_mut_ptr().cast(),
                        positions * columns,
                        false,
                        (u[xi * self.0.outputs * self.0.inputs..].as_ptr(), u_strides.0, u_strides.1),
                        (v[xi * columns..].as_ptr().cast(), 1, positions * columns),
                        gemm::Parallelism::None,
                    )
                };
            }
            self.transform_output(&m, columns, part, y_ptr, bias, epilogue, &mut pixels);
        });
        // SAFETY: the parts cover every row of every image's output planes.
        unsafe { y.set_len(self.0.batch * y_len) };
        y
    }
}

/// G applied to one column (or row) of a kernel: `α` values of `[f32; 6]` (the rest zero).
fn weight_column<const M: usize>([a, b, c]: [f32; 3]) -> [f32; 6] {
    match M {
        2 => [a, (a + b + c) * 0.5, (a - b + c) * 0.5, c, 0.0, 0.0],
        _ => [a / 4.0, -(a + b + c) / 6.0, -(a - b + c) / 6.0, a / 24.0 + b / 12.0 + c / 6.0, a / 24.0 - b / 12.0 + c / 6.0, c],
    }
}

impl Winograd<2> {
    /// Copies `dy`'s planes (one image) into `grid` (`4·tiles()` floats per plane), the rows
    /// of `tile_rows`: pixel `(r, c)` in segment `(r mod 2, c mod 2)` (of `tiles()` floats) at
    /// `(r / 2)·tiles_wide() + c / 2`, so that a run of tiles is a run of floats; zero where
    /// the tiles reach past the output (never written).
    fn dy_on_grid(&self, dy: &[f32], grid: &mut [f32], tile_rows: &Range<usize>) {
        let (tiles_wide, tiles) = (self.tiles_wide(), self.tiles());
        let rows = 2 * tile_rows.start..(2 * tile_rows.end).min(self.0.height);
        for (plane, target) in dy.chunks_exact(self.0.height * self.0.width).zip(grid.chunks_exact_mut(4 * tiles)) {
            let target = target.as_mut_ptr();
            // SAFETY: the instruction set is the CPU's (`Isa::detect`); each segment row holds
            // `⌈width/2⌉` floats.
            unsafe {
                per_isa!(self.0.isa, V => {
                    for (r, source) in plane.chunks_exact(self.0.width).enumerate().take(rows.end).skip(rows.start) {
                        let at = |c: usize| target.wrapping_add((r % 2 * 2 + c) * tiles + r / 2 * tiles_wide);
                        V::deinterleave(source, at(0), at(1));
                    }
                })
            }
        }
    }

    /// `dM_ξ[out, column + tile] = (A dY Aᵀ)_ξ` for the tiles in `tile_rows` of one image's
    /// output gradient on the grid, into `dm` (`[outputs, 16, columns]`).
    fn transform_output_grad(&self, grid: &[f32], dm: &mut [MaybeUninit<f32>], columns: usize, column: usize, tile_rows: &Range<usize>) {
        let tiles = self.tiles();
        let (start, end) = (tile_rows.start * self.tiles_wide(), tile_rows.end * self.tiles_wide());
        assert!(dm.len() >= 16 * self.0.outputs * columns && grid.len() >= self.0.outputs * 4 * tiles);
        for (output, plane) in grid.chunks_exact(4 * tiles).enumerate() {
            let out = dm[output * 16 * columns + column..].as_mut_ptr().cast::<f32>();
            // SAFETY: the instruction set is the CPU's (`Isa::detect`); reads in the plane's
            // segments, writes in `dm` (asserted above).
            unsafe {
                per_isa!(self.0.isa, V => {
                    for first in (start..end).step_by(V::LANES) {
                        V::output_grad_tiles(plane.as_ptr().add(first), tiles, (end - first).min(V::LANES), out.add(first - start), columns);
                    }
                })
            }
        }
    }

    /// The weight gradient `[outputs, inputs, 3, 3]` from the input `x` and the output
    /// gradient `dy`. Each thread sums `dU` over a share of the batch; the shares are added
    /// and taken back through `Gᵀ dU G` at the end.
    pub(super) fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (x_len, dy_len) = (self.0.inputs * self.0.height * self.0.width, self.0.outputs * self.0.height * self.0.width);
        let u_len = 16 * self.0.outputs * self.0.inputs;
        let shares = threads().min(self.0.batch).max(1);
        let per_share = self.0.batch.div_ceil(shares);
        let (padded_len, grid_len) = (self.padded_plane(), self.0.outputs * 4 * self.tiles());
        let mut partials = vec![0.0f32; shares * u_len];
        let share = |(share, partial): (usize, &mut [f32])| {
            let parts = self.parts(share * per_share..((share + 1) * per_share).min(self.0.batch), per_share);
            let most = parts.iter().map(|part| self.columns(part)).max().unwrap_or(0);
            // Zeroed: the borders of `padded` and `grid` are never written.
            let mut scratch = vec![0.0f32; padded_len + grid_len];
            let (padded, grid) = scratch.split_at_mut(padded_len);
            // Written whole by the transforms before the products read them.
            let (mut v, mut dm) = (uninit(16 * self.0.inputs * most), uninit(16 * self.0.outputs * most));
            for part in &parts {
                let (columns, per_image) = (self.columns(part), part.rows.len() * self.tiles_wide());
                for (n, image) in part.images.clone().enumerate() {
                    self.transform_input(&x[image * x_len..][..x_len], padded, &mut v, columns, n * per_image, &part.rows);
                    self.dy_on_grid(&dy[image * dy_len..][..dy_len], grid, &part.rows);
                    self.transform_output_grad(grid, &mut dm, columns, n * per_image, &part.rows);
                }
                for xi in 0..16 {
                    // SAFETY: `dm_ξ` is `[outputs, columns]`, `v_ξ` `[inputs, columns]` (read
                    // transposed; both with rows 16 apart), `partial_ξ` `[outputs, inputs]`,
                    // all inside their buffers.
                    unsafe {
                        gemm(
                            [self.0.outputs, self.0.inputs, columns],
                            partial[xi * self.0.outputs * self.0.inputs..].as_mut_ptr(),
                            self.0.inputs,
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
        let kernels = self.0.outputs * self.0.inputs;
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

/// A vector type's kernels: its transforms (`transforms!`), and the data movements that
/// shuffle values between lanes: AVX-512's two-source permutes, plain loops on AVX2 (copies,
/// a small part of the time beside the products).
trait Kernels: Lanes {
    /// `V_ξ` of F(2×2, 3×3) for `count` (≤ `LANES`) tiles side by side (`transforms!`).
    ///
    /// # Safety
    /// As `input_tiles_2` in `transforms!`.
    unsafe fn input_tiles_2(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize);
    /// `V_ξ` of F(4×4, 3×3) for `count` (≤ `LANES`) tiles side by side (`transforms!`).
    ///
    /// # Safety
    /// As `input_tiles_4` in `transforms!`.
    unsafe fn input_tiles_4(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize);
    /// `dM_ξ = (A dY Aᵀ)_ξ` for `count` (≤ `LANES`) tiles side by side (`transforms!`).
    ///
    /// # Safety
    /// As `output_grad_tiles` in `transforms!`.
    unsafe fn output_grad_tiles(grid: *const f32, tiles: usize, count: usize, out: *mut f32, stride: usize);
    /// `Y = Aᵀ M A` of F(4×4, 3×3) for `count` (≤ `LANES`) tiles side by side (`transforms!`).
    ///
    /// # Safety
    /// As `output_tiles_4` in `transforms!`.
    unsafe fn output_tiles_4(m: *const f32, stride: usize, count: usize, bias: f32, out: *mut f32, out_stride: usize);

    /// Splits `source` into its even-indexed values (to `even`) and odd-indexed ones (to `odd`).
    ///
    /// # Safety
    /// The instruction set is available; `even` is writable for `⌈len/2⌉` floats, `odd` for
    /// `⌊len/2⌋`.
    unsafe fn deinterleave(source: &[f32], even: *mut f32, odd: *mut f32);

    /// Spreads a row of `width` pixels over the `M + 2` segment rows (`slots`, each `row`
    /// floats) of its padded row: pixel `c` is padded column `c + 1`, so the values at
    /// `c ≡ b - 1 (mod M)` go to `slots[b]` at `c / M` for `b` in `1..=M`, the last of those
    /// (`c ≡ M - 1`) also to `slots[0]` one place on (within the slot's row), and the first
    /// (`c ≡ 0`) also to `slots[M + 1]` one place back (their first value dropped). `lanes`
    /// is `slot_lanes::<M>(width, row)`.
    ///
    /// # Safety
    /// The instruction set is available; `source` is readable for `width` floats, each slot
    /// writable for `row`.
    unsafe fn to_slots<const M: usize>(source: *const f32, width: usize, slots: [*mut f32; 6], lanes: &[SlotLanes], row: usize);

    /// One output row from four runs of `tiles` pixels (`source + c·stride` holding the pixels
    /// `4j + c`): `width` (≤ 4·tiles) floats into `target`, through `finish` (its residual the
    /// row's `width` values).
    ///
    /// # Safety
    /// The instruction set is available; each run is readable for `tiles` floats, `target`
    /// writable for `width`.
    unsafe fn interleave_4(source: *const f32, stride: usize, tiles: usize, target: *mut f32, width: usize, finish: Epilogue<f32>);
}

impl Kernels for Avx512 {
    #[inline(always)]
    unsafe fn input_tiles_2(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx512::input_tiles_2(plane, segment, row, count, out, stride) }
    }
    #[inline(always)]
    unsafe fn input_tiles_4(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx512::input_tiles_4(plane, segment, row, count, out, stride) }
    }
    #[inline(always)]
    unsafe fn output_grad_tiles(grid: *const f32, tiles: usize, count: usize, out: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx512::output_grad_tiles(grid, tiles, count, out, stride) }
    }
    #[inline(always)]
    unsafe fn output_tiles_4(m: *const f32, stride: usize, count: usize, bias: f32, out: *mut f32, out_stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx512::output_tiles_4(m, stride, count, bias, out, out_stride) }
    }
    #[inline(always)]
    unsafe fn deinterleave(source: &[f32], even: *mut f32, odd: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { deinterleave_avx512(source, even, odd) }
    }
    #[inline(always)]
    unsafe fn to_slots<const M: usize>(source: *const f32, _width: usize, slots: [*mut f32; 6], lanes: &[SlotLanes], _row: usize) {
        // SAFETY: the caller's contract.
        unsafe { to_slots_avx512::<M>(source, slots, lanes) }
    }
    #[inline(always)]
    unsafe fn interleave_4(source: *const f32, stride: usize, tiles: usize, target: *mut f32, width: usize, finish: Epilogue<f32>) {
        // SAFETY: the caller's contract.
        unsafe { interleave_4_avx512(source, stride, tiles, target, width, finish) }
    }
}

impl Kernels for Avx2 {
    #[inline(always)]
    unsafe fn input_tiles_2(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx2::input_tiles_2(plane, segment, row, count, out, stride) }
    }
    #[inline(always)]
    unsafe fn input_tiles_4(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx2::input_tiles_4(plane, segment, row, count, out, stride) }
    }
    #[inline(always)]
    unsafe fn output_grad_tiles(grid: *const f32, tiles: usize, count: usize, out: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx2::output_grad_tiles(grid, tiles, count, out, stride) }
    }
    #[inline(always)]
    unsafe fn output_tiles_4(m: *const f32, stride: usize, count: usize, bias: f32, out: *mut f32, out_stride: usize) {
        // SAFETY: the caller's contract.
        unsafe { avx2::output_tiles_4(m, stride, count, bias, out, out_stride) }
    }
    #[inline(always)]
    unsafe fn deinterleave(source: &[f32], even: *mut f32, odd: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { deinterleave_avx2(source, even, odd) }
    }
    #[inline(always)]
    unsafe fn to_slots<const M: usize>(source: *const f32, width: usize, slots: [*mut f32; 6], _lanes: &[SlotLanes], row: usize) {
        // SAFETY: the caller's contract.
        unsafe { to_slots_avx2::<M>(source, width, slots, row) }
    }
    #[inline(always)]
    unsafe fn interleave_4(source: *const f32, stride: usize, tiles: usize, target: *mut f32, width: usize, finish: Epilogue<f32>) {
        // SAFETY: the caller's contract.
        unsafe { interleave_4_avx2(source, stride, tiles, target, width, finish) }
    }
}

/// The transforms' arithmetic for the vectors `$v`, in a module of functions that enable
/// `$feature` (so that their closures, and the intrinsics the vectors' methods call, are
/// compiled for it and inline).
macro_rules! transforms {
    ($module:ident, $v:ty, $feature:literal) => {
        mod $module {
            use super::*;
            type V = $v;

            /// `Bᵀ` of F(2×2, 3×3) applied to four values (a column of the block, or a row).
            #[target_feature(enable = $feature)]
            #[inline]
            fn input_transform_2(d: [V; 4]) -> [V; 4] {
                [d[0].sub(d[2]), d[1].add(d[2]), d[2].sub(d[1]), d[1].sub(d[3])]
            }

            /// `V_ξ` of F(2×2, 3×3) for `count` (≤ `V::LANES`) tiles side by side, into `out[ξ·stride + j]`:
            /// position `(a, b)` of tile `j` read at `plane + (2·(a mod 2) + b)·segment + (a / 2)·row + j`.
            ///
            /// # Safety
            /// `V`'s instruction set is available; those reads are in bounds for `j < count`, and `out`
            /// writable at `ξ·stride + 0..count`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn input_tiles_2(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize) {
                // SAFETY: within the bounds the caller guarantees (masked to `count`).
                let load = |a: usize, b: usize| unsafe { V::load(plane.add((a % 2 * 4 + b) * segment + a / 2 * row), count) };
                // d B (each row's columns combined), then Bᵀ (d B) (the rows combined).
                let t: [[V; 4]; 4] = from_fn(|a| input_transform_2(from_fn(|b| load(a, b))));
                for b in 0..4 {
                    for (a, v) in input_transform_2(from_fn(|a| t[a][b])).into_iter().enumerate() {
                        // SAFETY: within the bounds the caller guarantees.
                        unsafe { v.store(out.add((4 * a + b) * stride), count) };
                    }
                }
            }

            /// `dM_ξ = (A dY Aᵀ)_ξ` for `count` (≤ `V::LANES`) tiles side by side, from the output
            /// gradient's grid (`grid + s·tiles` the segment `s`), into `out[ξ·stride + j]`.
            ///
            /// # Safety
            /// `V`'s instruction set is available; each segment is readable at `0..count`, `out` writable
            /// at `ξ·stride + 0..count`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn output_grad_tiles(grid: *const f32, tiles: usize, count: usize, out: *mut f32, stride: usize) {
                // SAFETY: within the bounds the caller guarantees (masked to `count`).
                let load = |u: usize, c: usize| unsafe { V::load(grid.add((2 * u + c) * tiles), count) };
                let d: [[V; 2]; 2] = from_fn(|u| [load(u, 0), load(u, 1)]);
                // SAFETY: the caller's contract.
                let zero = unsafe { V::splat(0.0) };
                // A dY (rows), then (A dY) Aᵀ (columns).
                let t: [[V; 2]; 4] = [d[0], from_fn(|c| d[0][c].add(d[1][c])), from_fn(|c| d[0][c].sub(d[1][c])), from_fn(|c| zero.sub(d[1][c]))];
                for (a, [even, odd]) in t.into_iter().enumerate() {
                    let v = [even, even.add(odd), even.sub(odd), zero.sub(odd)];
                    for (b, v) in v.into_iter().enumerate() {
                        // SAFETY: within the bounds the caller guarantees.
                        unsafe { v.store(out.add((4 * a + b) * stride), count) };
                    }
                }
            }

            /// `Bᵀ` of F(4×4, 3×3) applied to six values (a column of the block, or a row).
            #[target_feature(enable = $feature)]
            #[inline]
            fn input_transform_4(d: [V; 6], [two, four, five]: [V; 3]) -> [V; 6] {
                let (d31, d42) = (d[3].sub(d[1]), d[4].sub(d[2]));
                [
                    four.mul_add(d[0], five.neg_mul_add(d[2], d[4])),
                    four.neg_mul_add(d[1].add(d[2]), d[3].add(d[4])),
                    four.mul_add(d[1].sub(d[2]), d[4].sub(d[3])),
                    two.mul_add(d31, d42),
                    two.neg_mul_add(d31, d42),
                    four.mul_add(d[1], five.neg_mul_add(d[3], d[5])),
                ]
            }

            /// `Aᵀ` of F(4×4, 3×3) applied to six values (a row of the products, or a column).
            #[target_feature(enable = $feature)]
            #[inline]
            fn output_transform_4(x: [V; 6], [two, four, eight]: [V; 3]) -> [V; 4] {
                let (sum12, difference12) = (x[1].add(x[2]), x[1].sub(x[2]));
                let (sum34, difference34) = (x[3].add(x[4]), x[3].sub(x[4]));
                [x[0].add(sum12).add(sum34), two.mul_add(difference34, difference12), four.mul_add(sum34, sum12), eight.mul_add(difference34, difference12.add(x[5]))]
            }

            /// `V_ξ` of F(4×4, 3×3) for `count` (≤ `V::LANES`) tiles side by side, into `out[ξ·stride + j]`:
            /// position `(a, b)` of tile `j` read at `plane + (6·(a mod 4) + b)·segment + (a / 4)·row + j`.
            ///
            /// # Safety
            /// `V`'s instruction set is available; those reads are in bounds for `j < count`, and `out`
            /// writable at `ξ·stride + 0..count`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn input_tiles_4(plane: *const f32, segment: usize, row: usize, count: usize, out: *mut f32, stride: usize) {
                // Whole vectors compiled apart, `count` a constant there: AVX2's loads and stores
                // then test no count.
                let tiles = |count| Tiles4 { plane, segment, row, count, out, stride };
                // SAFETY: the caller's contract.
                unsafe {
                    if count >= V::LANES {
                        input_tiles_4_of(tiles(V::LANES))
                    } else {
                        input_tiles_4_of(tiles(count))
                    }
                }
            }

            /// The arguments of [`input_tiles_4`].
            #[derive(Clone, Copy)]
            struct Tiles4 {
                plane: *const f32,
                segment: usize,
                row: usize,
                count: usize,
                out: *mut f32,
                stride: usize,
            }

            impl Tiles4 {
                /// Position `(a, b)` of the tiles.
                ///
                /// # Safety
                /// As for [`input_tiles_4`].
                #[inline(always)]
                unsafe fn load(self, a: usize, b: usize) -> V {
                    // SAFETY: within the bounds the caller guarantees (masked to `count`).
                    unsafe { V::load(self.plane.add((a % 4 * 6 + b) * self.segment + a / 4 * self.row), self.count) }
                }

                /// Columns `b` of `d B` (`t[a][k]` for column `b[k]`) through `Bᵀ` over the rows, stored.
                ///
                /// # Safety
                /// As for [`input_tiles_4`].
                #[inline(always)]
                unsafe fn store_columns(self, b: [usize; 2], t: &[[V; 2]; 6], constants: [V; 3]) {
                    for (k, b) in b.into_iter().enumerate() {
                        let column = [t[0][k], t[1][k], t[2][k], t[3][k], t[4][k], t[5][k]];
                        // SAFETY: the instruction set is available (the caller's contract).
                        for (a, v) in unsafe { input_transform_4(column, constants) }.into_iter().enumerate() {
                            // SAFETY: within the bounds the caller guarantees.
                            unsafe { v.store(self.out.add((6 * a + b) * self.stride), self.count) };
                        }
                    }
                }
            }

            /// [`input_tiles_4`]'s work, in straight lines (closures here were calls: each store
            /// reloaded the count and the pointers from the closure's captures).
            ///
            /// # Safety
            /// As for [`input_tiles_4`].
            #[inline(always)]
            unsafe fn input_tiles_4_of(tiles: Tiles4) {
                // SAFETY: the caller's contract.
                let constants @ [two, four, five] = unsafe { [V::splat(2.0), V::splat(4.0), V::splat(5.0)] };
                // Columns of d B two at a time, then Bᵀ over the rows: the whole block would not
                // fit in the registers.
                let mut t = [[two; 2]; 6];
                // SAFETY (each block below): the caller's contract.
                unsafe {
                    for (a, t) in t.iter_mut().enumerate() {
                        *t = [
                            four.mul_add(tiles.load(a, 0), five.neg_mul_add(tiles.load(a, 2), tiles.load(a, 4))),
                            four.mul_add(tiles.load(a, 1), five.neg_mul_add(tiles.load(a, 3), tiles.load(a, 5))),
                        ];
                    }
                    tiles.store_columns([0, 5], &t, constants);
                    for (a, t) in t.iter_mut().enumerate() {
                        let d = [tiles.load(a, 1), tiles.load(a, 2), tiles.load(a, 3), tiles.load(a, 4)];
                        *t = [four.neg_mul_add(d[0].add(d[1]), d[2].add(d[3])), four.mul_add(d[0].sub(d[1]), d[3].sub(d[2]))];
                    }
                    tiles.store_columns([1, 2], &t, constants);
                    for (a, t) in t.iter_mut().enumerate() {
                        let d = [tiles.load(a, 1), tiles.load(a, 2), tiles.load(a, 3), tiles.load(a, 4)];
                        let (d31, d42) = (d[2].sub(d[0]), d[3].sub(d[1]));
                        *t = [two.mul_add(d31, d42), two.neg_mul_add(d31, d42)];
                    }
                    tiles.store_columns([3, 4], &t, constants);
                }
            }

            /// `Y = Aᵀ M A` of F(4×4, 3×3) for `count` (≤ `V::LANES`) tiles side by side, from
            /// `m[ξ·stride + j]`, plus `bias`: pixel `(r, c)` of tile `j` to `out[(4r + c)·out_stride + j]`.
            ///
            /// # Safety
            /// `V`'s instruction set is available; `m` is readable at `ξ·stride + 0..count`, `out`
            /// writable at `p·out_stride + 0..count` for the 16 pixels `p`.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn output_tiles_4(m: *const f32, stride: usize, count: usize, bias: f32, out: *mut f32, out_stride: usize) {
                // Whole vectors compiled apart, as in `input_tiles_4`. SAFETY: the caller's contract.
                unsafe {
                    if count >= V::LANES {
                        output_tiles_4_of(m, stride, V::LANES, bias, out, out_stride)
                    } else {
                        output_tiles_4_of(m, stride, count, bias, out, out_stride)
                    }
                }
            }

            /// [`output_tiles_4`]'s work, without closures (as `input_tiles_4_of`).
            ///
            /// # Safety
            /// As for [`output_tiles_4`].
            #[inline(always)]
            unsafe fn output_tiles_4_of(m: *const f32, stride: usize, count: usize, bias: f32, out: *mut f32, out_stride: usize) {
                // SAFETY: the caller's contract.
                let (constants, bias) = unsafe { ([V::splat(2.0), V::splat(4.0), V::splat(8.0)], V::splat(bias)) };
                // M A (each row's columns combined).
                let mut s = [[bias; 4]; 6];
                for (a, s) in s.iter_mut().enumerate() {
                    let mut x = [bias; 6];
                    for (b, x) in x.iter_mut().enumerate() {
                        // SAFETY: within the bounds the caller guarantees (masked to `count`).
                        *x = unsafe { V::load(m.add((6 * a + b) * stride), count) };
                    }
                    // SAFETY: the instruction set is available (the caller's contract).
                    *s = unsafe { output_transform_4(x, constants) };
                }
                // Aᵀ (M A), column by column.
                for c in 0..4 {
                    let column = [s[0][c], s[1][c], s[2][c], s[3][c], s[4][c], s[5][c]];
                    // SAFETY: as above.
                    for (r, y) in unsafe { output_transform_4(column, constants) }.into_iter().enumerate() {
                        // SAFETY: within the bounds the caller guarantees.
                        unsafe { y.add(bias).store(out.add((4 * r + c) * out_stride), count) };
                    }
                }
            }
        }
    };
}
transforms!(avx512, Avx512, "avx512f");
transforms!(avx2, Avx2, "avx2,fma");

/// [`Kernels::deinterleave`] on AVX-512.
///
/// # Safety
/// As there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(source: &[f32], even: *mut f32, odd: *mut f32) {
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (block, values) in source.chunks(32).enumerate() {
        let n = values.len();
        // SAFETY: the loads are masked to `values`, the stores to the halves' lengths.
        unsafe {
            let low = _mm512_maskz_loadu_ps(mask16(n), values.as_ptr());
            let high = _mm512_maskz_loadu_ps(mask16(n.saturating_sub(16)), values.as_ptr().add(n.min(16)));
            _mm512_mask_storeu_ps(even.add(16 * block), mask16(n.div_ceil(2)), _mm512_permutex2var_ps(low, evens, high));
            _mm512_mask_storeu_ps(odd.add(16 * block), mask16(n / 2), _mm512_permutex2var_ps(low, odds, high));
        }
    }
}

/// The lanes that `to_slots` loads and stores for one block of `16·M` pixels of a row.
struct SlotLanes {
    load: [u16; 4],
    store: [u16; 6],
}

/// `to_slots`' lanes for the blocks of a row of `width` pixels into slot rows of `row`.
fn slot_lanes<const M: usize>(width: usize, row: usize) -> Vec<SlotLanes> {
    // Lanes `skip..count` of block `block`'s 16.
    let between = |block: usize, skip: usize, count: usize| {
        let first = |n: usize| mask16(n.saturating_sub(16 * block));
        first(count) & !first(skip)
    };
    let phase = |k: usize| width.saturating_sub(k).div_ceil(M);
    (0..width.div_ceil(16 * M))
        .map(|block| {
            let n = width - 16 * M * block;
            SlotLanes {
                load: from_fn(|q| if q < M { mask16(n.saturating_sub(16 * q)) } else { 0 }),
                store: from_fn(|b| match b {
                    0 => between(block, 0, phase(M - 1).min(row - 1)),
                    b if b <= M => between(block, 0, phase(b - 1)),
                    b if b == M + 1 => between(block, 1, phase(0)),
                    _ => 0,
                }),
            }
        })
        .collect()
}

/// [`Kernels::to_slots`] on AVX-512: `16·M` pixels a block, the phases of a block split by
/// permutes and stored with `lanes`' masks.
///
/// # Safety
/// As there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn to_slots_avx512<const M: usize>(source: *const f32, slots: [*mut f32; 6], lanes: &[SlotLanes]) {
    for (block, lanes) in lanes.iter().enumerate() {
        let source = source.wrapping_add(16 * M * block);
        // SAFETY: the loads are masked to the row.
        let v: [__m512; 4] = from_fn(|q| unsafe { _mm512_maskz_loadu_ps(lanes.load[q], source.wrapping_add(16 * q)) });
        let phases: [__m512; 4] = from_fn(|k| {
            let k = k as i32;
            match M {
                2 => _mm512_permutex2var_ps(v[0], _mm512_setr_epi32(k, k + 2, k + 4, k + 6, k + 8, k + 10, k + 12, k + 14, k + 16, k + 18, k + 20, k + 22, k + 24, k + 26, k + 28, k + 30), v[1]),
                _ => {
                    // Phase k of two vectors in the low eight lanes; two such halves put together.
                    let pick = _mm512_setr_epi32(k, k + 4, k + 8, k + 12, k + 16, k + 20, k + 24, k + 28, 0, 0, 0, 0, 0, 0, 0, 0);
                    _mm512_shuffle_f32x4::<0b01_00_01_00>(_mm512_permutex2var_ps(v[0], pick, v[1]), _mm512_permutex2var_ps(v[2], pick, v[3]))
                }
            }
        });
        let at = |slot: usize, shift: isize| slots[slot].wrapping_add(16 * block).wrapping_offset(shift);
        // SAFETY: the stores are masked to the phases' values of the block, inside the slots'
        // rows (the caller's contract).
        unsafe {
            for k in 0..M {
                _mm512_mask_storeu_ps(at(k + 1, 0), lanes.store[k + 1], phases[k]);
            }
            _mm512_mask_storeu_ps(at(0, 1), lanes.store[0], phases[M - 1]);
            _mm512_mask_storeu_ps(at(M + 1, -1), lanes.store[M + 1], phases[0]);
        }
    }
}

/// [`Kernels::interleave_4`] on AVX-512: 16 tiles' 64 pixels at a time.
///
/// # Safety
/// As there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_4_avx512(source: *const f32, stride: usize, tiles: usize, target: *mut f32, width: usize, finish: Epilogue<f32>) {
    assert!(finish.residual.is_none_or(|residual| residual.len() >= width));
    let pairs_low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let pairs_high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let quads_low = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    let quads_high = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    for first in (0..tiles).step_by(16) {
        let mask = mask16(tiles - first);
        // SAFETY: within the bounds the caller guarantees (masked to `tiles`).
        let c: [__m512; 4] = from_fn(|c| unsafe { _mm512_maskz_loadu_ps(mask, source.add(c * stride + first)) });
        // Pixels 4j and 4j + 1 interleaved, and 4j + 2 and 4j + 3; then the pairs interleaved.
        let (first_pairs, second_pairs) = (_mm512_permutex2var_ps(c[0], pairs_low, c[1]), _mm512_permutex2var_ps(c[0], pairs_high, c[1]));
        let (third_pairs, fourth_pairs) = (_mm512_permutex2var_ps(c[2], pairs_low, c[3]), _mm512_permutex2var_ps(c[2], pairs_high, c[3]));
        let out = [
            _mm512_permutex2var_ps(first_pairs, quads_low, third_pairs),
            _mm512_permutex2var_ps(first_pairs, quads_high, third_pairs),
            _mm512_permutex2var_ps(second_pairs, quads_low, fourth_pairs),
            _mm512_permutex2var_ps(second_pairs, quads_high, fourth_pairs),
        ];
        let pixels = width.saturating_sub(4 * first);
        for (q, mut out) in out.into_iter().enumerate() {
            let (at, mask) = (4 * first + 16 * q, mask16(pixels.saturating_sub(16 * q)));
            if let Some(residual) = finish.residual {
                // SAFETY: masked to `width`, which the residual's row holds (asserted above).
                out = _mm512_add_ps(out, unsafe { _mm512_maskz_loadu_ps(mask, residual.as_ptr().wrapping_add(at)) });
            }
            if finish.relu {
                // Kept where above zero or NaN (not "less than or equal", unordered).
                out = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLE_UQ>(out, _mm512_setzero_ps()), out);
            }
            // SAFETY: within the bounds the caller guarantees (masked to `width`).
            unsafe { _mm512_mask_storeu_ps(target.wrapping_add(at), mask, out) };
        }
    }
}

/// [`Kernels::deinterleave`] on AVX2: a plain loop.
///
/// # Safety
/// As there.
#[target_feature(enable = "avx2,fma")]
unsafe fn deinterleave_avx2(source: &[f32], even: *mut f32, odd: *mut f32) {
    for (i, pair) in source.chunks(2).enumerate() {
        // SAFETY: `i < ⌈len/2⌉`, and `i < ⌊len/2⌋` where the pair is whole (the contract).
        unsafe {
            *even.add(i) = pair[0];
            if let Some(&value) = pair.get(1) {
                *odd.add(i) = value;
            }
        }
    }
}

/// [`Kernels::to_slots`] on AVX2: a plain loop per slot (strided reads, contiguous writes,
/// no branches).
///
/// # Safety
/// As there.
#[target_feature(enable = "avx2,fma")]
unsafe fn to_slots_avx2<const M: usize>(source: *const f32, width: usize, slots: [*mut f32; 6], row: usize) {
    // SAFETY (each loop): the pixels read are below `width`, and the places written below
    // `⌈width / M⌉ = row` (the tiles of a row).
    unsafe {
        // Pixel `M·j + k` to slot `k + 1` at `j`.
        for k in 0..M {
            for j in 0..width.saturating_sub(k).div_ceil(M) {
                *slots[k + 1].add(j) = *source.add(M * j + k);
            }
        }
        // Pixel `M·j + M - 1` also to slot 0 at `j + 1`, inside the slot's row.
        for j in 0..width.saturating_sub(M - 1).div_ceil(M).min(row.saturating_sub(1)) {
            *slots[0].add(j + 1) = *source.add(M * j + M - 1);
        }
        // Pixel `M·(j + 1)` also to slot `M + 1` at `j`.
        for j in 0..width.div_ceil(M).saturating_sub(1) {
            *slots[M + 1].add(j) = *source.add(M * (j + 1));
        }
    }
}

/// [`Kernels::interleave_4`] on AVX2: 8 tiles' 32 pixels at a time, a 4 × 8 transpose by
/// unpacks, shuffles and lane swaps; the last pixels of a row one by one.
///
/// # Safety
/// As there.
#[target_feature(enable = "avx2,fma")]
unsafe fn interleave_4_avx2(source: *const f32, stride: usize, tiles: usize, target: *mut f32, width: usize, finish: Epilogue<f32>) {
    assert!(width <= 4 * tiles && finish.residual.is_none_or(|residual| residual.len() >= width));
    let finish_one = |value: f32, p: usize| {
        let value = finish.residual.map_or(value, |residual| value + residual[p]);
        // Kept where above zero or NaN, as on AVX-512.
        if finish.relu && value <= 0.0 { 0.0 } else { value }
    };
    let whole = width / 32 * 8;
    for first in (0..whole).step_by(8) {
        // SAFETY: tiles `first..first + 8` are below `width / 4 ≤ tiles`, pixels
        // `4·first..4·first + 32` below `width` (the residual's too, asserted).
        unsafe {
            let c: [__m256; 4] = from_fn(|c| _mm256_loadu_ps(source.add(c * stride + first)));
            let (t0, t1) = (_mm256_unpacklo_ps(c[0], c[1]), _mm256_unpackhi_ps(c[0], c[1]));
            let (t2, t3) = (_mm256_unpacklo_ps(c[2], c[3]), _mm256_unpackhi_ps(c[2], c[3]));
            // Tiles (0, 4), (1, 5), (2, 6), (3, 7): each a tile's four pixels per 128-bit half.
            let u = [
                _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2),
                _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2),
                _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3),
                _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3),
            ];
            let out = [
                _mm256_permute2f128_ps::<0x20>(u[0], u[1]),
                _mm256_permute2f128_ps::<0x20>(u[2], u[3]),
                _mm256_permute2f128_ps::<0x31>(u[0], u[1]),
                _mm256_permute2f128_ps::<0x31>(u[2], u[3]),
            ];
            for (q, mut out) in out.into_iter().enumerate() {
                let at = 4 * first + 8 * q;
                if let Some(residual) = finish.residual {
                    out = _mm256_add_ps(out, _mm256_loadu_ps(residual.as_ptr().add(at)));
                }
                if finish.relu {
                    out = _mm256_and_ps(out, _mm256_cmp_ps::<_CMP_NLE_UQ>(out, _mm256_setzero_ps()));
                }
                _mm256_storeu_ps(target.add(at), out);
            }
        }
    }
    for p in 4 * whole..width {
        // SAFETY: `p / 4 < tiles` (asserted), `p < width` (the contract).
        unsafe { *target.add(p) = finish_one(*source.add(p % 4 * stride + p / 4), p) };
    }
}
