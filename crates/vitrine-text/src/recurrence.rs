//! The recurrence of a bidirectional LSTM or GRU layer as one operation on burn's `flex` CPU
//! backend, forward and backward. Composed of tensor operations, each time step costs some twenty
//! small operations and as many autodiff nodes, which is most of a recurrent model's training time
//! on the CPU. Here a step is one matrix product and one pass over the gates per direction, the two
//! directions run on the two halves of the thread pool, and the backward pass adds each step's
//! share of the recurrent weight gradient while that step's gradients are in the cache. At
//! inference the input projections are computed inside the recurrence too, a few steps at a time
//! ([`fused_inference`]); on AVX-512 inside each step's product, whose epilogue is the cell
//! update ([`step_kernel`]); over token embeddings, once it pays, the input projections are rows
//! of a table made for the whole vocabulary ([`looked_up_inference`], `token_projections.rs`).
//! Big buffers are written once, where they end up, never zeroed first.
//!
//! Layouts: `gx` `[batch, len, 2·G·h]` holds the input projections (with `bias_ih`) of the
//! forward direction then the reverse one, as one matrix product gives them; `w_hh` `[2, h, G·h]`
//! is PyTorch's `weight_hh` of each direction transposed; `b_hh` `[2, G·h]`; `mask`
//! `[batch, len]` is 1 at a real token and 0 at padding, where the state carries over and the
//! output is 0. The output is `[batch, len, 2·h]`, the two directions side by side as PyTorch's
//! bidirectional layers give them. The reverse direction reads the sequence from its end, so it
//! starts at each text's last real token. Gates in PyTorch's order: i, f, g, o for an LSTM
//! (G = 4), r, z, n for a GRU (G = 3). Inside, each direction keeps its own time-major buffers.

use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
// Branch-free e^x-based activations that vectorise (added by Vitrine's burn-flex patch).
use burn::backend::flex::ops::fast_math::{sigmoid_f32 as sigmoid, tanh_f32 as tanh};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use gemm::{Parallelism, gemm};
use vitrine_core::compiled_per_cpu;

pub mod gpu;
#[cfg(target_arch = "x86_64")]
mod step_kernel;
mod token_projections;

pub use token_projections::{Table, TokenProjections};

/// Whether [`fused_recurrence`] runs on this device: `flex`, with or without autodiff, unless
/// `VITRINE_UNFUSED_RECURRENCE` is set (to measure one against the other).
pub fn fuses(device: &Device) -> bool {
    !unfused_by_request() && vitrine_core::backend::is_flex(device)
}

/// `VITRINE_UNFUSED_RECURRENCE` set: every backend composes the recurrence from tensor operations.
fn unfused_by_request() -> bool {
    static UNFUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNFUSED.get_or_init(|| std::env::var_os("VITRINE_UNFUSED_RECURRENCE").is_some())
}

/// Inference (no autodiff) on `flex` in f32: the input projections are not computed for the
/// whole sequence first but inside each direction's thread, a few steps at a time
/// ([`PROJECTED_ROWS`]) just before those steps run: a batch of 64 texts of 64 tokens has 16 MB of
/// them, which the steps then waited on (a prefetch of each row was 8% of the time), while a block
/// of a few steps stays in the core's cache. `w_ih` `[2, input, G·h]` is PyTorch's `weight_ih` of
/// each direction transposed, `b_ih` `[2, G·h]`; the rest as in [`fused_recurrence`]. `None`
/// elsewhere.
pub fn fused_inference(
    x: &Tensor<3>,
    w_ih: &Tensor<3>,
    b_ih: &Tensor<2>,
    w_hh: &Tensor<3>,
    b_hh: &Tensor<2>,
    mask: &Tensor<2>,
    gates: usize,
) -> Option<Tensor<3>> {
    let device = x.device();
    if !fuses(&device) || device.is_autodiff() || x.dtype() != DType::F32 || x.dims()[1] == 0 {
        return None;
    }
    let [batch, len, input] = x.dims();
    let dims = Dims { batch, len, hidden: w_hh.dims()[1], gates };
    let plain = |t: Tensor<3>| t.try_into_primitive::<Flex>().ok().map(|t| t.to_contiguous());
    // Time-major, so that a block of steps' inputs is one block of rows.
    let [x, w_ih, b_ih, w_hh, b_hh, mask] = [
        plain(x.clone().swap_dims(0, 1))?,
        plain(w_ih.clone())?,
        plain(b_ih.clone().unsqueeze())?,
        plain(w_hh.clone())?,
        plain(b_hh.clone().unsqueeze())?,
        plain(mask.clone().unsqueeze())?,
    ];
    // A few rows keep the row-by-row products: one row a tile is load-bound (GRU batch-1
    // inference 1,933 → 1,656 texts/s through the step kernel).
    #[cfg(target_arch = "x86_64")]
    if batch > FEW_ROWS && step_kernel::PackedCell::available(dims.hidden) {
        let [x, w_ih, b_ih, w_hh, b_hh, mask] = [&x, &w_ih, &b_ih, &w_hh, &b_hh, &mask].map(|t| t.as_slice::<f32>().expect("f32"));
        return Some(Tensor::from_primitive::<Flex>(step_kernel_inference(&dims, Fresh::Raw { x, w_ih, b_ih, input }, [w_hh, b_hh], mask)));
    }
    let inputs = Inputs::Fresh(Fresh::Raw { x: x.as_slice::<f32>()?, w_ih: w_ih.as_slice::<f32>()?, b_ih: b_ih.as_slice::<f32>()?, input });
    let (out, _) = forward(&dims, inputs, &w_hh, &b_hh, &mask, false);
    Some(Tensor::from_primitive::<Flex>(out))
}

/// Runs the recurrence as one operation, with its backward pass, when the tensors live on `flex`
/// with autodiff in f32; `None` elsewhere, where the caller composes it from tensor operations
/// (or, without autodiff, calls [`fused_inference`]).
pub fn fused_recurrence(gx: &Tensor<3>, w_hh: &Tensor<3>, b_hh: &Tensor<2>, mask: &Tensor<2>, gates: usize) -> Option<Tensor<3>> {
    let device = gx.device();
    if !fuses(&device) || !device.is_autodiff() || gx.dtype() != DType::F32 || gx.dims()[1] == 0 {
        return None;
    }
    let [batch, len, _] = gx.dims();
    let dims = Dims { batch, len, hidden: w_hh.dims()[1], gates };
    let tracked = |t: Tensor<3>| t.try_into_primitive::<Autodiff<Flex>>().ok();
    let [gx, w_hh, b_hh, mask] = [tracked(gx.clone())?, tracked(w_hh.clone())?, tracked(b_hh.clone().unsqueeze())?, tracked(mask.clone().unsqueeze())?];
    let mask = mask.into_primitive();
    let out = match RecurrenceBackward.prepare::<NoCheckpointing>([gx.node(), w_hh.node(), b_hh.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let gx = gx.into_primitive().to_contiguous();
            let (out, saved) =
                forward(&dims, Inputs::Projected(gx.as_slice::<f32>().expect("f32")), &w_hh.into_primitive(), &b_hh.into_primitive(), &mask, true);
            prep.finish(Arc::new(saved.expect("kept when asked")), out)
        }
        OpsKind::UnTracked(prep) => {
            let gx = gx.into_primitive().to_contiguous();
            let (out, _) = forward(&dims, Inputs::Projected(gx.as_slice::<f32>().expect("f32")), &w_hh.into_primitive(), &b_hh.into_primitive(), &mask, false);
            prep.finish(out)
        }
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// [`fused_inference`] from token ids, each step's input projections looked up in `table`
/// ([`TokenProjections`]) instead of computed: `ids` `[batch, len]`, the rest as there. `None`
/// off `flex`, where the table is not this cell's, or where an id falls outside it.
pub fn looked_up_inference(table: &Table, ids: &Tensor<2, Int>, w_hh: &Tensor<3>, b_hh: &Tensor<2>, mask: &Tensor<2>, gates: usize) -> Option<Tensor<3>> {
    let device = ids.device();
    let [batch, len] = ids.dims();
    let hidden = w_hh.dims()[1];
    if !fuses(&device) || device.is_autodiff() || len == 0 || table.width != gates * hidden {
        return None;
    }
    let dims = Dims { batch, len, hidden, gates };
    // Time-major: each step's tokens side by side.
    let ids = ids.clone().into_data().iter::<i64>().collect::<Vec<_>>();
    let mut tokens = vec![0u32; batch * len];
    for (b, text) in ids.chunks_exact(len).enumerate() {
        for (t, &id) in text.iter().enumerate() {
            tokens[t * batch + b] = u32::try_from(id).ok().filter(|&id| (id as usize) < table.vocabulary)?;
        }
    }
    let plain = |t: Tensor<3>| t.try_into_primitive::<Flex>().ok().map(|t| t.to_contiguous());
    let [w_hh, b_hh, mask] = [plain(w_hh.clone())?, plain(b_hh.clone().unsqueeze())?, plain(mask.clone().unsqueeze())?];
    let inputs = Fresh::Looked { table, tokens: &tokens };
    #[cfg(target_arch = "x86_64")]
    if batch > FEW_ROWS && step_kernel::PackedCell::available(hidden) {
        let [w_hh, b_hh, mask] = [&w_hh, &b_hh, &mask].map(|t| t.as_slice::<f32>().expect("f32"));
        return Some(Tensor::from_primitive::<Flex>(step_kernel_inference(&dims, inputs, [w_hh, b_hh], mask)));
    }
    let (out, _) = forward(&dims, Inputs::Fresh(inputs), &w_hh, &b_hh, &mask, false);
    Some(Tensor::from_primitive::<Flex>(out))
}

/// Inference on AVX-512: each direction's steps through [`step_kernel`], the input projections
/// (`Fresh::Raw`, `x` `[len, batch, input]`) and the cell update inside each step's product, or
/// the projections looked up (`Fresh::Looked`); `w_hh`, `b_hh` and `mask` as [`forward`] has
/// them.
#[cfg(target_arch = "x86_64")]
fn step_kernel_inference(dims: &Dims, inputs: Fresh, [w_hh, b_hh]: [&[f32]; 2], mask: &[f32]) -> FlexTensor {
    use step_kernel::{PackedCell, StepInputs};
    let Dims { len, batch, hidden: h, gates } = *dims;
    let g = gates * h;
    let mut out = Vec::with_capacity(2 * dims.block(h));
    let out_rows = SideBySide::new(&mut out, dims, h);
    let direction = |d: usize| {
        let (w_hh, b_hh) = (&w_hh[d * h * g..][..h * g], &b_hh[d * g..][..g]);
        let packed = match inputs {
            Fresh::Raw { w_ih, b_ih, input, .. } => PackedCell::new(gates, &w_ih[d * input * g..][..input * g], w_hh, &b_ih[d * g..][..g], b_hh, input, h),
            Fresh::Looked { .. } => PackedCell::recurrent(gates, w_hh, b_hh, h),
        };
        let (mut state, mut next, mut cell) = (vec![0.0; batch * h], vec![0.0; batch * h], vec![0.0; batch * h]);
        let mut partial = PackedCell::scratch(batch);
        for t in 0..len {
            let time = dims.time(d, t);
            if let (Fresh::Looked { table, tokens }, true) = (inputs, t + 1 < len) {
                // The next step's rows, scattered over the table, while this step runs.
                let rows = table.direction(d);
                for &token in &tokens[dims.time(d, t + 1) * batch..][..batch] {
                    prefetch_l2(&rows[token as usize * g..][..g]);
                }
            }
            let step_inputs = match inputs {
                Fresh::Raw { x, input, .. } => StepInputs::Embedded(&x[time * batch * input..][..batch * input]),
                Fresh::Looked { table, tokens } => StepInputs::Looked { table: table.direction(d), tokens: &tokens[time * batch..][..batch] },
            };
            // SAFETY: the caller checked `PackedCell::available`; direction d's rows at token
            // `time` have room for h values each, a stride apart, and only this thread writes them.
            unsafe {
                step_kernel::step(
                    &packed,
                    step_inputs,
                    &state,
                    &mut next,
                    &mut cell,
                    &mut partial,
                    |b| mask[b * len + time] != 0.0,
                    out_rows.at(d, time, 0),
                    out_rows.stride(),
                );
            }
            std::mem::swap(&mut state, &mut next);
        }
    };
    rayon::join(|| direction(0), || direction(1));
    // SAFETY: each direction wrote its half of every token's row, at every step.
    unsafe { out.set_len(2 * dims.block(h)) };
    flex(out, [batch, len, 2 * h])
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    len: usize,
    batch: usize,
    hidden: usize,
    gates: usize,
}

impl Dims {
    /// Elements of one direction's time-major `[len, batch, width]` buffer.
    fn block(&self, width: usize) -> usize {
        self.len * self.batch * width
    }

    /// The time step that direction `d` reads at its step `t`.
    fn time(&self, d: usize, t: usize) -> usize {
        if d == 0 { t } else { self.len - 1 - t }
    }
}

/// What the backward pass needs, for each direction `[len, batch, ·]` in its own step order.
struct Saved {
    dims: Dims,
    /// Gate activations (i, f, g, o or r, z, n).
    activations: [Vec<f32>; 2],
    /// The carried cell state after each step (LSTM); the recurrent part of n, W_hn·h + b_hn (GRU).
    cells: [Vec<f32>; 2],
    /// The carried hidden state after each step.
    states: [Vec<f32>; 2],
    w_hh: Vec<f32>,
    /// `[batch, len]`, as given.
    mask: Vec<f32>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Saved({:?})", self.dims)
    }
}

fn flex<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each given by its (row, column) strides.
///
/// `gemm` copies (packs) a left operand whose columns are not contiguous before every product,
/// and a recurrent step is one small product: the callers arrange their operands column-major
/// (computing `Cᵀ = Bᵀ·Aᵀ` where that is what it takes), so that nothing is packed.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let reach = |(rows, cols): (usize, usize), r: usize, c: usize| (r - 1) * rows + (c - 1) * cols + 1;
    assert!(
        dst.len() >= reach(dst_strides, m, n) && lhs.len() >= reach(lhs_strides, m, k) && rhs.len() >= reach(rhs_strides, k, n),
        "operands inside their slices"
    );
    // SAFETY: the last element each operand's strides reach is inside its slice (checked above).
    unsafe { matmul_raw(m, n, k, dst.as_mut_ptr(), dst_strides, accumulate, lhs.as_ptr(), lhs_strides, rhs.as_ptr(), rhs_strides) };
}

/// [`matmul`] on pointers, for operands spread over a buffer not all written yet.
///
/// # Safety
/// Every element the strides reach is inside its allocation and, in `lhs` and `rhs`, written.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    lhs_strides: (usize, usize),
    rhs: *const f32,
    rhs_strides: (usize, usize),
) {
    // SAFETY: the caller's.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            accumulate,
            lhs,
            lhs_strides.1 as isize,
            lhs_strides.0 as isize,
            rhs,
            rhs_strides.1 as isize,
            rhs_strides.0 as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Rows of input projections [`fused_inference`] computes at a time, a few steps of a batch
/// together as one product (1 MB for `text-lstm-attn`'s LSTM, 8 steps of a batch of 64).
const PROJECTED_ROWS: usize = 512;

/// Where a step's input projections `x_t·W_ih (+ b_ih)` come from.
#[derive(Clone, Copy)]
enum Inputs<'a> {
    /// Computed for the whole sequence before (training): `gx` `[batch, len, 2·G·h]`.
    Projected(&'a [f32]),
    /// Made as the steps go (inference).
    Fresh(Fresh<'a>),
}

/// Inference's input projections, made as the steps go.
#[derive(Clone, Copy)]
enum Fresh<'a> {
    /// Computed a block of steps at a time (or inside each step's product, [`step_kernel`]) from
    /// `x` `[len, batch, input]` (time-major), `w_ih` `[2, input, G·h]`, `b_ih` `[2, G·h]`.
    Raw { x: &'a [f32], w_ih: &'a [f32], b_ih: &'a [f32], input: usize },
    /// Looked up: step t's row b is row `tokens[t·batch + b]` of the direction's `table`.
    Looked { table: &'a Table, tokens: &'a [u32] },
}

/// `rows` `[batch, width]` become `bias` + `x_b·W` for each row `x_b` (see [`add_projection`]).
fn project(rows: &mut [f32], bias: &[f32], x: &[f32], x_stride: usize, k: usize, w: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
    add_projection(rows, x, x_stride, k, w);
}

/// `rows` `[batch, width]` get `x_b·W` added for each row `x_b` (row b of `x` at `b·x_stride`;
/// `W` `[k, width]`), by rows for a few of them, else as one product.
fn add_projection(rows: &mut [f32], x: &[f32], x_stride: usize, k: usize, w: &[f32]) {
    let width = w.len() / k;
    let batch = rows.len() / width;
    if batch <= FEW_ROWS {
        for (b, row) in rows.chunks_exact_mut(width).enumerate() {
            add_row_times_matrix(row, &x[b * x_stride..][..k], w);
        }
    } else {
        // rowsᵀ += Wᵀ · xᵀ: W `[k, width]` row-major is Wᵀ column-major.
        matmul(width, batch, k, rows, (1, width), true, w, (1, width), x, (1, x_stride));
    }
}

/// `x_b·W` for each row `x_b` of `x` `[batch, k]` (`W` `[k, width]`), appended to `buffer` as
/// `[batch, width]` rows; a product written straight into its room, not zeroed before.
fn append_product(buffer: &mut Vec<f32>, x: &[f32], k: usize, w: &[f32]) {
    let width = w.len() / k;
    let (batch, start) = (x.len() / k, buffer.len());
    if batch <= FEW_ROWS {
        buffer.resize(start + batch * width, 0.0);
        add_projection(&mut buffer[start..], x, k, k, w);
    } else {
        buffer.reserve(batch * width);
        // SAFETY: `reserve` made room for the `batch·width` values after `start`, and the product
        // writes all of them without reading them (`accumulate` false) before they count.
        unsafe {
            matmul_raw(width, batch, k, buffer.as_mut_ptr().add(start), (1, width), false, w.as_ptr(), (1, width), x.as_ptr(), (1, k));
            buffer.set_len(start + batch * width);
        }
    }
}

/// Both directions over the whole sequence: the `[batch, len, 2h]` output, and what the backward
/// pass needs when `keep`.
fn forward(dims: &Dims, inputs: Inputs, w_hh: &FlexTensor, b_hh: &FlexTensor, mask: &FlexTensor, keep: bool) -> (FlexTensor, Option<Saved>) {
    let Dims { len, batch, hidden: h, gates } = *dims;
    let g = gates * h;
    let [w_hh, b_hh, mask] = [w_hh, b_hh, mask].map(FlexTensor::to_contiguous);
    let [w_hh, b_hh, mask] = [&w_hh, &b_hh, &mask].map(|t| t.as_slice::<f32>().expect("f32"));
    let mut out = Vec::with_capacity(2 * dims.block(h));
    let out_rows = SideBySide::new(&mut out, dims, h);
    // An LSTM's recurrent products become its gate activations in place, so when they are kept
    // they are computed where they are kept; a GRU's go to a step's scratch buffer.
    let in_place = keep && gates == 4;
    let direction = |d: usize| {
        // Each direction's kept buffers grow by a step's rows as they are written (never zeroed
        // first: zeroing them was 3% of `text-lstm-attn`'s training).
        let kept = |width| if keep { Vec::with_capacity(dims.block(width)) } else { Vec::new() };
        let (mut act, mut cell, mut state): (Vec<f32>, Vec<f32>, Vec<f32>) = (kept(g), kept(h), kept(h));
        let w = &w_hh[d * h * g..][..h * g];
        let bias = &b_hh[d * g..][..g];
        let mut carried = Carried { h: vec![0.0; batch * h], c: vec![0.0; batch * h], n: vec![0.0; h] };
        let mut scratch = Vec::with_capacity(if in_place { 0 } else { batch * g });
        // A block of steps' input projections, `[steps, batch, G·h]` in time order from `block_start`.
        let (mut block, mut block_start) = (Vec::new(), 0);
        for t in 0..len {
            let (gh, activations): (&mut [f32], _) = if in_place {
                let start = act.len();
                append_product(&mut act, &carried.h, h, w);
                (&mut act[start..], None)
            } else {
                scratch.clear();
                append_product(&mut scratch, &carried.h, h, w);
                (&mut scratch[..], Some(&mut act))
            };
            let time = dims.time(d, t);
            let (gx, gx_stride) = match inputs {
                Inputs::Projected(gx) => (&gx[time * 2 * g + d * g..], len * 2 * g),
                Inputs::Fresh(Fresh::Raw { x, w_ih, b_ih, input }) => {
                    let steps = (PROJECTED_ROWS / batch).max(1);
                    if t % steps == 0 {
                        let steps = steps.min(len - t);
                        block_start = if d == 0 { t } else { len - t - steps };
                        block.resize(steps * batch * g, 0.0);
                        project(&mut block, &b_ih[d * g..][..g], &x[block_start * batch * input..], input, input, &w_ih[d * input * g..][..input * g]);
                    }
                    (&block[(time - block_start) * batch * g..], g)
                }
                Inputs::Fresh(Fresh::Looked { table, tokens }) => {
                    let rows = table.direction(d);
                    block.clear();
                    for &token in &tokens[time * batch..][..batch] {
                        block.extend_from_slice(&rows[token as usize * g..][..g]);
                    }
                    (&block[..], g)
                }
            };
            let step = Step {
                gx,
                gx_stride,
                // Rows of projections made for the whole sequence come from memory.
                prefetch: !keep && matches!(inputs, Inputs::Projected(_)),
                mask: &mask[time..],
                mask_stride: len,
                bias,
                gh,
                out: out_rows,
                direction: d,
                time,
                kept: keep.then_some(Kept { activations, cells: &mut cell, states: &mut state }),
            };
            cell_step(dims, step, &mut carried);
        }
        [act, cell, state]
    };
    let ([a0, c0, s0], [a1, c1, s1]) = rayon::join(|| direction(0), || direction(1));
    // SAFETY: each direction wrote its half of every token's row, at every step.
    unsafe { out.set_len(2 * dims.block(h)) };
    let saved = keep.then(|| Saved { dims: *dims, activations: [a0, a1], cells: [c0, c1], states: [s0, s1], w_hh: w_hh.to_vec(), mask: mask.to_vec() });
    (flex(out, [batch, len, 2 * h]), saved)
}

/// A `[batch, len, 2·width]` buffer that both directions fill at once from their own threads,
/// each only its own half of each token's row: `width` values of direction 0, then `width` of
/// direction 1 (whose step t is token len-1-t). Not zeroed: together they write all of it, on
/// their threads rather than in a pass on the calling thread before (and, from time-major
/// buffers, a copy after).
#[derive(Clone, Copy)]
struct SideBySide {
    start: *mut f32,
    dims: Dims,
    width: usize,
}

// SAFETY: the two threads write disjoint halves of the rows (see `row`).
unsafe impl Send for SideBySide {}
unsafe impl Sync for SideBySide {}

impl SideBySide {
    fn new(buffer: &mut Vec<f32>, dims: &Dims, width: usize) -> Self {
        assert!(buffer.capacity() >= 2 * dims.block(width), "room for the whole output");
        Self { start: buffer.as_mut_ptr(), dims: *dims, width }
    }

    /// Where direction `d`'s row of text `b` at token `time` starts; rows of the following texts
    /// are `stride()` further each.
    fn at(self, d: usize, time: usize, b: usize) -> *mut f32 {
        let Dims { len, batch, .. } = self.dims;
        assert!(d < 2 && time < len && b < batch, "a row of the buffer");
        // SAFETY: inside the buffer (its capacity checked in `new`, the indices above).
        unsafe { self.start.add(((b * len + time) * 2 + d) * self.width) }
    }

    /// Elements from a text's row to the next text's at the same token.
    fn stride(self) -> usize {
        self.dims.len * 2 * self.width
    }

    /// Direction `d`'s row of text `b` at token `time`, to be written.
    ///
    /// # Safety
    /// Only one thread writes direction `d`'s rows, and the buffer outlives the row.
    unsafe fn row<'a>(self, d: usize, time: usize, b: usize) -> &'a mut [MaybeUninit<f32>] {
        // SAFETY: `at` is inside the buffer with `width` values after it; the caller's thread
        // alone writes direction d.
        unsafe { std::slice::from_raw_parts_mut(self.at(d, time, b).cast(), self.width) }
    }
}

/// One direction's state between steps, and its scratch space.
struct Carried {
    h: Vec<f32>,
    c: Vec<f32>,
    /// The GRU's candidate for one row.
    n: Vec<f32>,
}

/// One time step of one direction: its inputs (row `b` at `b·stride`), where its output rows go,
/// and the kept buffers.
struct Step<'a> {
    gx: &'a [f32],
    gx_stride: usize,
    /// Ask for the next row's `gx` while a row runs.
    prefetch: bool,
    mask: &'a [f32],
    mask_stride: usize,
    /// `b_hh`, added to `gh` row by row.
    bias: &'a [f32],
    /// `h·W_hh` of the step, `[batch, G·h]`; the LSTM turns it into its gate activations.
    gh: &'a mut [f32],
    out: SideBySide,
    direction: usize,
    time: usize,
    /// The buffers the backward pass reads, a step's rows appended; `None` at inference.
    kept: Option<Kept<'a>>,
}

struct Kept<'a> {
    /// `None` where the activations are kept in place (the LSTM's `gh`).
    activations: Option<&'a mut Vec<f32>>,
    cells: &'a mut Vec<f32>,
    states: &'a mut Vec<f32>,
}

/// The gates and state update of one step, for every row, after `gh` has been computed.
fn cell_step(dims: &Dims, mut step: Step, carried: &mut Carried) {
    let Dims { batch, hidden: h, gates, .. } = *dims;
    let g = gates * h;
    for b in 0..batch {
        let (hb, cb) = (&mut carried.h[b * h..][..h], &mut carried.c[b * h..][..h]);
        // SAFETY: this step runs on direction `step.direction`'s only thread; the output
        // outlives the recurrence.
        let out = unsafe { step.out.row(step.direction, step.time, b) };
        if step.mask[b * step.mask_stride] == 0.0 {
            // Padding: the state carries over, the output is 0; the backward pass skips the row.
            out.fill(MaybeUninit::new(0.0));
            if let Some(kept) = &mut step.kept {
                if let Some(act) = &mut kept.activations {
                    act.resize(act.len() + g, 0.0);
                }
                kept.cells.extend_from_slice(cb);
                kept.states.extend_from_slice(hb);
            }
            continue;
        }
        let x = &step.gx[b * step.gx_stride..][..g];
        if step.prefetch && b + 1 < batch {
            // Input projections computed for the whole sequence before the recurrence (tens of
            // MB) come from memory: ask for the next row while this one runs. Not in training,
            // where alternated runs were level or a few percent slower.
            prefetch(&step.gx[(b + 1) * step.gx_stride..][..g]);
        }
        let gh = &mut step.gh[b * g..][..g];
        if gates == 4 {
            lstm_row(x, step.bias, gh, cb, hb);
            if let Some(kept) = &mut step.kept {
                kept.cells.extend_from_slice(cb);
            }
        } else {
            gru_row(x, step.bias, gh, &mut carried.n, hb);
            if let Some(kept) = &mut step.kept {
                let act = kept.activations.as_mut().expect("a GRU's activations kept apart");
                act.extend_from_slice(&gh[..2 * h]);
                act.extend_from_slice(&carried.n);
                kept.cells.extend_from_slice(&gh[2 * h..]);
            }
        }
        out.write_copy_of_slice(hb);
        if let Some(kept) = &mut step.kept {
            kept.states.extend_from_slice(hb);
        }
    }
}

/// Asks the CPU to bring `values` into its cache, one 64-byte line at a time.
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(16) {
        // SAFETY: a prefetch only hints; the address is inside `values`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// [`prefetch`] into the core's second-level cache.
#[cfg(target_arch = "x86_64")]
fn prefetch_l2(values: &[f32]) {
    for line in values.chunks(16) {
        // SAFETY: a prefetch only hints; the address is inside `values`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(line.as_ptr().cast()) };
    }
}

/// Batches of at most this many texts take their recurrent products row by row
/// ([`add_row_times_matrix`]), at inference too, where larger ones go through the step kernel on
/// AVX-512. With one row, `gemm`'s matrix-vector path was 59% of `text-lstm-attn`'s batch-1
/// inference (~10 µs a step for a weight of 256 KB); row by row with the sums in registers,
/// batch-1 inference went from ~640 to ~970 texts/s.
const FEW_ROWS: usize = 4;

compiled_per_cpu! {
    /// `y += x·W` for one row `x` `[k]` and `W` `[k, n]` row-major, `n = y.len()`: 128 outputs
    /// at a time, summed over all of `x` before they are written back.
    fn add_row_times_matrix(y: &mut [f32], x: &[f32], w: &[f32]) {
        const BLOCK: usize = 128;
        let n = y.len();
        assert_eq!(w.len(), x.len() * n, "a weight of one row per input");
        for start in (0..n).step_by(BLOCK) {
            let width = BLOCK.min(n - start);
            let y = &mut y[start..][..width];
            if width == BLOCK {
                // A whole block: a fixed size, so the sums stay in registers.
                let mut sums = [0f32; BLOCK];
                sums.copy_from_slice(y);
                for (k, &xk) in x.iter().enumerate() {
                    let row: &[f32; BLOCK] = w[k * n + start..][..BLOCK].try_into().expect("a block");
                    for j in 0..BLOCK {
                        sums[j] = xk.mul_add(row[j], sums[j]);
                    }
                }
                y.copy_from_slice(&sums);
            } else {
                for (k, &xk) in x.iter().enumerate() {
                    for (sum, &v) in y.iter_mut().zip(&w[k * n + start..][..width]) {
                        *sum = xk.mul_add(v, *sum);
                    }
                }
            }
        }
    }
}

// One row's step, compiled for the CPU, the written slices parameters of their own (see
// `lstm_row_gradients`).
compiled_per_cpu! {
    /// LSTM: `gates` holds h·W_hh and becomes the activations i, f, g, o of it + `x` + `bias`;
    /// `c` and `h` the carried states, updated.
    fn lstm_row(x: &[f32], bias: &[f32], gates: &mut [f32], c: &mut [f32], h: &mut [f32]) {
        let n = h.len();
        let (x, bias, gates, c) = (&x[..4 * n], &bias[..4 * n], &mut gates[..4 * n], &mut c[..n]);
        for j in 0..4 * n {
            gates[j] += x[j] + bias[j];
        }
        let (ifg, o) = gates.split_at_mut(3 * n);
        let (i_f, gg) = ifg.split_at_mut(2 * n);
        i_f.iter_mut().for_each(|v| *v = sigmoid(*v));
        gg.iter_mut().for_each(|v| *v = tanh(*v));
        o.iter_mut().for_each(|v| *v = sigmoid(*v));
        let (i, f, gg, o) = (&i_f[..n], &i_f[n..][..n], &gg[..n], &o[..n]);
        for j in 0..n {
            c[j] = f[j] * c[j] + i[j] * gg[j];
            h[j] = o[j] * tanh(c[j]);
        }
    }
}

compiled_per_cpu! {
    /// GRU: `gates` holds h·W_hh and becomes, with `bias` (b_hh) added, the activations of r and
    /// z and the recurrent part of n; `n` gets the candidate, `h` the carried state, updated.
    fn gru_row(x: &[f32], bias: &[f32], gates: &mut [f32], n: &mut [f32], h: &mut [f32]) {
        let k = h.len();
        let (x, bias, gates, n) = (&x[..3 * k], &bias[..3 * k], &mut gates[..3 * k], &mut n[..k]);
        for j in 0..2 * k {
            gates[j] = sigmoid(gates[j] + x[j] + bias[j]);
        }
        for j in 2 * k..3 * k {
            gates[j] += bias[j];
        }
        let (rz, gh_n) = gates.split_at_mut(2 * k);
        let (r, z, gh_n, x_n) = (&rz[..k], &rz[k..][..k], &gh_n[..k], &x[2 * k..][..k]);
        for j in 0..k {
            n[j] = tanh(x_n[j] + r[j] * gh_n[j]);
            h[j] = n[j] + z[j] * (h[j] - n[j]);
        }
    }
}

#[derive(Debug)]
struct RecurrenceBackward;

impl Backward<Flex, 3> for RecurrenceBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_gx, node_w, node_b] = ops.parents;
        let d_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let d_out = d_out.as_slice::<f32>().expect("f32");
        let saved = ops.state;
        let Dims { len, batch, hidden: h, gates } = saved.dims;
        let (d_gx, d_w, d_b) = backward(&saved, d_out);
        if let Some(node) = node_gx {
            grads.register::<Flex>(node.id, flex(d_gx, [batch, len, 2 * gates * h]));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex(d_w, [2, h, gates * h]));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex(d_b, [1, 2, gates * h]));
        }
    }
}

/// Back-propagation through time for both directions: the gradients of `gx` (`[batch, len,
/// 2·G·h]`), `w_hh` and `b_hh`.
fn backward(saved: &Saved, d_out: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dims = saved.dims;
    let Dims { len, batch, hidden: h, gates } = dims;
    let g = gates * h;
    let mut d_gx = Vec::with_capacity(2 * dims.block(g));
    let d_gx_rows = SideBySide::new(&mut d_gx, &dims, g);
    let mut d_w = vec![0.0; 2 * h * g];
    let mut d_b = vec![0.0; 2 * g];
    let (dw0, dw1) = d_w.split_at_mut(h * g);
    let (db0, db1) = d_b.split_at_mut(g);
    let direction = |d: usize, d_w: &mut [f32], d_b: &mut [f32]| {
        // The step's gradients of the recurrent product, row b at b·stride: an LSTM's are those of
        // its gate inputs, written straight into `d_gx`; the GRU's n gate reaches the input and
        // the recurrent products differently, so it has a step's buffer of its own.
        let mut d_gh = if gates == 3 { vec![0.0; batch * g] } else { Vec::new() };
        let (act, cell, state) = (&saved.activations[d], &saved.cells[d], &saved.states[d]);
        let w = &saved.w_hh[d * h * g..][..h * g];
        let mut w_t = vec![0.0; h * g];
        for (j, row) in w.chunks_exact(g).enumerate() {
            for (k, v) in row.iter().enumerate() {
                w_t[k * h + j] = *v;
            }
        }
        let (mut dh, mut dc) = (vec![0.0f32; batch * h], vec![0.0f32; batch * h]);
        let zeros = vec![0.0f32; batch * h];
        for t in (0..len).rev() {
            let time = dims.time(d, t);
            // The step before: its cells (LSTM) or states (GRU), zero before the first step.
            let before = if t == 0 {
                &zeros[..]
            } else if gates == 4 {
                &cell[(t - 1) * batch * h..][..batch * h]
            } else {
                &state[(t - 1) * batch * h..][..batch * h]
            };
            let step = BackStep {
                d_out: &d_out[time * 2 * h + d * h..],
                d_out_stride: len * 2 * h,
                mask: &saved.mask[time..],
                mask_stride: len,
                activations: &act[t * batch * g..][..batch * g],
                cells: &cell[t * batch * h..][..batch * h],
                before,
                d_x: d_gx_rows,
                direction: d,
                time,
                d_gh: &mut d_gh,
            };
            step_gradients(&dims, step, &mut dh, &mut dc);
            let (d_gh_t, stride) = if gates == 3 { (d_gh.as_ptr(), g) } else { (d_gx_rows.at(d, time, 0).cast_const(), d_gx_rows.stride()) };
            // SAFETY: `d_gh_t` has this step's `batch` rows of `g` values at `stride`, all written
            // by `step_gradients` (in `d_gx`, by this direction's thread, this step's alone); the
            // other operands are whole buffers of the sizes the products read.
            unsafe {
                // dh_{t-1} += dG_t · W_hhᵀ, as dhᵀ += W_hh · dG_tᵀ with W_hh column-major (`w_t`).
                matmul_raw(h, batch, g, dh.as_mut_ptr(), (1, h), true, w_t.as_ptr(), (1, h), d_gh_t, (1, stride));
                // dW_hh += h_{t-1}ᵀ · dG_t, step by step while dG_t is in the cache (h_{-1} = 0).
                if t > 0 {
                    matmul_raw(h, g, batch, d_w.as_mut_ptr(), (g, 1), true, state[(t - 1) * batch * h..][..batch * h].as_ptr(), (1, h), d_gh_t, (stride, 1));
                }
                for b in 0..batch {
                    for (acc, v) in d_b.iter_mut().zip(std::slice::from_raw_parts(d_gh_t.add(b * stride), g)) {
                        *acc += v;
                    }
                }
            }
        }
    };
    rayon::join(|| direction(0, dw0, db0), || direction(1, dw1, db1));
    // SAFETY: each direction wrote its half of every token's row, at every step.
    unsafe { d_gx.set_len(2 * dims.block(g)) };
    (d_gx, d_w, d_b)
}

/// One backward step of one direction, for every row of the batch (row `b` of `d_out` and `mask`
/// at `b·stride`; the others `[batch, ·]`).
struct BackStep<'a> {
    d_out: &'a [f32],
    d_out_stride: usize,
    mask: &'a [f32],
    mask_stride: usize,
    activations: &'a [f32],
    cells: &'a [f32],
    /// The step before: its cells (LSTM) or hidden states (GRU).
    before: &'a [f32],
    /// Where the gradients of the gate inputs go: direction `direction`'s half of token `time`.
    d_x: SideBySide,
    direction: usize,
    time: usize,
    /// The GRU's gradients of the recurrent product (its n gate differs from `d_x`'s).
    d_gh: &'a mut [f32],
}

/// The gradients of one step's gate inputs from those of its output and carried state: writes
/// `d_x` (and the GRU's `d_gh`), leaves in `dc` what flows to the previous cell and in `dh` the
/// hidden-state part that does not pass through `W_hh` (the caller adds that product).
fn step_gradients(dims: &Dims, step: BackStep, dh: &mut [f32], dc: &mut [f32]) {
    let Dims { batch, hidden: h, gates, .. } = *dims;
    let g = gates * h;
    for b in 0..batch {
        // SAFETY: this step runs on direction `step.direction`'s only thread; `d_gx` outlives
        // the backward pass.
        let dx = unsafe { step.d_x.row(step.direction, step.time, b) };
        if step.mask[b * step.mask_stride] == 0.0 {
            // Output 0, state carried: dh and dc pass through unchanged, the gate inputs get none.
            dx.fill(MaybeUninit::new(0.0));
            if gates == 3 {
                step.d_gh[b * g..][..g].fill(0.0);
            }
            continue;
        }
        let d_out = &step.d_out[b * step.d_out_stride..][..h];
        let a = &step.activations[b * g..][..g];
        let (cell, before) = (&step.cells[b * h..][..h], &step.before[b * h..][..h]);
        let (dx_0, rest) = dx.split_at_mut(h);
        let (dx_1, rest) = rest.split_at_mut(h);
        let (dx_2, dx_3) = rest.split_at_mut(h);
        let dh = &mut dh[b * h..][..h];
        if gates == 4 {
            lstm_row_gradients(a, cell, before, d_out, dh, &mut dc[b * h..][..h], dx_0, dx_1, dx_2, dx_3);
        } else {
            let (dg_r, rest) = step.d_gh[b * g..][..g].split_at_mut(h);
            let (dg_z, dg_n) = rest.split_at_mut(h);
            gru_row_gradients(a, cell, before, d_out, dh, dx_0, dx_1, dx_2, dg_r, dg_z, dg_n);
        }
    }
}

// One row's gradients. Each written slice is a parameter of its own, of a function compiled for
// the CPU: as `&mut` parameters they cannot overlap, so the loop vectorises without run-time
// overlap checks (with the slices in `BackStep`'s fields it needed a dozen and stayed scalar).
// The gate inputs' gradients go straight to `d_gx`, not written before.
compiled_per_cpu! {
    /// LSTM: `activations` i, f, g, o; `c_prev` the previous cell state.
    #[allow(clippy::too_many_arguments)]
    fn lstm_row_gradients(activations: &[f32], cell: &[f32], c_prev: &[f32], d_out: &[f32], dh: &mut [f32], dc: &mut [f32], dx_i: &mut [MaybeUninit<f32>], dx_f: &mut [MaybeUninit<f32>], dx_g: &mut [MaybeUninit<f32>], dx_o: &mut [MaybeUninit<f32>]) {
        let h = dh.len();
        let [i, f, gg, o] = [0, 1, 2, 3].map(|k| &activations[k * h..][..h]);
        let (cell, c_prev, d_out, dc) = (&cell[..h], &c_prev[..h], &d_out[..h], &mut dc[..h]);
        let (dx_i, dx_f, dx_g, dx_o) = (&mut dx_i[..h], &mut dx_f[..h], &mut dx_g[..h], &mut dx_o[..h]);
        for j in 0..h {
            let d_state = dh[j] + d_out[j];
            let tc = tanh(cell[j]);
            let d_cell = d_state * o[j] * (1.0 - tc * tc) + dc[j];
            dx_i[j] = MaybeUninit::new(d_cell * gg[j] * i[j] * (1.0 - i[j]));
            dx_f[j] = MaybeUninit::new(d_cell * c_prev[j] * f[j] * (1.0 - f[j]));
            dx_g[j] = MaybeUninit::new(d_cell * i[j] * (1.0 - gg[j] * gg[j]));
            dx_o[j] = MaybeUninit::new(d_state * tc * o[j] * (1.0 - o[j]));
            dc[j] = d_cell * f[j];
            dh[j] = 0.0; // the product with W_hhᵀ adds what flows to h_{t-1}
        }
    }
}

compiled_per_cpu! {
    /// GRU: `activations` r, z, n; `gh_n` the recurrent part of n; `h_prev` the previous state.
    #[allow(clippy::too_many_arguments)]
    fn gru_row_gradients(activations: &[f32], gh_n: &[f32], h_prev: &[f32], d_out: &[f32], dh: &mut [f32], dx_r: &mut [MaybeUninit<f32>], dx_z: &mut [MaybeUninit<f32>], dx_n: &mut [MaybeUninit<f32>], dg_r: &mut [f32], dg_z: &mut [f32], dg_n: &mut [f32]) {
        let h = dh.len();
        let [r, z, n] = [0, 1, 2].map(|k| &activations[k * h..][..h]);
        let (gh_n, h_prev, d_out) = (&gh_n[..h], &h_prev[..h], &d_out[..h]);
        let (dx_r, dx_z, dx_n, dg_r, dg_z, dg_n) = (&mut dx_r[..h], &mut dx_z[..h], &mut dx_n[..h], &mut dg_r[..h], &mut dg_z[..h], &mut dg_n[..h]);
        for j in 0..h {
            let d_state = dh[j] + d_out[j];
            let d_n = d_state * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
            let d_r = d_n * gh_n[j] * r[j] * (1.0 - r[j]);
            let d_z = d_state * (h_prev[j] - n[j]) * z[j] * (1.0 - z[j]);
            dx_r[j] = MaybeUninit::new(d_r);
            dx_z[j] = MaybeUninit::new(d_z);
            dx_n[j] = MaybeUninit::new(d_n);
            dg_r[j] = d_r;
            dg_z[j] = d_z;
            dg_n[j] = d_n * r[j];
            dh[j] = d_state * z[j];
        }
    }
}
