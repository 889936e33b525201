//! The recurrence of a bidirectional LSTM or GRU layer on a GPU (burn's cubecl backend: wgpu,
//! CUDA) as one kernel launch over the whole sequence, forward and backward. Composed of tensor
//! operations each time step is a small matrix product and a few element-wise kernels, forward
//! and backward, so a recurrent model waits on kernel launches (on a lent H100: 0.12–0.19× PyTorch's
//! cuDNN). Here one workgroup (cube) runs a few texts in one direction through every step: their
//! carried states live in shared memory, each thread takes a hidden unit and reads its recurrent
//! weights from global memory once a step for all the block's texts, and a barrier ends each step. The backward kernel walks the steps in reverse
//! the same way and writes each step's gate gradients; the weight and bias gradients are then one
//! batched matrix product and one sum, as cuDNN does them.
//!
//! Same layouts and contract as the CPU recurrence (`recurrence.rs`): `gx` `[batch, len, 2·G·h]`,
//! `w_hh` `[2, h, G·h]`, `b_hh` `[2, G·h]`, `mask` `[batch, len]`, output `[batch, len, 2·h]`.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Autodiff, Cube, DispatchDevice, TensorMetadata};
use burn::prelude::*;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::stream::StreamId;
use burn_fusion::{FusionTensor, NoOp};
use burn_ir::{BackendIr, InitOperationIr, OperationIr, OperationOutput};
use cubecl::prelude::{CubeCount, CubeDim};
use kernels::{recurrence_backward_kernel, recurrence_forward_kernel};

use super::Dims;

type Fused = FusionTensor<FusionCubeRuntime>;

/// Most threads a workgroup gets; units beyond it are taken in turns.
const THREADS: usize = 256;
/// Most texts a workgroup steps together.
const MOST_ROWS: usize = 8;
/// The shared memory the kernels plan for: what WebGPU promises every device.
const SHARED_BYTES: usize = 16 * 1024;

/// Whether the recurrence runs as these kernels on this device: a cubecl device (wgpu, CUDA), with
/// or without autodiff, unless `VITRINE_UNFUSED_RECURRENCE` is set, and where a workgroup's shared
/// memory holds what the backward kernel keeps there, (2 + G)·h floats (an LSTM's 128 units: 3 KiB;
/// WebGPU promises 16 KiB, so up to 682 units anywhere).
pub fn fuses(device: &Device, hidden: usize) -> bool {
    if super::unfused_by_request() {
        return false;
    }
    match device.clone().without_autodiff().as_dispatch() {
        DispatchDevice::Cube(cube) => 6 * hidden * size_of::<f32>() <= cube.client().properties().hardware.max_shared_memory_size.min(SHARED_BYTES),
        _ => false,
    }
}

/// The recurrence on a cubecl device, with its backward pass under autodiff; `None` where the
/// tensors are not there or not f32.
pub fn recurrence(gx: &Tensor<3>, w_hh: &Tensor<3>, b_hh: &Tensor<2>, mask: &Tensor<2>, gates: usize) -> Option<Tensor<3>> {
    let device = gx.device();
    if !fuses(&device, w_hh.dims()[1]) || gx.dtype() != DType::F32 || gx.dims()[1] == 0 || gx.dims()[0] == 0 {
        return None;
    }
    let [batch, len, _] = gx.dims();
    let dims = Dims { batch, len, hidden: w_hh.dims()[1], gates };
    if !device.is_autodiff() {
        let plain = |t: Tensor<3>| t.try_into_primitive::<Cube>().ok().map(to_cube);
        let [gx, w_hh, b_hh, mask] = [plain(gx.clone())?, plain(w_hh.clone())?, plain(b_hh.clone().unsqueeze())?, plain(mask.clone().unsqueeze())?];
        let (out, _) = forward(&dims, gx, w_hh, b_hh, mask, false);
        return Some(Tensor::from_primitive::<Cube>(to_fusion(out)));
    }
    let tracked = |t: Tensor<3>| t.try_into_primitive::<Autodiff<Cube>>().ok();
    let [gx, w_hh, b_hh, mask] = [tracked(gx.clone())?, tracked(w_hh.clone())?, tracked(b_hh.clone().unsqueeze())?, tracked(mask.clone().unsqueeze())?];
    let mask = to_cube(mask.into_primitive());
    let out = match RecurrenceBackward.prepare::<NoCheckpointing>([gx.node(), w_hh.node(), b_hh.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let w = to_cube(w_hh.into_primitive());
            let (out, saved) = forward(&dims, to_cube(gx.into_primitive()), w.clone(), to_cube(b_hh.into_primitive()), mask.clone(), true);
            let [states, cells, acts] = saved.expect("kept when asked");
            prep.finish(Arc::new(Saved { dims, w_hh: w, mask, states, cells, acts }), to_fusion(out))
        }
        OpsKind::UnTracked(prep) => {
            let (out, _) = forward(&dims, to_cube(gx.into_primitive()), to_cube(w_hh.into_primitive()), to_cube(b_hh.into_primitive()), mask, false);
            prep.finish(to_fusion(out))
        }
    };
    Some(Tensor::from_primitive::<Autodiff<Cube>>(out))
}

/// What the backward pass needs: per direction and step (in the direction's order), the state
/// before the step, the LSTM's cell before it, and the gates' activations (an LSTM's i, f, g, o;
/// a GRU's r, z, n and the recurrent part of n), each `[2, len, batch, …]`.
#[derive(Debug)]
struct Saved {
    dims: Dims,
    w_hh: CubeTensor,
    mask: CubeTensor,
    states: CubeTensor,
    cells: CubeTensor,
    acts: CubeTensor,
}

/// The fusion stream's tensor as a cubecl tensor, contiguous: the operations queued before it
/// are handed to the device first, so a kernel launched on it comes after them.
fn to_cube(tensor: Fused) -> CubeTensor {
    let client = tensor.client.clone();
    into_contiguous(client.resolve_tensor_float::<CubeBackend>(tensor))
}

/// A cubecl tensor handed to the fusion stream, as burn's own `from_data` does.
fn to_fusion(tensor: CubeTensor) -> Fused {
    let client = burn_fusion::get_client::<CubeBackend>(&tensor.device);
    let (shape, dtype) = (tensor.shape(), tensor.dtype);
    let handle = <CubeBackend as BackendIr>::float_tensor_handle(tensor);
    let init = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
    client.register(StreamId::current(), OperationIr::Init(init), NoOp::<CubeBackend>::new()).output()
}

fn empty_like(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape.into(), like.dtype)
}

/// Launches the forward kernel; with `keep`, also returns what the backward pass needs.
fn forward(dims: &Dims, gx: CubeTensor, w_hh: CubeTensor, b_hh: CubeTensor, mask: CubeTensor, keep: bool) -> (CubeTensor, Option<[CubeTensor; 3]>) {
    let Dims { batch, len, hidden: h, gates } = *dims;
    let out = empty_like(&gx, vec![batch, len, 2 * h]);
    let saved = if keep {
        [vec![2, len, batch, h], vec![2, len, batch, h], vec![2, len, batch, 4 * h]].map(|shape| empty_like(&gx, shape))
    } else {
        [(); 3].map(|_| empty_like(&gx, vec![1]))
    };
    let [states, cells, acts] = saved.clone();
    let rows = rows_per_cube(&gx, 3 * h, batch);
    let dtype = burn::backend::cubecl::dtype_to_storage_type(gx.dtype);
    let client = gx.client.clone();
    recurrence_forward_kernel::launch(
        &client,
        CubeCount::Static(batch.div_ceil(rows) as u32, 2, 1),
        CubeDim::new_1d(threads(&gx, h)),
        gx.into_tensor_arg(),
        w_hh.into_tensor_arg(),
        b_hh.into_tensor_arg(),
        mask.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        states.into_tensor_arg(),
        cells.into_tensor_arg(),
        acts.into_tensor_arg(),
        h,
        gates,
        rows,
        keep,
        dtype,
    );
    (out, keep.then_some(saved))
}

/// Texts a workgroup steps together, each weight it reads used for all of them: up to
/// [`MOST_ROWS`], as many as fit in [`SHARED_BYTES`] (WebGPU's promise) at `floats` a text (the
/// forward kernel keeps 3·h, the backward one (2 + G)·h).
fn rows_per_cube(like: &CubeTensor, floats: usize, batch: usize) -> usize {
    let shared = like.client.properties().hardware.max_shared_memory_size.min(SHARED_BYTES);
    (shared / (floats * size_of::<f32>())).clamp(1, MOST_ROWS).min(batch)
}

fn threads(like: &CubeTensor, hidden: usize) -> u32 {
    let most = like.client.properties().hardware.max_cube_dim.0;
    (hidden.min(THREADS) as u32).min(most)
}

#[derive(Debug)]
struct RecurrenceBackward;

impl Backward<Cube, 3> for RecurrenceBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_gx, node_w, node_b] = ops.parents;
        let d_out = to_cube(grads.consume::<Cube>(&ops.node));
        let saved = ops.state;
        let Dims { batch, len, hidden: h, gates } = saved.dims;
        let g = gates * h;
        // Each step's gate gradients need the recurrent weights by gate unit, units contiguous.
        let w_hh_t = into_contiguous(CubeBackend::float_swap_dims(saved.w_hh.clone(), 1, 2)); // [2, G·h, h]
        let d_gx = empty_like(&d_out, vec![batch, len, 2 * g]);
        let d_rec = empty_like(&d_out, vec![2, len, batch, g]);
        let rows = rows_per_cube(&d_out, (2 + gates) * h, batch);
        let dtype = burn::backend::cubecl::dtype_to_storage_type(d_out.dtype);
        let client = d_out.client.clone();
        recurrence_backward_kernel::launch(
            &client,
            CubeCount::Static(batch.div_ceil(rows) as u32, 2, 1),
            CubeDim::new_1d(threads(&d_out, h)),
            d_out.into_tensor_arg(),
            w_hh_t.into_tensor_arg(),
            saved.mask.clone().into_tensor_arg(),
            saved.states.clone().into_tensor_arg(),
            saved.cells.clone().into_tensor_arg(),
            saved.acts.clone().into_tensor_arg(),
            d_gx.clone().into_tensor_arg(),
            d_rec.clone().into_tensor_arg(),
            h,
            gates,
            rows,
            dtype,
        );
        if let Some(node) = node_gx {
            grads.register::<Cube>(node.id, to_fusion(d_gx));
        }
        let d_rec = CubeBackend::float_reshape(d_rec, [2, len * batch, g].into());
        if let Some(node) = node_w {
            // Σ over steps and texts of the state before the step times its gate gradients.
            let states = CubeBackend::float_reshape(saved.states.clone(), [2, len * batch, h].into());
            let d_w = CubeBackend::float_matmul(CubeBackend::float_swap_dims(states, 1, 2), d_rec.clone());
            grads.register::<Cube>(node.id, to_fusion(d_w));
        }
        if let Some(node) = node_b {
            let d_b = CubeBackend::float_sum_dim(d_rec, 1); // [2, 1, G·h]
            grads.register::<Cube>(node.id, to_fusion(CubeBackend::float_reshape(d_b, [1, 2, g].into())));
        }
    }
}

/// The kernels, apart: cubecl's prelude has names of its own (`Tensor`, `Float`).
mod kernels {
    use cubecl::prelude::*;

    /// σ(x), with x clamped so that e^x stays finite (WGSL leaves an overflow's result undefined).
    #[cube]
    fn sigmoid_of<F: Float>(x: F) -> F {
        let x = F::clamp(x, F::new(-30.0_f32), F::new(30.0_f32));
        F::new(1.0_f32) / (F::new(1.0_f32) + F::exp(F::new(0.0_f32) - x))
    }

    /// tanh(x) = 1 − 2 / (e^{2x} + 1), finite for every x after the clamp.
    #[cube]
    fn tanh_of<F: Float>(x: F) -> F {
        let x = F::clamp(x, F::new(-15.0_f32), F::new(15.0_f32));
        F::new(1.0_f32) - F::new(2.0_f32) / (F::exp(x * F::new(2.0_f32)) + F::new(1.0_f32))
    }

    /// One cube per block of `rows` texts (x) and direction (y); its threads take the hidden
    /// units in turns, each unit's weights read once a step for every text of the block. Per
    /// step: each unit's gate sums over the texts' states in shared memory, the cell updates, the
    /// new states into the other half of the shared state, a barrier. Where the mask is 0 the
    /// state carries over and the output is 0; barriers stay in uniform control flow (WGSL
    /// requires it), so rows past the batch take part and write nothing.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn recurrence_forward_kernel<F: Float>(
        gx: &Tensor<F>,
        w_hh: &Tensor<F>,
        b_hh: &Tensor<F>,
        mask: &Tensor<F>,
        out: &mut Tensor<F>,
        states: &mut Tensor<F>,
        cells: &mut Tensor<F>,
        acts: &mut Tensor<F>,
        #[comptime] hidden: usize,
        #[comptime] gates: usize,
        #[comptime] rows: usize,
        #[comptime] keep: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let first = CUBE_POS_X as usize * rows;
        let d = CUBE_POS_Y as usize;
        let threads = CUBE_DIM_X as usize;
        let (batch, len) = (mask.shape(1), mask.shape(2));
        let g = gates * hidden;
        let one = F::new(1.0_f32);
        let mut state = Shared::<[F]>::new_slice(2 * rows * hidden);
        let mut cell = Shared::<[F]>::new_slice(rows * hidden);
        let mut j = UNIT_POS_X as usize;
        while j < rows * hidden {
            state[j] = F::new(0.0_f32);
            state[rows * hidden + j] = F::new(0.0_f32);
            cell[j] = F::new(0.0_f32);
            j += threads;
        }
        sync_cube();
        let mut current = 0usize;
        for s in 0..len {
            let time = if d == 0 { s } else { len - 1 - s };
            let next = 1 - current;
            let w_at = d * hidden * g;
            let bias_at = d * g;
            let mut j = UNIT_POS_X as usize;
            while j < hidden {
                // Gate q of row r at q·rows + r.
                let mut sums = Array::<F>::new(4 * rows);
                for k in 0..hidden {
                    let at = w_at + k * g + j;
                    let w0 = w_hh[at];
                    let w1 = w_hh[at + hidden];
                    let w2 = w_hh[at + 2 * hidden];
                    let mut w3 = F::new(0.0_f32);
                    if gates == 4 {
                        w3 = w_hh[at + 3 * hidden];
                    }
                    #[unroll]
                    for r in 0..rows {
                        let hk = state[(current * rows + r) * hidden + k];
                        sums[r] += hk * w0;
                        sums[rows + r] += hk * w1;
                        sums[2 * rows + r] += hk * w2;
                        if gates == 4 {
                            sums[3 * rows + r] += hk * w3;
                        }
                    }
                }
                #[unroll]
                for r in 0..rows {
                    let b = first + r;
                    if b < batch {
                        let m = mask[b * len + time];
                        let x_at = (b * len + time) * 2 * g + d * g;
                        let saved_at = (d * len + s) * batch + b;
                        let h_old = state[(current * rows + r) * hidden + j];
                        let a0 = sums[r] + b_hh[bias_at + j] + gx[x_at + j];
                        let a1 = sums[rows + r] + b_hh[bias_at + hidden + j] + gx[x_at + hidden + j];
                        // An LSTM's g; a GRU's n, its recurrent part alone (scaled by r below).
                        let a2 = sums[2 * rows + r] + b_hh[bias_at + 2 * hidden + j];
                        let h_new = if gates == 4 {
                            let i = sigmoid_of::<F>(a0);
                            let f = sigmoid_of::<F>(a1);
                            let gg = tanh_of::<F>(a2 + gx[x_at + 2 * hidden + j]);
                            let o = sigmoid_of::<F>(sums[3 * rows + r] + b_hh[bias_at + 3 * hidden + j] + gx[x_at + 3 * hidden + j]);
                            let c_old = cell[r * hidden + j];
                            let c = f * c_old + i * gg;
                            cell[r * hidden + j] = m * c + (one - m) * c_old;
                            if keep {
                                cells[saved_at * hidden + j] = c_old;
                                let a = saved_at * 4 * hidden + j;
                                acts[a] = m * i;
                                acts[a + hidden] = m * f;
                                acts[a + 2 * hidden] = m * gg;
                                acts[a + 3 * hidden] = m * o;
                            }
                            m * (o * tanh_of::<F>(c)) + (one - m) * h_old
                        } else {
                            let rr = sigmoid_of::<F>(a0);
                            let z = sigmoid_of::<F>(a1);
                            let n = tanh_of::<F>(gx[x_at + 2 * hidden + j] + rr * a2);
                            if keep {
                                let a = saved_at * 4 * hidden + j;
                                acts[a] = m * rr;
                                acts[a + hidden] = m * z;
                                acts[a + 2 * hidden] = m * n;
                                acts[a + 3 * hidden] = m * a2;
                            }
                            m * (n + z * (h_old - n)) + (one - m) * h_old
                        };
                        if keep {
                            states[saved_at * hidden + j] = h_old;
                        }
                        state[(next * rows + r) * hidden + j] = h_new;
                        out[(b * len + time) * 2 * hidden + d * hidden + j] = m * h_new;
                    }
                }
                j += threads;
            }
            sync_cube();
            current = next;
        }
    }

    /// The steps in reverse, one cube per block of `rows` texts and direction: each unit's gate
    /// gradients from the state's and the cell's gradients (into `d_gx`, and the recurrent ones
    /// into `d_rec` and shared memory), a barrier, then each unit's state gradient for the step
    /// before as the sum over the gate gradients times its row of the recurrent weights
    /// (`w_hh_t` `[2, G·h, h]`, read once for the block's texts), a barrier.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn recurrence_backward_kernel<F: Float>(
        d_out: &Tensor<F>,
        w_hh_t: &Tensor<F>,
        mask: &Tensor<F>,
        states: &Tensor<F>,
        cells: &Tensor<F>,
        acts: &Tensor<F>,
        d_gx: &mut Tensor<F>,
        d_rec: &mut Tensor<F>,
        #[comptime] hidden: usize,
        #[comptime] gates: usize,
        #[comptime] rows: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let first = CUBE_POS_X as usize * rows;
        let d = CUBE_POS_Y as usize;
        let threads = CUBE_DIM_X as usize;
        let (batch, len) = (mask.shape(1), mask.shape(2));
        let g = gates * hidden;
        let one = F::new(1.0_f32);
        let mut d_state = Shared::<[F]>::new_slice(rows * hidden);
        let mut d_cell = Shared::<[F]>::new_slice(rows * hidden);
        // Row r's gate gradients at r·G·h; rows past the batch keep zeros.
        let mut d_pre = Shared::<[F]>::new_slice(rows * gates * hidden);
        let mut j = UNIT_POS_X as usize;
        while j < rows * gates * hidden {
            d_pre[j] = F::new(0.0_f32);
            if j < rows * hidden {
                d_state[j] = F::new(0.0_f32);
                d_cell[j] = F::new(0.0_f32);
            }
            j += threads;
        }
        sync_cube();
        for step in 0..len {
            let s = len - 1 - step;
            let time = if d == 0 { s } else { len - 1 - s };
            let mut j = UNIT_POS_X as usize;
            while j < hidden {
                #[unroll]
                for r in 0..rows {
                    let b = first + r;
                    if b < batch {
                        let m = mask[b * len + time];
                        let saved_at = (d * len + s) * batch + b;
                        let x_at = (b * len + time) * 2 * g + d * g;
                        let rec_at = saved_at * g;
                        let pre_at = r * g + j;
                        let dh = d_state[r * hidden + j] + m * d_out[(b * len + time) * 2 * hidden + d * hidden + j];
                        let a = saved_at * 4 * hidden + j;
                        if gates == 4 {
                            let i = acts[a];
                            let f = acts[a + hidden];
                            let gg = acts[a + 2 * hidden];
                            let o = acts[a + 3 * hidden];
                            let c_old = cells[saved_at * hidden + j];
                            let tc = tanh_of::<F>(f * c_old + i * gg);
                            let dc = d_cell[r * hidden + j] + dh * o * (one - tc * tc);
                            let di = m * dc * gg * i * (one - i);
                            let df = m * dc * c_old * f * (one - f);
                            let dg = m * dc * i * (one - gg * gg);
                            let d_o = m * dh * tc * o * (one - o);
                            d_gx[x_at + j] = di;
                            d_gx[x_at + hidden + j] = df;
                            d_gx[x_at + 2 * hidden + j] = dg;
                            d_gx[x_at + 3 * hidden + j] = d_o;
                            d_rec[rec_at + j] = di;
                            d_rec[rec_at + hidden + j] = df;
                            d_rec[rec_at + 2 * hidden + j] = dg;
                            d_rec[rec_at + 3 * hidden + j] = d_o;
                            d_pre[pre_at] = di;
                            d_pre[pre_at + hidden] = df;
                            d_pre[pre_at + 2 * hidden] = dg;
                            d_pre[pre_at + 3 * hidden] = d_o;
                            d_cell[r * hidden + j] = m * dc * f + (one - m) * d_cell[r * hidden + j];
                        } else {
                            let rr = acts[a];
                            let z = acts[a + hidden];
                            let n = acts[a + 2 * hidden];
                            let gh_n = acts[a + 3 * hidden];
                            let h_old = states[saved_at * hidden + j];
                            let dn = m * dh * (one - z) * (one - n * n);
                            let dr = dn * gh_n * rr * (one - rr);
                            let dz = m * dh * (h_old - n) * z * (one - z);
                            let dgh_n = dn * rr;
                            d_gx[x_at + j] = dr;
                            d_gx[x_at + hidden + j] = dz;
                            d_gx[x_at + 2 * hidden + j] = dn;
                            d_rec[rec_at + j] = dr;
                            d_rec[rec_at + hidden + j] = dz;
                            d_rec[rec_at + 2 * hidden + j] = dgh_n;
                            d_pre[pre_at] = dr;
                            d_pre[pre_at + hidden] = dz;
                            d_pre[pre_at + 2 * hidden] = dgh_n;
                        }
                        d_state[r * hidden + j] = dh;
                    }
                }
                j += threads;
            }
            sync_cube();
            let mut j = UNIT_POS_X as usize;
            while j < hidden {
                let w_at = d * g * hidden + j;
                let mut sums = Array::<F>::new(rows);
                for q in 0..g {
                    let w = w_hh_t[w_at + q * hidden];
                    #[unroll]
                    for r in 0..rows {
                        sums[r] += d_pre[r * g + q] * w;
                    }
                }
                #[unroll]
                for r in 0..rows {
                    let b = first + r;
                    if b < batch {
                        let m = mask[b * len + time];
                        let dh = d_state[r * hidden + j];
                        // A GRU's new state keeps z of the old one directly.
                        let mut direct = F::new(0.0_f32);
                        if gates == 3 {
                            direct = dh * acts[((d * len + s) * batch + b) * 4 * hidden + hidden + j];
                        }
                        d_state[r * hidden + j] = m * (direct + sums[r]) + (one - m) * dh;
                    }
                }
                j += threads;
            }
            sync_cube();
        }
    }
}
