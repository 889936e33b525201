//! The recurrence of a bidirectional LSTM or GRU layer as one operation on burn's `flex` CPU
//! backend, forward and backward. Composed of tensor operations, each time step costs some twenty
//! small operations and as many autodiff nodes, which is most of a recurrent model's training time
//! on the CPU. Here a step is one matrix product and one pass over the gates per direction, the two
//! directions run on the two halves of the thread pool, and the backward pass gets the recurrent
//! weight gradient from one matrix product over all steps.
//!
//! Layouts: `gx` `[batch, len, 2·G·h]` holds the input projections (with `bias_ih`) of the
//! forward direction then the reverse one, as one matrix product gives them; `w_hh` `[2, h, G·h]`
//! is PyTorch's `weight_hh` of each direction transposed; `b_hh` `[2, G·h]`; `mask`
//! `[batch, len]` is 1 at a real token and 0 at padding, where the state carries over and the
//! output is 0. The output is `[batch, len, 2·h]`, the two directions side by side as PyTorch's
//! bidirectional layers give them. The reverse direction reads the sequence from its end, so it
//! starts at each text's last real token. Gates in PyTorch's order: i, f, g, o for an LSTM
//! (G = 4), r, z, n for a GRU (G = 3). Inside, each direction keeps its own time-major buffers.

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

/// Whether [`fused_recurrence`] runs on this device: `flex`, with or without autodiff, unless
/// `VITRINE_UNFUSED_RECURRENCE` is set (to measure one against the other).
pub fn fuses(device: &Device) -> bool {
    static UNFUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let unfused = *UNFUSED.get_or_init(|| std::env::var_os("VITRINE_UNFUSED_RECURRENCE").is_some());
    !unfused && vitrine_core::backend::is_flex(device)
}

/// Runs the recurrence as one operation when the tensors live on `flex` in f32; `None`
/// elsewhere, where the caller composes it from tensor operations.
pub fn fused_recurrence(gx: &Tensor<3>, w_hh: &Tensor<3>, b_hh: &Tensor<2>, mask: &Tensor<2>, gates: usize) -> Option<Tensor<3>> {
    let device = gx.device();
    if !fuses(&device) || gx.dtype() != DType::F32 || gx.dims()[1] == 0 {
        return None;
    }
    let [batch, len, _] = gx.dims();
    let dims = Dims { batch, len, hidden: w_hh.dims()[1], gates };
    if !device.is_autodiff() {
        let plain = |t: Tensor<3>| t.try_into_primitive::<Flex>().ok();
        let [gx, w_hh, b_hh, mask] = [plain(gx.clone())?, plain(w_hh.clone())?, plain(b_hh.clone().unsqueeze())?, plain(mask.clone().unsqueeze())?];
        let (out, _) = forward(&dims, &gx, &w_hh, &b_hh, &mask, false);
        return Some(Tensor::from_primitive::<Flex>(out));
    }
    let tracked = |t: Tensor<3>| t.try_into_primitive::<Autodiff<Flex>>().ok();
    let [gx, w_hh, b_hh, mask] = [tracked(gx.clone())?, tracked(w_hh.clone())?, tracked(b_hh.clone().unsqueeze())?, tracked(mask.clone().unsqueeze())?];
    let mask = mask.into_primitive();
    let out = match RecurrenceBackward.prepare::<NoCheckpointing>([gx.node(), w_hh.node(), b_hh.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (out, saved) = forward(&dims, &gx.into_primitive(), &w_hh.into_primitive(), &b_hh.into_primitive(), &mask, true);
            prep.finish(Arc::new(saved.expect("kept when asked")), out)
        }
        OpsKind::UnTracked(prep) => {
            let (out, _) = forward(&dims, &gx.into_primitive(), &w_hh.into_primitive(), &b_hh.into_primitive(), &mask, false);
            prep.finish(out)
        }
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
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

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: &[f32], lhs_strides: (usize, usize), rhs: &[f32], rhs_strides: (usize, usize)) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    debug_assert!(dst.len() >= m * n);
    // SAFETY: every index the strides reach is inside the slices: dst is m×n row-major; the
    // callers pass operands whose strides describe their own slices.
    unsafe {
        gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, accumulate,
            lhs.as_ptr(), lhs_strides.1 as isize, lhs_strides.0 as isize,
            rhs.as_ptr(), rhs_strides.1 as isize, rhs_strides.0 as isize,
            if accumulate { 1.0 } else { 0.0 }, 1.0,
            false, false, false, Parallelism::None,
        );
    }
}

/// Both directions over the whole sequence: the `[batch, len, 2h]` output, and what the backward
/// pass needs when `keep`.
fn forward(dims: &Dims, gx: &FlexTensor, w_hh: &FlexTensor, b_hh: &FlexTensor, mask: &FlexTensor, keep: bool) -> (FlexTensor, Option<Saved>) {
    let Dims { len, batch, hidden: h, gates } = *dims;
    let g = gates * h;
    let [gx, w_hh, b_hh, mask] = [gx, w_hh, b_hh, mask].map(FlexTensor::to_contiguous);
    let [gx, w_hh, b_hh, mask] = [&gx, &w_hh, &b_hh, &mask].map(|t| t.as_slice::<f32>().expect("f32"));
    let mut out = Vec::with_capacity(2 * dims.block(h));
    let rows = SideBySide::new(&mut out, dims, h);
    // Each direction allocates (and so zeroes) its own buffers, on its own thread.
    let direction = |d: usize| {
        let kept = |width| if keep { vec![0.0; dims.block(width)] } else { Vec::new() };
        let (mut act, mut cell, mut state) = (kept(g), kept(h), kept(h));
        let w = &w_hh[d * h * g..][..h * g];
        let bias = &b_hh[d * g..][..g];
        let mut carried = Carried { h: vec![0.0; batch * h], c: vec![0.0; batch * h], gh: vec![0.0; batch * g], n: vec![0.0; h] };
        let mut step_out = vec![0.0; batch * h];
        for t in 0..len {
            for row in carried.gh.chunks_exact_mut(g) {
                row.copy_from_slice(bias);
            }
            matmul(batch, g, h, &mut carried.gh, true, &carried.h, (h, 1), w, (g, 1));
            let time = dims.time(d, t);
            let step = Step {
                gx: &gx[time * 2 * g + d * g..],
                gx_stride: len * 2 * g,
                mask: &mask[time..],
                mask_stride: len,
                out: &mut step_out,
                activations: kept_step(&mut act, t, batch * g),
                cells: kept_step(&mut cell, t, batch * h),
                states: kept_step(&mut state, t, batch * h),
            };
            cell_step(dims, step, &mut carried);
            // SAFETY: this closure is direction d's only thread; `out` outlives the join.
            unsafe { rows.write(d, time, &step_out) };
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
/// their threads rather than in a pass on the calling thread before (and, into time-major
/// buffers, a copy after).
#[derive(Clone, Copy)]
struct SideBySide {
    start: *mut f32,
    dims: Dims,
    width: usize,
}

// SAFETY: the two threads write disjoint halves of the rows (see `write`).
unsafe impl Send for SideBySide {}
unsafe impl Sync for SideBySide {}

impl SideBySide {
    fn new(buffer: &mut Vec<f32>, dims: &Dims, width: usize) -> Self {
        assert!(buffer.capacity() >= 2 * dims.block(width), "room for the whole output");
        Self { start: buffer.as_mut_ptr(), dims: *dims, width }
    }

    /// Direction `d`'s rows (`[batch, width]`) for token `time` of each text.
    ///
    /// # Safety
    /// Only one thread writes direction `d`'s rows, and the buffer outlives the writes.
    unsafe fn write(self, d: usize, time: usize, rows: &[f32]) {
        let Dims { len, batch, .. } = self.dims;
        assert!(d < 2 && time < len && rows.len() == batch * self.width, "a step's rows of one direction");
        for (b, row) in rows.chunks_exact(self.width).enumerate() {
            // SAFETY: inside the buffer (checked in `new` and above); the caller's thread alone
            // writes direction d.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.start.add(((b * len + time) * 2 + d) * self.width), self.width) };
        }
    }
}

/// Step `t`'s part of a kept buffer, or nothing when nothing is kept.
fn kept_step(buffer: &mut [f32], t: usize, size: usize) -> &mut [f32] {
    if buffer.is_empty() { buffer } else { &mut buffer[t * size..][..size] }
}

/// One direction's state between steps, and its scratch space.
struct Carried {
    h: Vec<f32>,
    c: Vec<f32>,
    /// `h·W_hh + b_hh` of the step, `[batch, G·h]`; the LSTM turns it into its gate activations.
    gh: Vec<f32>,
    /// The GRU's candidate for one row.
    n: Vec<f32>,
}

/// One time step of one direction: its inputs (row `b` at `b·stride`), its time-major output
/// rows, and the kept rows (empty when nothing is kept).
struct Step<'a> {
    gx: &'a [f32],
    gx_stride: usize,
    mask: &'a [f32],
    mask_stride: usize,
    out: &'a mut [f32],
    activations: &'a mut [f32],
    cells: &'a mut [f32],
    states: &'a mut [f32],
}

/// The gates and state update of one step, for every row, after `gh` has been computed. Compiled
/// for AVX-512 and AVX2 as well as the baseline, chosen at run time: the activations are most of
/// the work outside the matrix products, and the loops below vectorise.
fn cell_step(dims: &Dims, step: Step, carried: &mut Carried) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { cell_step_avx512(dims, step, carried) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { cell_step_avx2(dims, step, carried) };
        }
    }
    cell_step_body(dims, step, carried)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn cell_step_avx512(dims: &Dims, step: Step, carried: &mut Carried) {
    cell_step_body(dims, step, carried)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cell_step_avx2(dims: &Dims, step: Step, carried: &mut Carried) {
    cell_step_body(dims, step, carried)
}

#[inline(always)]
fn cell_step_body(dims: &Dims, step: Step, carried: &mut Carried) {
    let Dims { batch, hidden: h, gates, .. } = *dims;
    let g = gates * h;
    let keep = !step.states.is_empty();
    for b in 0..batch {
        let (hb, cb) = (&mut carried.h[b * h..][..h], &mut carried.c[b * h..][..h]);
        let out = &mut step.out[b * h..][..h];
        if step.mask[b * step.mask_stride] == 0.0 {
            // Padding: the state carries over, the output is 0.
            out.fill(0.0);
            if keep {
                step.states[b * h..][..h].copy_from_slice(hb);
                step.cells[b * h..][..h].copy_from_slice(cb);
            }
            continue;
        }
        let x = &step.gx[b * step.gx_stride..][..g];
        let gh = &mut carried.gh[b * g..][..g];
        if gates == 4 {
            for (a, x) in gh.iter_mut().zip(x) {
                *a += x;
            }
            let (ifg, o) = gh.split_at_mut(3 * h);
            let (i_f, gg) = ifg.split_at_mut(2 * h);
            i_f.iter_mut().for_each(|v| *v = sigmoid(*v));
            gg.iter_mut().for_each(|v| *v = tanh(*v));
            o.iter_mut().for_each(|v| *v = sigmoid(*v));
            let (i, f) = i_f.split_at(h);
            for j in 0..h {
                cb[j] = f[j] * cb[j] + i[j] * gg[j];
                hb[j] = o[j] * tanh(cb[j]);
            }
            if keep {
                step.activations[b * g..][..g].copy_from_slice(gh);
                step.cells[b * h..][..h].copy_from_slice(cb);
            }
        } else {
            let (rz, gh_n) = gh.split_at_mut(2 * h);
            for (a, x) in rz.iter_mut().zip(x) {
                *a = sigmoid(*a + x);
            }
            let (r, z) = rz.split_at(h);
            let n = &mut carried.n;
            for j in 0..h {
                n[j] = tanh(x[2 * h + j] + r[j] * gh_n[j]);
                hb[j] = n[j] + z[j] * (hb[j] - n[j]);
            }
            if keep {
                let act = &mut step.activations[b * g..][..g];
                act[..2 * h].copy_from_slice(rz);
                act[2 * h..].copy_from_slice(n);
                step.cells[b * h..][..h].copy_from_slice(gh_n);
            }
        }
        out.copy_from_slice(hb);
        if keep {
            step.states[b * h..][..h].copy_from_slice(hb);
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
        // The gradients of the gate inputs, time-major, allocated (so zeroed) on this thread; the
        // GRU's n gate reaches the input and the recurrent products differently, so it keeps the
        // recurrent side apart.
        let mut d_x = vec![0.0; dims.block(g)];
        let mut d_gh = if gates == 3 { vec![0.0; dims.block(g)] } else { Vec::new() };
        let (act, cell, state) = (&saved.activations[d], &saved.cells[d], &saved.states[d]);
        let w = &saved.w_hh[d * h * g..][..h * g];
        let (mut dh, mut dc) = (vec![0.0f32; batch * h], vec![0.0f32; batch * h]);
        for t in (0..len).rev() {
            let time = dims.time(d, t);
            for b in 0..batch {
                if saved.mask[b * len + time] == 0.0 {
                    continue; // output 0, state carried: dh and dc pass through unchanged.
                }
                let at = (t * batch + b) * h;
                let d_out = &d_out[(b * len + time) * 2 * h + d * h..][..h];
                let a = &act[(t * batch + b) * g..][..g];
                let dx = &mut d_x[(t * batch + b) * g..][..g];
                for j in 0..h {
                    let d_state = dh[b * h + j] + d_out[j];
                    if gates == 4 {
                        let (i, f, gg, o) = (a[j], a[h + j], a[2 * h + j], a[3 * h + j]);
                        let c_prev = if t > 0 { cell[at - batch * h + j] } else { 0.0 };
                        let tc = tanh(cell[at + j]);
                        let d_cell = d_state * o * (1.0 - tc * tc) + dc[b * h + j];
                        dx[j] = d_cell * gg * i * (1.0 - i);
                        dx[h + j] = d_cell * c_prev * f * (1.0 - f);
                        dx[2 * h + j] = d_cell * i * (1.0 - gg * gg);
                        dx[3 * h + j] = d_state * tc * o * (1.0 - o);
                        dc[b * h + j] = d_cell * f;
                        dh[b * h + j] = 0.0; // the product below adds what flows to h_{t-1}
                    } else {
                        let (r, z, n) = (a[j], a[h + j], a[2 * h + j]);
                        let h_prev = if t > 0 { state[at - batch * h + j] } else { 0.0 };
                        let d_n = d_state * (1.0 - z) * (1.0 - n * n);
                        let d_r = d_n * cell[at + j] * r * (1.0 - r);
                        let d_z = d_state * (h_prev - n) * z * (1.0 - z);
                        dx[j] = d_r;
                        dx[h + j] = d_z;
                        dx[2 * h + j] = d_n;
                        let dg = &mut d_gh[(t * batch + b) * g..][..g];
                        dg[j] = d_r;
                        dg[h + j] = d_z;
                        dg[2 * h + j] = d_n * r;
                        dh[b * h + j] = d_state * z;
                    }
                }
            }
            // dh_{t-1} += dG_t · W_hhᵀ (rows at padding have dG_t = 0).
            let d_gh_t: &[f32] = if gates == 3 { &d_gh[t * batch * g..][..batch * g] } else { &d_x[t * batch * g..][..batch * g] };
            matmul(batch, h, g, &mut dh, true, d_gh_t, (g, 1), w, (1, g));
            // SAFETY: this closure is direction d's only thread; `d_gx` outlives the join.
            unsafe { d_gx_rows.write(d, time, &d_x[t * batch * g..][..batch * g]) };
        }
        let d_gh: &[f32] = if gates == 3 { &d_gh } else { &d_x };
        // dW_hh = Σ_t h_{t-1}ᵀ · dG_t, one product over all steps (h_{-1} = 0).
        let earlier = (len - 1) * batch;
        matmul(h, g, earlier, d_w, false, &state[..earlier * h], (1, h), &d_gh[batch * g..], (g, 1));
        for row in d_gh.chunks_exact(g) {
            for (acc, v) in d_b.iter_mut().zip(row) {
                *acc += v;
            }
        }
    };
    rayon::join(|| direction(0, dw0, db0), || direction(1, dw1, db1));
    // SAFETY: each direction wrote its half of every token's row, at every step.
    unsafe { d_gx.set_len(2 * dims.block(g)) };
    (d_gx, d_w, d_b)
}
