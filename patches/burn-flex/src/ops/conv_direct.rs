//! 3×3, stride-1 convolutions with one pixel of zero padding on each side (the output as
//! large as the input), in f32 on AVX-512 and AVX2 machines, computed directly from a
//! zero-padded copy of each image (Vitrine's patch; see `PATCH.md` at the crate root).
//!
//! im2col + gemm copies each image nine times into a column matrix, then gemm packs that
//! matrix again before its microkernel reads it: in `resnet-small`'s convolutions (one
//! thread) the microkernel had ~60% of the time, the copies, packing and zeroing the rest.
//! Here the microkernel reads the padded image in place: an output pixel `q` of the padded
//! grid (rows `width + 2` long) at kernel position `(kh, kw)` reads the padded plane at
//! `q + kh·(width + 2) + kw`, one constant shift per kernel position, so a run of 16 output
//! pixels is one unaligned vector load. The two padding columns of each grid row are
//! computed and dropped. Registers hold 8 output channels × 48 pixels (AVX2's 16 registers: 4
//! channels × 24 pixels, four passes per block); the weights are packed once per operation, 8
//! output channels side by side.
//!
//! The input gradient of such a convolution is the same kind of convolution of the output
//! gradient, with the weight's two channel axes swapped and its kernel turned by 180°. The
//! weight gradient reads the padded input the same way against the output gradient laid on
//! the grid: registers hold 3 output channels × 9 kernel positions as 16-lane sums over a run
//! of images (AVX2: one channel at a time, 8-lane sums), whose lanes are added up at the end.

use alloc::vec;
use alloc::vec::Vec;

use super::kernel_shared::{Epilogue, SharedMut, for_each_task, threads};
use super::lanes::Isa;

/// Output channels per register block.
const CHANNELS: usize = 8;
/// Vectors of 16 pixels per register block.
const VECTORS: usize = 3;
/// Pixels per register block.
const PIXELS: usize = 16 * VECTORS;
/// Output channels per register block of the weight gradient (× 9 kernel positions).
const GRADIENT_OUTPUTS: usize = 3;
/// Images whose sums one weight-gradient register block runs through before it adds its
/// registers to the vector sums in memory.
const GRADIENT_IMAGES: usize = 8;

/// A 3×3 convolution with stride 1 and padding 1 from `[batch, inputs, height, width]` to
/// `[batch, outputs, height, width]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Same3x3 {
    pub batch: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub height: usize,
    pub width: usize,
    /// The vector instructions the kernels run on.
    pub isa: Isa,
}

/// How the weight tensor is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Weights {
    /// `[outputs, inputs, 3, 3]`: the convolution itself.
    AsGiven,
    /// `[inputs, outputs, 3, 3]`, channel axes swapped and the kernel turned by 180°: the
    /// input gradient of the convolution the tensor belongs to.
    Adjoint,
}

impl Same3x3 {
    /// The convolution that computes this one's input gradient: the channel counts swapped
    /// (read with `Weights::Adjoint`).
    pub(super) fn adjoint(self) -> Self {
        Self { inputs: self.outputs, outputs: self.inputs, ..self }
    }

    /// Whether at least three quarters of the pixels the register blocks compute are output
    /// pixels (28×28: 91%, 14×14: 82%, 7×7: 51%, where im2col + gemm is faster), and there is
    /// an image for each thread (with fewer, im2col + gemm shares an image's rows out; here
    /// an image is one task).
    pub(super) fn worthwhile(&self) -> bool {
        4 * self.height * self.width >= 3 * self.grid() && self.batch >= threads()
    }

    /// Row length of the padded plane and of the output grid.
    fn row(&self) -> usize {
        self.width + 2
    }

    /// Register blocks of output pixels per image (the grid is `height` rows of `row()`).
    fn pixel_blocks(&self) -> usize {
        (self.height * self.row()).div_ceil(PIXELS)
    }

    /// Floats per plane of the output grid: `pixel_blocks()` register blocks.
    fn grid(&self) -> usize {
        self.pixel_blocks() * PIXELS
    }

    /// Floats per padded plane: the image with its border, and room for the last block's
    /// reads past the grid (the kernel's farthest shift is `2·row + 2`).
    fn plane(&self) -> usize {
        ((self.height + 2) * self.row()).max(self.grid() + 2 * self.row() + 2)
    }

    /// `[output block, input, kernel position, 8 outputs]`, zero past the last output.
    fn pack(&self, w: &[f32], weights: Weights) -> Vec<f32> {
        let blocks = self.outputs.div_ceil(CHANNELS);
        let mut packed = vec![0.0; blocks * self.inputs * 9 * CHANNELS];
        // Nested loops, not one index split by division: the divisions were a quarter of
        // `fashion-cnn`'s inference at batch 1 (one thread), where a call is one image.
        for block in 0..blocks {
            for input in 0..self.inputs {
                for position in 0..9 {
                    let at = ((block * self.inputs + input) * 9 + position) * CHANNELS;
                    for (lane, value) in packed[at..at + CHANNELS].iter_mut().enumerate() {
                        let output = block * CHANNELS + lane;
                        if output < self.outputs {
                            *value = match weights {
                                Weights::AsGiven => w[(output * self.inputs + input) * 9 + position],
                                Weights::Adjoint => w[(input * self.outputs + output) * 9 + 8 - position],
                            };
                        }
                    }
                }
            }
        }
        packed
    }

    /// The convolution of `x` (`[batch, inputs, height, width]`), plus each output channel's
    /// `bias`, then the `epilogue`: `[batch, outputs, height, width]`. Call only where
    /// the CPU has `self.isa`.
    pub(super) fn run(&self, x: &[f32], w: &[f32], weights: Weights, bias: Option<&[f32]>, epilogue: Epilogue<f32>) -> Vec<f32> {
        let packed = self.pack(w, weights);
        let (plane_len, out_len) = (self.height * self.width, self.outputs * self.height * self.width);
        let blocks = self.outputs.div_ceil(CHANNELS);
        let mut y = Vec::<f32>::with_capacity(self.batch * out_len);
        let y_ptr = SharedMut(y.as_mut_ptr());
        let grid = self.grid();
        let block_kernel: RegisterBlock = match self.isa {
            Isa::Avx512 => register_block,
            Isa::Avx2 => register_block_avx2,
        };
        // `staged`: each block's 8 output planes on the grid, all of it written by the blocks.
        for_each_task(self.batch, CHANNELS * grid, |image, staged: &mut [f32]| {
            let padded = self.pad(&x[image * self.inputs * plane_len..][..self.inputs * plane_len]);
            for block in 0..blocks {
                let weights = &packed[block * self.inputs * 9 * CHANNELS..][..self.inputs * 9 * CHANNELS];
                for pixels in 0..self.pixel_blocks() {
                    // SAFETY: the CPU has `self.isa` (the caller's contract); the block reads
                    // `padded` up to `pixels·48 + 48 + 2·row + 2 ≤ plane` per input and writes
                    // `staged` within its 8 rows of `grid`.
                    unsafe {
                        block_kernel(
                            padded[pixels * PIXELS..].as_ptr(),
                            self.plane(),
                            self.inputs,
                            self.row(),
                            weights.as_ptr(),
                            staged[pixels * PIXELS..].as_mut_ptr(),
                            grid,
                        )
                    };
                }
                let y_ptr = y_ptr;
                for lane in 0..CHANNELS.min(self.outputs - block * CHANNELS) {
                    let channel = block * CHANNELS + lane;
                    let output = image * out_len + channel * plane_len;
                    // SAFETY: each (image, output channel) plane is written by one task.
                    let target = unsafe { y_ptr.uninit(output..output + plane_len) };
                    let rows = target.chunks_exact_mut(self.width).zip(staged[lane * grid..].chunks(self.row()));
                    // The bias is added here, while the plane is in cache, rather than in a
                    // pass over the whole output afterwards.
                    match bias.map(|bias| bias[channel]) {
                        Some(bias) => rows.for_each(|(target, source)| {
                            for (t, s) in target.iter_mut().zip(source) {
                                t.write(s + bias);
                            }
                        }),
                        None => rows.for_each(|(target, source)| {
                            for (t, s) in target.iter_mut().zip(source) {
                                t.write(*s);
                            }
                        }),
                    }
                    if !epilogue.is_none() {
                        // SAFETY: the plane written just above, by this task alone.
                        epilogue.finish(unsafe { y_ptr.slice(output..output + plane_len) }, output);
                    }
                }
            }
        });
        // SAFETY: every (image, output channel) plane was written whole above.
        unsafe { y.set_len(self.batch * out_len) };
        y
    }

    /// The weight gradient `[outputs, inputs, 3, 3]` from the input `x` and the output
    /// gradient `dy`: `dW[o, i, kh, kw] = Σ_q dy[o, q] · x_padded[i, q + kh·row + kw]` over the
    /// grid, `dy` put on the grid with zeros in its padding columns. Each thread sums a share
    /// of the batch, still as 16-lane vectors, and the lanes and shares are added at the end.
    /// Call only where the CPU has `self.isa`, and `weight_grad_fits()`.
    pub(super) fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (plane_len, grid) = (self.height * self.width, self.grid());
        let blocks = self.outputs.div_ceil(GRADIENT_OUTPUTS);
        let partial_len = blocks * self.inputs * GRADIENT_OUTPUTS * 9 * 16;
        let shares = threads().min(self.batch).max(1);
        let per_share = self.batch.div_ceil(shares);
        let mut partials = vec![0.0f32; shares * partial_len];
        let gradient_kernel: WeightBlock = match self.isa {
            Isa::Avx512 => weight_block,
            Isa::Avx2 => weight_block_avx2,
        };
        let share = |(share, partial): (usize, &mut [f32])| {
            let images = share * per_share..((share + 1) * per_share).min(self.batch);
            for first in images.clone().step_by(GRADIENT_IMAGES) {
                let batch = first..(first + GRADIENT_IMAGES).min(images.end);
                let (x_len, dy_len) = (self.inputs * plane_len, self.outputs * plane_len);
                let padded: Vec<Vec<f32>> = batch.clone().map(|image| self.pad(&x[image * x_len..][..x_len])).collect();
                let dy_grids: Vec<Vec<f32>> =
                    batch.clone().map(|image| self.on_grid(&dy[image * dy_len..][..dy_len], blocks * GRADIENT_OUTPUTS)).collect();
                let sources: Vec<(*const f32, *const f32)> =
                    dy_grids.iter().zip(&padded).map(|(dy, x)| (dy.as_ptr(), x.as_ptr())).collect();
                for block in 0..blocks {
                    for input in 0..self.inputs {
                        let at = (block * self.inputs + input) * GRADIENT_OUTPUTS * 9 * 16;
                        let offsets = (block * GRADIENT_OUTPUTS * grid, input * self.plane());
                        // SAFETY: the CPU has `self.isa` (the caller's contract); the reads stay in
                        // each `dy_grids` entry's three rows of `grid` from `offsets.0` and in the
                        // input's padded plane from `offsets.1` (`grid + 2·row + 2 ≤ plane`), the
                        // writes in this block's 27 vectors.
                        unsafe {
                            gradient_kernel(&sources, offsets, grid, self.row(), grid / 16, partial[at..].as_mut_ptr())
                        };
                    }
                }
            }
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            partials.par_chunks_mut(partial_len).enumerate().for_each(share);
        }
        #[cfg(not(feature = "rayon"))]
        partials.chunks_mut(partial_len).enumerate().for_each(share);
        let mut dw = vec![0.0f32; self.outputs * self.inputs * 9];
        for (at, dw) in dw.iter_mut().enumerate() {
            let (position, input, output) = (at % 9, at / 9 % self.inputs, at / (9 * self.inputs));
            let (block, lane) = (output / GRADIENT_OUTPUTS, output % GRADIENT_OUTPUTS);
            let vector = ((block * self.inputs + input) * GRADIENT_OUTPUTS + lane) * 9 + position;
            *dw = partials.chunks_exact(partial_len).map(|p| p[vector * 16..][..16].iter().sum::<f32>()).sum();
        }
        dw
    }

    /// Whether each thread's vector sums of the weight gradient stay within 8 MiB.
    pub(super) fn weight_grad_fits(&self) -> bool {
        self.outputs.div_ceil(GRADIENT_OUTPUTS) * GRADIENT_OUTPUTS * self.inputs * 9 * 16 * 4 <= 8 << 20
    }

    /// The image's planes with a border of zeros, `plane()` floats each.
    fn pad(&self, image: &[f32]) -> Vec<f32> {
        self.on_rows(image, self.inputs, self.plane(), self.row() + 1)
    }

    /// `dy`'s planes on the grid (`pixel_blocks()·48` floats each), zero in the padding
    /// columns and past the last row; `channels` planes, zero past `dy`'s.
    fn on_grid(&self, dy: &[f32], channels: usize) -> Vec<f32> {
        self.on_rows(dy, channels, self.grid(), 0)
    }

    /// `count` zeroed planes of `len` floats with the `height × width` planes of `planes`
    /// copied in, row `r` at `start + r·row()`.
    fn on_rows(&self, planes: &[f32], count: usize, len: usize, start: usize) -> Vec<f32> {
        let mut target = vec![0.0f32; count * len];
        for (source, target) in planes.chunks_exact(self.height * self.width).zip(target.chunks_exact_mut(len)) {
            for (r, source) in source.chunks_exact(self.width).enumerate() {
                target[start + r * self.row()..][..self.width].copy_from_slice(source);
            }
        }
        target
    }
}

/// A register block's kernel for one instruction set: [`register_block`]'s arguments.
type RegisterBlock = unsafe fn(*const f32, usize, usize, usize, *const f32, *mut f32, usize);

/// A weight-gradient block's kernel for one instruction set: [`weight_block`]'s arguments.
type WeightBlock = unsafe fn(&[(*const f32, *const f32)], (usize, usize), usize, usize, usize, *mut f32);

/// 8 output channels × 48 pixels of the grid: `out[lane·out_stride + p] = Σ_{input, kh, kw}
/// weights[(input·9 + kh·3 + kw)·8 + lane] · x[input·plane + p + kh·row + kw]`.
///
/// # Safety
/// AVX-512F is available; `x` is readable for `(inputs - 1)·plane + 2·row + 2 + 48` floats,
/// `weights` for `inputs·72`, `out` writable at `lane·out_stride + 0..48` for each lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn register_block(
    x: *const f32,
    plane: usize,
    inputs: usize,
    row: usize,
    weights: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    use core::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); VECTORS]; CHANNELS];
    for input in 0..inputs {
        // SAFETY: within the bounds the caller guarantees.
        unsafe {
            let x = x.add(input * plane);
            let weights = weights.add(input * 9 * CHANNELS);
            for position in 0..9 {
                let source = x.add(position / 3 * row + position % 3);
                let pixels: [__m512; VECTORS] = core::array::from_fn(|v| _mm512_loadu_ps(source.add(16 * v)));
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let weight = _mm512_set1_ps(*weights.add(position * CHANNELS + lane));
                    for (acc, pixels) in acc.iter_mut().zip(&pixels) {
                        *acc = _mm512_fmadd_ps(weight, *pixels, *acc);
                    }
                }
            }
        }
    }
    for (lane, acc) in acc.iter().enumerate() {
        for (v, acc) in acc.iter().enumerate() {
            // SAFETY: within the bounds the caller guarantees.
            unsafe { _mm512_storeu_ps(out.add(lane * out_stride + 16 * v), *acc) };
        }
    }
}

/// The weight gradient's sums for 3 output channels and one input over the grids of a few
/// images, 16 pixels at a time: for each image's `(dy, x)`, shifted by `offsets`,
/// `partial[(lane·9 + kh·3 + kw)·16 + j] += Σ_s dy[lane·dy_stride + 16s + j] · x[16s + j +
/// kh·row + kw]` for `s < steps`.
///
/// # Safety
/// AVX-512F is available; each `dy + offsets.0` is readable at `lane·dy_stride + 0..16·steps`
/// for each lane, each `x + offsets.1` for `16·steps + 2·row + 2` floats, `partial` readable and
/// writable for 432 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_block(
    images: &[(*const f32, *const f32)],
    offsets: (usize, usize),
    dy_stride: usize,
    row: usize,
    steps: usize,
    partial: *mut f32,
) {
    use core::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 9]; GRADIENT_OUTPUTS];
    for &(dy, x) in images {
        // SAFETY: within the bounds the caller guarantees.
        let (dy, x) = unsafe { (dy.add(offsets.0), x.add(offsets.1)) };
        for step in 0..steps {
            // SAFETY: within the bounds the caller guarantees.
            unsafe {
                let at = 16 * step;
                let gradient: [__m512; GRADIENT_OUTPUTS] =
                    core::array::from_fn(|lane| _mm512_loadu_ps(dy.add(lane * dy_stride + at)));
                for position in 0..9 {
                    let pixels = _mm512_loadu_ps(x.add(at + position / 3 * row + position % 3));
                    for (acc, gradient) in acc.iter_mut().zip(&gradient) {
                        acc[position] = _mm512_fmadd_ps(*gradient, pixels, acc[position]);
                    }
                }
            }
        }
    }
    for (lane, acc) in acc.iter().enumerate() {
        for (position, acc) in acc.iter().enumerate() {
            // SAFETY: within the bounds the caller guarantees.
            unsafe {
                let at = partial.add((lane * 9 + position) * 16);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *acc));
            }
        }
    }
}

/// [`register_block`] with AVX2: its 16 registers hold 4 output channels × 24 pixels (12 sums,
/// 3 vectors of pixels and a weight), so the block is four passes over the inputs, each
/// channel half reading its 4 lanes of the packed weights.
///
/// # Safety
/// AVX2 and FMA are available; the bounds are `register_block`'s.
#[target_feature(enable = "avx2,fma")]
unsafe fn register_block_avx2(
    x: *const f32,
    plane: usize,
    inputs: usize,
    row: usize,
    weights: *const f32,
    out: *mut f32,
    out_stride: usize,
) {
    use core::arch::x86_64::*;
    const HALF: usize = CHANNELS / 2;
    for half in 0..2 {
        for part in 0..2 {
            let mut acc = [[_mm256_setzero_ps(); 3]; HALF];
            for input in 0..inputs {
                // SAFETY: within the bounds the caller guarantees (the pass reads pixels
                // `24·part..24·part + 24` of the block, and its half of the 8 weight lanes).
                unsafe {
                    let x = x.add(input * plane + 24 * part);
                    let weights = weights.add(input * 9 * CHANNELS + HALF * half);
                    for position in 0..9 {
                        let source = x.add(position / 3 * row + position % 3);
                        let pixels: [__m256; 3] = core::array::from_fn(|v| _mm256_loadu_ps(source.add(8 * v)));
                        for (lane, acc) in acc.iter_mut().enumerate() {
                            let weight = _mm256_broadcast_ss(&*weights.add(position * CHANNELS + lane));
                            for (acc, pixels) in acc.iter_mut().zip(&pixels) {
                                *acc = _mm256_fmadd_ps(weight, *pixels, *acc);
                            }
                        }
                    }
                }
            }
            for (lane, acc) in acc.iter().enumerate() {
                for (v, acc) in acc.iter().enumerate() {
                    // SAFETY: within the bounds the caller guarantees.
                    unsafe { _mm256_storeu_ps(out.add((HALF * half + lane) * out_stride + 24 * part + 8 * v), *acc) };
                }
            }
        }
    }
}

/// [`weight_block`] with AVX2: one output channel at a time (9 sums in registers), each
/// 16-pixel step as two vectors of 8 into the same sums, which go into the first 8 lanes of
/// the channel's 16-lane vectors in `partial` (all 16 are added up at the end).
///
/// # Safety
/// AVX2 and FMA are available; the bounds are `weight_block`'s.
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_block_avx2(
    images: &[(*const f32, *const f32)],
    offsets: (usize, usize),
    dy_stride: usize,
    row: usize,
    steps: usize,
    partial: *mut f32,
) {
    use core::arch::x86_64::*;
    for lane in 0..GRADIENT_OUTPUTS {
        let mut acc = [_mm256_setzero_ps(); 9];
        for &(dy, x) in images {
            // SAFETY: within the bounds the caller guarantees.
            let (dy, x) = unsafe { (dy.add(offsets.0 + lane * dy_stride), x.add(offsets.1)) };
            for at in (0..16 * steps).step_by(8) {
                // SAFETY: within the bounds the caller guarantees.
                unsafe {
                    let gradient = _mm256_loadu_ps(dy.add(at));
                    for (position, acc) in acc.iter_mut().enumerate() {
                        let pixels = _mm256_loadu_ps(x.add(at + position / 3 * row + position % 3));
                        *acc = _mm256_fmadd_ps(gradient, pixels, *acc);
                    }
                }
            }
        }
        for (position, acc) in acc.iter().enumerate() {
            // SAFETY: within the bounds the caller guarantees.
            unsafe {
                let at = partial.add((lane * 9 + position) * 16);
                _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), *acc));
            }
        }
    }
}
