// Tried on 2026-12-07 and dropped (not in the build): im2col of stride-2 rows by two loads and
// a shuffle instead of gather instructions, for patches/burn-flex/src/ops/conv_gemm.rs, where
// im2col and im2col_images called stride2_im2col first. Level with the gathers on Zen 4 (AVX-512),
// slower on the AVX2 code: see README.md, "Batch 1: the weights as given, the batch norm folded
// in rows". A second variant (s2b in alternate.txt) stored whole vectors where col went on.

/// One run of up to a vector's width of output columns along a stride-2 row of `im2col`:
/// output column `out_col + j` reads input column `start + 2j`. Bit `l` of `lanes` says whether
/// input column `start + l` is inside the row and among those read (the rest load as zero).
#[derive(Clone, Copy)]
struct Stride2Run {
    out_col: usize,
    start: isize,
    lanes: u32,
    count: usize,
}

/// The runs of `width` output columns (16 or 8) along kernel column `kw`'s rows.
fn stride2_runs(g: &Geometry, kw: usize, width: usize) -> Vec<Stride2Run> {
    (0..g.out[1])
        .step_by(width)
        .map(|out_col| {
            let count = (g.out[1] - out_col).min(width);
            let start = (out_col * 2 + kw * g.dilation[1]) as isize - g.padding[1] as isize;
            let read = |l: usize| l < 2 * count - 1 && (0..g.width as isize).contains(&(start + l as isize));
            let lanes = (0..2 * width).filter(|&l| read(l)).fold(0, |lanes, l| lanes | 1 << l);
            Stride2Run { out_col, start, lanes, count }
        })
        .collect()
}

/// `im2col` for convolutions with a column stride of 2, row by row: an output row reads every
/// other value of one input row, so two loads and a shuffle fetch a vector of them, where the
/// gather instructions fetched each on its own (`gather_avx512`: 11.7% of `conv-ae`'s
/// inference on Zen 4). Writes channels `channels` of `images` images side by side, output
/// rows `rows` (`im2col` is one image's tile of rows, `im2col_images` several whole images).
/// `false` where it does not apply: other strides or element types, no AVX-512 or AVX2.
fn stride2_im2col<T: Scalar>(g: &Geometry, x: &[T], channels: core::ops::Range<usize>, images: usize, rows: (usize, usize), col: &mut [T]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if g.stride[1] == 2 && T::dtype() == DType::F32 {
        let (x, col) = (bytemuck::cast_slice::<T, f32>(x), bytemuck::cast_slice_mut::<T, f32>(col));
        let per_image = (rows.1 - rows.0) * g.out[1];
        assert!(rows.1 <= g.out[0] && images >= 1 && channels.end <= g.channels_in);
        assert!(x.len() >= (images - 1) * g.image_len() + channels.end * g.height * g.width);
        assert!(col.len() >= channels.len() * g.kernel[0] * g.kernel[1] * images * per_image);
        match Isa::detect() {
            // SAFETY: the CPU has the instruction set; the slices' lengths are asserted above.
            Some(Isa::Avx512) => unsafe { stride2_im2col_avx512(g, x, channels, images, rows, col) },
            // SAFETY: as above.
            Some(Isa::Avx2) => unsafe { stride2_im2col_avx2(g, x, channels, images, rows, col) },
            None => return false,
        }
        return true;
    }
    false
}

/// Calls `row(run, input row, out)` for every run of every output row that [`stride2_im2col`]
/// writes, in the order of `col`'s elements; `input row` is `None` where the kernel overhangs
/// the image (the run's outputs are zero).
///
/// # Safety
/// The lengths [`stride2_im2col`] asserts.
#[inline(always)]
unsafe fn for_each_stride2_run(
    g: &Geometry,
    x: &[f32],
    channels: core::ops::Range<usize>,
    images: usize,
    rows: (usize, usize),
    col: &mut [f32],
    runs: &[Vec<Stride2Run>],
    mut row: impl FnMut(&Stride2Run, Option<*const f32>, *mut f32),
) {
    let plane_len = g.height * g.width;
    let mut out = col.as_mut_ptr();
    for c in channels {
        for kh in 0..g.kernel[0] {
            for runs in runs {
                for image in 0..images {
                    let plane = x[image * g.image_len() + c * plane_len..].as_ptr();
                    for oh in rows.0..rows.1 {
                        // SAFETY: the row is inside the plane (`input_row`), and `out` walks `col`'s asserted length.
                        let input = g.input_row(oh, kh).map(|ih| unsafe { plane.add(ih * g.width) });
                        for run in runs {
                            row(run, input, unsafe { out.add(run.out_col) });
                        }
                        out = unsafe { out.add(g.out[1]) };
                    }
                }
            }
        }
    }
}

/// [`stride2_im2col`] with AVX-512: 16 output columns a run.
///
/// # Safety
/// AVX-512F is available; the lengths [`stride2_im2col`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stride2_im2col_avx512(g: &Geometry, x: &[f32], channels: core::ops::Range<usize>, images: usize, rows: (usize, usize), col: &mut [f32]) {
    use core::arch::x86_64::*;
    let runs: Vec<_> = (0..g.kernel[1]).map(|kw| stride2_runs(g, kw, 16)).collect();
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // SAFETY: the loads read only lanes inside the input row (`Stride2Run::lanes`), the
    // stores a run's own outputs.
    unsafe {
        for_each_stride2_run(g, x, channels, images, rows, col, &runs, |run, input, out| {
            let values = match input {
                Some(row) => {
                    let at = row.wrapping_offset(run.start);
                    let low = _mm512_maskz_loadu_ps(run.lanes as u16, at);
                    let high = _mm512_maskz_loadu_ps((run.lanes >> 16) as u16, at.wrapping_add(16));
                    _mm512_permutex2var_ps(low, evens, high)
                }
                None => _mm512_setzero_ps(),
            };
            _mm512_mask_storeu_ps(out, ((1u32 << run.count) - 1) as u16, values);
        });
    }
}

/// [`stride2_im2col`] with AVX2: 8 output columns a run. A run of fewer than 8 stores all 8
/// lanes where `col` goes on past them (the next rows overwrite the extra lanes, as `col` is
/// written in order) and through a buffer at its end: `vmaskmovps` is a slow store on AMD's cores.
///
/// # Safety
/// AVX2 is available; the lengths [`stride2_im2col`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stride2_im2col_avx2(g: &Geometry, x: &[f32], channels: core::ops::Range<usize>, images: usize, rows: (usize, usize), col: &mut [f32]) {
    use core::arch::x86_64::*;
    let runs: Vec<_> = (0..g.kernel[1]).map(|kw| stride2_runs(g, kw, 8)).collect();
    let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let mask = |lanes: u32| _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(lanes as i32), bits), bits);
    let end = col.as_mut_ptr_range().end;
    // SAFETY: the loads read only lanes inside the input row (`Stride2Run::lanes`); a store of
    // 8 lanes is inside `col` (checked against its end), past the run's outputs only onto
    // elements written later.
    unsafe {
        for_each_stride2_run(g, x, channels, images, rows, col, &runs, |run, input, out| {
            let values = match input {
                Some(row) => {
                    let at = row.wrapping_offset(run.start);
                    let low = _mm256_maskload_ps(at, mask(run.lanes & 0xff));
                    let high = _mm256_maskload_ps(at.wrapping_add(8), mask(run.lanes >> 8));
                    // Per 128-bit half: low 0 2, high 0 2 | low 4 6, high 4 6; then the pairs in order.
                    let pairs = _mm256_shuffle_ps::<0b10_00_10_00>(low, high);
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(pairs)))
                }
                None => _mm256_setzero_ps(),
            };
            if run.count == 8 || out.add(8) <= end {
                _mm256_storeu_ps(out, values);
            } else {
                let mut last = [0f32; 8];
                _mm256_storeu_ps(last.as_mut_ptr(), values);
                core::ptr::copy_nonoverlapping(last.as_ptr(), out, run.count);
            }
        });
    }
}
