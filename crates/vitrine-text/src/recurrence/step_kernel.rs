//! A recurrent step at inference as one matrix product whose epilogue is the cell update, for
//! x86-64 with AVX-512. A step's gate inputs, `[x_t, h_{t-1}]` times the packed input and
//! recurrent weights plus the biases, are summed in registers a few rows by 16 hidden units
//! (every gate of those units) at a time and turned into the new state there: no gate buffer
//! written and read back, no input projections computed ahead, and the weights packed once per
//! call instead of by `gemm` at every product.
//!
//! Where a table holds each token's input projections (`token_projections.rs`), the sums start
//! from a row of it and only the recurrent products remain.
//!
//! Four sums a row and unit: an LSTM's gates i, f, g, o, each over x and h; a GRU's r and z over
//! x and h, and its n gate's input part and recurrent part apart, since r scales the recurrent
//! one (`n = tanh(x·W_in + b_in + r ⊙ (h·W_hn + b_hn))`).

use std::arch::x86_64::*;

/// Hidden units a tile covers: one AVX-512 vector per gate.
const UNITS: usize = 16;
/// Rows a tile covers: 6 rows × 4 sums, 4 weight vectors and a broadcast fill 29 of the 32
/// vector registers.
const ROWS: usize = 6;

/// One direction's weights, packed for [`step`]: for each block of 16 hidden units, for each of
/// the `input + hidden` inputs (x then h), the weights of those units' gates side by side (16 per
/// gate, PyTorch's gate order); the biases likewise, four vectors per block (an LSTM's four
/// gates, `b_ih + b_hh`; a GRU's r and z, `b_ih + b_hh`, then `b_in` and `b_hn`).
pub struct PackedCell {
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// 4 for an LSTM, 3 for a GRU.
    gates: usize,
    input: usize,
    hidden: usize,
}

impl PackedCell {
    /// Whether [`step`] runs here: AVX-512, and hidden units a multiple of 16.
    pub fn available(hidden: usize) -> bool {
        hidden > 0 && hidden.is_multiple_of(UNITS) && std::is_x86_feature_detected!("avx512f")
    }

    /// From `w_ih` `[input, G·h]` and `w_hh` `[h, G·h]` (PyTorch's weights transposed) and the
    /// biases `[G·h]`; `gates` G is 4 for an LSTM, 3 for a GRU.
    pub fn new(gates: usize, w_ih: &[f32], w_hh: &[f32], b_ih: &[f32], b_hh: &[f32], input: usize, hidden: usize) -> Self {
        assert!(hidden.is_multiple_of(UNITS) && (gates == 3 || gates == 4), "an LSTM or a GRU of hidden units a multiple of {UNITS}");
        let g = gates * hidden;
        assert!(w_ih.len() == input * g && w_hh.len() == hidden * g && b_ih.len() == g && b_hh.len() == g, "weights of matching sizes");
        let mut weights = Vec::with_capacity((input + hidden) * g);
        let mut bias = Vec::with_capacity(4 * hidden);
        for unit in (0..hidden).step_by(UNITS) {
            for row in w_ih.chunks_exact(g).chain(w_hh.chunks_exact(g)) {
                for gate in 0..gates {
                    weights.extend_from_slice(&row[gate * hidden + unit..][..UNITS]);
                }
            }
            let units = |b: &[f32], gate: usize| b[gate * hidden + unit..][..UNITS].to_vec();
            let sum = |gate: usize| units(b_ih, gate).iter().zip(units(b_hh, gate)).map(|(a, b)| a + b).collect::<Vec<_>>();
            let [first, second] = [sum(0), sum(1)];
            let [third, fourth] = if gates == 4 { [sum(2), sum(3)] } else { [units(b_ih, 2), units(b_hh, 2)] };
            for part in [first, second, third, fourth] {
                bias.extend(part);
            }
        }
        Self { weights, bias, gates, input, hidden }
    }

    /// The recurrent half alone, for steps whose input sums are looked up
    /// ([`StepInputs::Looked`]): `w_hh` `[h, G·h]` and `b_hh` `[G·h]`.
    pub fn recurrent(gates: usize, w_hh: &[f32], b_hh: &[f32], hidden: usize) -> Self {
        Self::new(gates, &[], w_hh, &vec![0.0; gates * hidden], b_hh, 0, hidden)
    }

    /// The scratch [`step`] needs for a batch of `batch` rows (kept across the steps).
    pub fn scratch(batch: usize) -> Vec<f32> {
        vec![0.0; batch * 4 * UNITS]
    }
}

/// Where a step's input sums come from.
#[derive(Clone, Copy)]
pub enum StepInputs<'a> {
    /// The step's inputs `[batch, input]`, times the packed input weights.
    Embedded(&'a [f32]),
    /// Each row's token's projection, `x·W_ih + b_ih` of its embedding made ahead: row `tokens[b]`
    /// of `table` `[vocabulary, G·h]` (PyTorch's gate order). The cell is packed without input
    /// weights or `b_ih` ([`PackedCell::recurrent`]).
    Looked { table: &'a [f32], tokens: &'a [u32] },
}

/// One step for a batch: `inputs` the step's inputs, `h` `[batch, hidden]` the state before it,
/// `h_next` gets the state after it, `c` `[batch, hidden]` an LSTM's cell state, updated (a GRU
/// leaves it alone), `partial` the scratch of [`PackedCell::scratch`]. A row whose `real` is
/// false (padding) carries the state over. Row `b`'s output (its new state, 0 at
/// padding) goes to the `hidden` values at `out + b·out_stride`.
///
/// # Safety
/// [`PackedCell::available`]; `out + b·out_stride` has room for `hidden` values for each row,
/// written by this thread alone.
#[allow(clippy::too_many_arguments)]
pub unsafe fn step(
    packed: &PackedCell,
    inputs: StepInputs,
    h: &[f32],
    h_next: &mut [f32],
    c: &mut [f32],
    partial: &mut [f32],
    real: impl Fn(usize) -> bool,
    out: *mut f32,
    out_stride: usize,
) {
    let PackedCell { gates, input, hidden, .. } = *packed;
    let batch = h.len() / hidden;
    let x = match inputs {
        StepInputs::Embedded(x) => x,
        StepInputs::Looked { table, tokens } => {
            assert!(input == 0 && tokens.len() == batch && table.len().is_multiple_of(gates * hidden), "a table for a cell packed without input weights");
            &[]
        }
    };
    assert!(x.len() == batch * input && h_next.len() == h.len() && c.len() == h.len() && partial.len() == batch * 4 * UNITS, "rows of matching sizes");
    let per_block = (input + hidden) * gates * UNITS;
    // Each block in two passes over the rows, the x products of every tile (their sums kept in
    // `partial`), then the h products and the update: each half of the block's weights (32 KB
    // for `text-lstm-attn`) stays in the L1 cache through its pass, where the whole block (64 KB)
    // did not (the step alone, timed: 123–129 → 137 GFLOP/s).
    for (block, unit) in (0..hidden).step_by(UNITS).enumerate() {
        let weights = &packed.weights[block * per_block..][..per_block];
        let bias = &packed.bias[block * 4 * UNITS..][..4 * UNITS];
        let passes = match inputs {
            StepInputs::Embedded(_) => &[Pass::Inputs, Pass::Recurrent][..],
            StepInputs::Looked { .. } => &[Pass::Recurrent],
        };
        for (pass, first) in passes.iter().copied().flat_map(|pass| (0..batch).step_by(ROWS).map(move |first| (pass, first))) {
            let rows = ROWS.min(batch - first);
            let state = |v: &[f32], width: usize| v[first * width..][..rows * width].as_ptr();
            let mut tile = Tile {
                x: state(x, input),
                h: state(h, hidden),
                c: c[first * hidden..][..rows * hidden].as_mut_ptr(),
                h_next: h_next[first * hidden..][..rows * hidden].as_mut_ptr(),
                // SAFETY: the caller's: row b's output has room for `hidden` values.
                out: unsafe { out.add(first * out_stride) },
                out_stride,
                real: std::array::from_fn(|r| r < rows && real(first + r)),
                input,
                hidden,
                unit,
                partial: partial[first * 4 * UNITS..][..rows * 4 * UNITS].as_mut_ptr(),
                looked_up: match inputs {
                    StepInputs::Embedded(_) => None,
                    StepInputs::Looked { table, tokens } => Some(std::array::from_fn(|r| {
                        let token = tokens[first + r.min(rows - 1)] as usize;
                        table[token * gates * hidden..][..gates * hidden].as_ptr()
                    })),
                },
                pass,
            };
            let weights = (weights, bias);
            // SAFETY: AVX-512 (the caller's); the tile's pointers reach `rows` rows of their
            // buffers, whose `unit..unit + 16` values it reads and writes, and nothing else does
            // while it runs; the weights are the block's, `gates` vectors per input.
            unsafe {
                match gates {
                    4 => run_rows::<4>(rows, weights, &mut tile),
                    _ => run_rows::<3>(rows, weights, &mut tile),
                }
            }
        }
    }
}

/// A tile's half of the work (see [`step`]).
#[derive(Clone, Copy)]
enum Pass {
    /// The bias plus the products with `x`, into `partial`.
    Inputs,
    /// `partial` plus the products with `h`, then the cell update.
    Recurrent,
}

/// [`run`] for a tile of `rows` rows.
///
/// # Safety
/// As [`run`]'s.
unsafe fn run_rows<const G: usize>(rows: usize, weights: (&[f32], &[f32]), tile: &mut Tile) {
    // SAFETY: the caller's.
    unsafe {
        match rows {
            6 => run::<6, G>(weights, tile),
            5 => run::<5, G>(weights, tile),
            4 => run::<4, G>(weights, tile),
            3 => run::<3, G>(weights, tile),
            2 => run::<2, G>(weights, tile),
            _ => run::<1, G>(weights, tile),
        }
    }
}

/// The rows of one tile: `x` and `h` (row r at `r·input`, `r·hidden`) read, the 16 units from
/// `unit` of `c`, `h_next` (row r at `r·hidden`) and `out` (at `r·out_stride`) written, `partial`
/// both.
struct Tile {
    x: *const f32,
    h: *const f32,
    c: *mut f32,
    h_next: *mut f32,
    out: *mut f32,
    out_stride: usize,
    real: [bool; ROWS],
    input: usize,
    hidden: usize,
    unit: usize,
    /// The tile's sums between the passes, `4·16` a row.
    partial: *mut f32,
    /// With [`StepInputs::Looked`], each row's token's row of the table (`G·hidden` values), read
    /// instead of `partial`.
    looked_up: Option<[*const f32; ROWS]>,
    pass: Pass,
}

/// One tile of `R` rows by 16 units of a cell of `G` gates, one of its [`Pass`]es: the four sums
/// of each row in registers (the bias and the products with the row's `x`; then those and the
/// products with its `h`), then the cell update there.
///
/// # Safety
/// AVX-512; the tile's pointers as [`Tile`] says; `weights` the block's, `(input + hidden)·G·16`.
#[target_feature(enable = "avx512f")]
unsafe fn run<const R: usize, const G: usize>((weights, bias): (&[f32], &[f32]), tile: &mut Tile) {
    let Tile { input, hidden, unit, .. } = *tile;
    assert!(weights.len() == (input + hidden) * G * UNITS && bias.len() == 4 * UNITS, "a block's weights");
    // An LSTM's gates take both parts; a GRU's x part goes to r, z and n's input sum, its h part
    // to r, z and n's recurrent sum.
    let from_x: [usize; G] = std::array::from_fn(|q| q);
    let from_h: [usize; G] = std::array::from_fn(|q| if G == 3 && q == 2 { 3 } else { q });
    // SAFETY (every load and store below): inside the slices by the sizes asserted above, inside
    // the tile's rows by the caller's word.
    unsafe {
        let b = bias.as_ptr();
        let w = weights.as_ptr();
        if let Pass::Inputs = tile.pass {
            let mut acc: [[__m512; 4]; R] = [[0, 1, 2, 3].map(|q| _mm512_loadu_ps(b.add(q * UNITS))); R];
            add_products(&mut acc, tile.x, input, w, from_x);
            for (r, sums) in acc.into_iter().enumerate() {
                for q in 0..4 {
                    _mm512_storeu_ps(tile.partial.add((r * 4 + q) * UNITS), sums[q]);
                }
            }
            return;
        }
        let mut acc: [[__m512; 4]; R] = match tile.looked_up {
            // The bias and the row's projection (a GRU's fourth sum, n's recurrent part: the bias).
            Some(rows) => std::array::from_fn(|r| {
                std::array::from_fn(|q| {
                    let bias = _mm512_loadu_ps(b.add(q * UNITS));
                    if q < G { _mm512_add_ps(bias, _mm512_loadu_ps(rows[r].add(q * hidden + unit))) } else { bias }
                })
            }),
            None => std::array::from_fn(|r| std::array::from_fn(|q| _mm512_loadu_ps(tile.partial.add((r * 4 + q) * UNITS)))),
        };
        add_products(&mut acc, tile.h, hidden, w.add(input * G * UNITS), from_h);
        for (r, sums) in acc.into_iter().enumerate() {
            let at = r * hidden + unit;
            let (h, h_next, out) = (tile.h.add(at), tile.h_next.add(at), tile.out.add(r * tile.out_stride + unit));
            if !tile.real[r] {
                _mm512_storeu_ps(h_next, _mm512_loadu_ps(h));
                _mm512_storeu_ps(out, _mm512_setzero_ps());
                continue;
            }
            let state = if G == 4 {
                let [i, f, g, o] = sums;
                let c = tile.c.add(at);
                let cell = _mm512_fmadd_ps(sigmoid(f), _mm512_loadu_ps(c), _mm512_mul_ps(sigmoid(i), tanh(g)));
                _mm512_storeu_ps(c, cell);
                _mm512_mul_ps(sigmoid(o), tanh(cell))
            } else {
                let [r, z, n_x, n_h] = sums;
                let n = tanh(_mm512_fmadd_ps(sigmoid(r), n_h, n_x));
                // h' = n + z·(h - n)
                _mm512_fmadd_ps(sigmoid(z), _mm512_sub_ps(_mm512_loadu_ps(h), n), n)
            };
            _mm512_storeu_ps(h_next, state);
            _mm512_storeu_ps(out, state);
        }
    }
}

/// `acc[r][targets[q]]` += row r of `rows` (`width` values each) times the `width` rows of `G`
/// weight vectors at `w` (vector q of each row).
///
/// # Safety
/// AVX-512; `R` rows of `width` values at `rows`, `width·G·16` weights at `w`.
#[inline(always)]
unsafe fn add_products<const R: usize, const G: usize>(acc: &mut [[__m512; 4]; R], rows: *const f32, width: usize, w: *const f32, targets: [usize; G]) {
    // SAFETY: the caller's.
    unsafe {
        for k in 0..width {
            let wv: [__m512; G] = std::array::from_fn(|q| _mm512_loadu_ps(w.add((k * G + q) * UNITS)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*rows.add(r * width + k));
                for q in 0..G {
                    acc[targets[q]] = _mm512_fmadd_ps(v, wv[q], acc[targets[q]]);
                }
            }
        }
    }
}

/// e^x by `fast_math::exp_f32`'s reduction and polynomial (Cephes'), in fused multiply-adds, 2ⁿ
/// applied by `scalef`, which saturates to 0 and +inf by itself.
#[inline]
#[allow(clippy::excessive_precision)] // Cephes' constants as written
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    let splat = _mm512_set1_ps;
    // NaN passes: with a NaN operand min and max give their second one.
    let x = _mm512_min_ps(splat(88.722_84), _mm512_max_ps(splat(-104.0), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, splat(std::f32::consts::LOG2_E)));
    let r = _mm512_fmadd_ps(n, splat(2.121_944_4e-4), _mm512_fnmadd_ps(n, splat(0.693_359_375), x));
    let mut p = splat(1.987_569_1e-4);
    for coefficient in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, splat(coefficient));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), splat(1.0));
    _mm512_scalef_ps(y, n)
}

/// 1 / (1 + e^-x).
#[inline]
#[target_feature(enable = "avx512f")]
fn sigmoid(x: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    _mm512_div_ps(one, _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), x))))
}

/// tanh as `fast_math::tanh_f32`: its odd polynomial below |x| = 0.625, 1 - 2/(e^2x + 1) above.
#[inline]
#[allow(clippy::excessive_precision)] // Cephes' constants as written
#[target_feature(enable = "avx512f")]
fn tanh(x: __m512) -> __m512 {
    let splat = _mm512_set1_ps;
    let z = _mm512_mul_ps(x, x);
    let mut p = splat(-5.704_988_7e-3);
    for coefficient in [2.063_908_9e-2, -5.373_971_6e-2, 0.133_314_42, -0.333_332_82] {
        p = _mm512_fmadd_ps(p, z, splat(coefficient));
    }
    let small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
    let large = _mm512_sub_ps(splat(1.0), _mm512_div_ps(splat(2.0), _mm512_add_ps(exp(_mm512_add_ps(x, x)), splat(1.0))));
    let near_zero = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(x), splat(0.625));
    _mm512_mask_blend_ps(near_zero, large, small)
}
