//! Choosing where tensors live: flex or ndarray on the CPU, or a GPU through wgpu (or CUDA,
//! in builds with the `cuda` feature). Builds with the `tch` feature add burn's LibTorch backend,
//! for the speed diagnostic only (scripts/bench-tch-diagnostic.sh).

use std::fmt;

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::Ops;
use burn::backend::flex::FlexTensor;
use burn::tensor::wgpu::wgpu;
use burn::tensor::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

/// The backend a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// A hardware GPU through wgpu when there is one, otherwise flex (the fastest CPU backend).
    #[default]
    Auto,
    Flex,
    Ndarray,
    Wgpu,
    /// NVIDIA's native path (builds with the `cuda` feature); never picked by `auto`.
    Cuda,
    /// burn's LibTorch backend on the CPU (builds with the `tch` feature): a diagnostic that
    /// separates burn's overhead from its kernels; never picked by `auto`, never shipped.
    Tch,
}

impl std::str::FromStr for BackendChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            "tch" => Ok(Self::Tch),
            _ => bail!("unknown backend `{s}`: expected auto, flex, ndarray, wgpu, cuda or tch"),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Auto => "auto",
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
            Self::Tch => "tch",
        };
        f.write_str(name)
    }
}

/// A device ready for work, and what it is in words.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    /// The plain (inference) device; training uses `device.clone().autodiff()`.
    pub device: Device,
    /// The concrete backend: never `Auto`.
    pub backend: BackendChoice,
    /// Human-readable description, e.g. `wgpu: NVIDIA H100 (DiscreteGpu, Vulkan)`.
    pub description: String,
    /// The further devices of data-parallel training (`run.devices`), plain like `device`:
    /// each step's batch is split between `device` and these. Empty for one device.
    pub replicas: Vec<Device>,
}

/// One wgpu adapter as the system reports it.
#[derive(Debug, Clone)]
pub struct GpuAdapter {
    pub name: String,
    pub kind: wgpu::DeviceType,
    pub api: wgpu::Backend,
}

impl GpuAdapter {
    /// Software rasterisers (llvmpipe, lavapipe, WARP) report themselves as CPU devices.
    pub fn is_hardware(&self) -> bool {
        matches!(self.kind, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu)
    }

    fn describe(&self) -> String {
        format!("wgpu: {} ({:?}, {:?})", self.name, self.kind, self.api)
    }
}

/// Every adapter wgpu can see, best first (discrete, integrated, virtual, then software).
pub fn gpu_adapters() -> Vec<GpuAdapter> {
    // Vulkan, Metal and DX12: what burn's wgpu runtime drives (probing GL only adds noise).
    let descriptor = wgpu::InstanceDescriptor { backends: wgpu::Backends::PRIMARY, ..wgpu::InstanceDescriptor::new_without_display_handle() };
    let instance = wgpu::Instance::new(descriptor);
    let mut adapters: Vec<GpuAdapter> = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            GpuAdapter { name: info.name, kind: info.device_type, api: info.backend }
        })
        .collect();
    adapters.sort_by_key(|a| rank(a.kind));
    adapters
}

fn rank(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// Flushes subnormal floats to zero, as results and as inputs, on this thread and on every
/// thread of rayon's pool, where burn's CPU backends compute: the CPU handles a subnormal in a
/// microcode assist some hundred times slower than a normal number. TensorFlow does the same on
/// its CPU threads (PyTorch on request, `torch.set_flush_denormal`). A `bpr-mf` with dense Adam
/// and L2, 5 seconds into `vitrine bench`, had 35% of its customer embeddings subnormal (Adam
/// drives the rarely seen ones towards zero) and ranked 15,500 customers/s instead of 300,000.
/// Values under 1.2e-38 count as zero; nothing else changes. Call once, at the start.
pub fn flush_subnormals_to_zero() {
    flush_subnormals_on_this_thread();
    rayon::broadcast(|_| flush_subnormals_on_this_thread());
}

/// With `VITRINE_NO_AVX512` set, the CPU kernels of Vitrine's burn-flex patch run their AVX2
/// code on an AVX-512 machine, to time that code where no AVX2-only CPU is at hand (gemm's own
/// kernels keep AVX-512, so only a before/after of the same switch means anything). Call once,
/// at the start.
pub fn apply_kernel_request() {
    #[cfg(target_arch = "x86_64")]
    if std::env::var_os("VITRINE_NO_AVX512").is_some() {
        burn::backend::flex::ops::allow_avx512(false);
    }
}

fn flush_subnormals_on_this_thread() {
    // SAFETY: sets only the flush-to-zero bits of this thread's floating-point control register.
    #[cfg(target_arch = "x86_64")]
    #[allow(deprecated)]
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        // MXCSR's FTZ (bit 15, results) and DAZ (bit 6, inputs).
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
    #[cfg(target_arch = "aarch64")]
    unsafe {
        // FPCR's FZ (bit 24), for results and inputs.
        let fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr | (1 << 24));
    }
}

/// Whether `device` computes in host memory (the CPU backends), where reading a tensor back
/// costs a copy at most.
pub fn computes_in_host_memory(device: &Device) -> bool {
    #[allow(deprecated)]
    let cpu = [Device::flex(), Device::ndarray()];
    let device = device.clone().without_autodiff();
    #[cfg(feature = "tch")]
    if device == Device::libtorch() {
        return true;
    }
    cpu.contains(&device)
}

/// Runs `work` on a thread of rayon's pool when `device` is `flex`, whose operations compute
/// there, and returns its result. From a thread outside the pool every parallel operation hands
/// its tasks to the pool and sleeps until they are done, a round trip through the kernel an
/// operation: a quarter of `fashion-cnn`'s samples at batch 1 were in `futex` wake-ups and context
/// switches. On a pool thread, the other threads steal the tasks instead. `work` must be one step
/// of compute that waits on nothing else (not a data loader's channel: with its loader's work
/// queued behind it on a one-thread pool it would wait forever). For inference: a training step
/// goes through [`train_on_compute_pool`].
pub fn on_compute_pool<R>(device: &Device, work: impl FnOnce() -> R) -> R {
    if !hand_to_pool(device) {
        return work();
    }
    let work = Lent(work);
    let result = rayon::scope(move |_| {
        let work = work;
        Lent((work.0)())
    });
    result.0
}

/// [`on_compute_pool`] for a training step: always on the pool's first thread. burn's batch norm
/// keeps its running statistics' updates per thread (`RunningState`, made for data-parallel
/// threads) and averages them when it syncs, so steps landing on one thread, then another, mixed
/// a stale mean into the new one (and a resumed run drifted from an uninterrupted one). Waking
/// every thread costs a little: `bpr-mf`'s ~1 ms steps ran ~8% slower than on any thread (they
/// now stay off the pool: [`crate::train::TrainTask::STEPS_ON_COMPUTE_POOL`]).
pub fn train_on_compute_pool<R>(device: &Device, work: impl FnOnce() -> R) -> R {
    if !hand_to_pool(device) {
        return work();
    }
    let work = Lent(std::cell::Cell::new(Some(work)));
    // The other threads return at once, free to steal the step's parallel tasks.
    let mut results = rayon::broadcast(|context| {
        let work = &work;
        (context.index() == 0).then(|| Lent(work.0.take().expect("run once, on the first thread")()))
    });
    results.swap_remove(0).expect("the first thread's result").0
}

/// Whether work for `device` goes to the pool: `flex` computes there, and this thread is not
/// one of the pool's already.
fn hand_to_pool(device: &Device) -> bool {
    rayon::current_thread_index().is_none() && is_flex(device)
}

/// Work lent to a pool thread and its result lent back.
struct Lent<T>(T);
// SAFETY: the pool functions above run the work on one pool thread while the calling thread waits
// for it: what it borrows and returns is used by one thread at a time, as if moved there and
// back. Nothing in burn's CPU backend or Vitrine's models is tied to the calling thread (the
// random state is a global behind a lock; the subnormal flush is set on the pool's threads too).
unsafe impl<T> Send for Lent<T> {}
unsafe impl<T> Sync for Lent<T> {}

/// Whether `device` is burn's `flex` CPU backend, with or without autodiff: where Vitrine's
/// fused operations (activations, the recurrence) run.
pub fn is_flex(device: &Device) -> bool {
    matches!(device.clone().without_autodiff().as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// Where a fused one-input operation's backward pass on `flex` starts: its output's gradient
/// (contiguous), the input's node, and what the forward pass kept; `None` when the input needs
/// no gradient (the output's is consumed all the same).
pub(crate) fn one_input_backward<S>(ops: Ops<S, 1>, grads: &mut Gradients) -> Option<(FlexTensor, NodeId, S)> {
    let [input] = ops.parents;
    let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
    input.map(|input| (grad, input.id, ops.state))
}

/// Resolves a choice to a device. `auto` never picks a software wgpu adapter; `wgpu` may.
pub fn select_device(choice: BackendChoice) -> Result<ComputeDevice> {
    match choice {
        BackendChoice::Flex => Ok(flex()),
        BackendChoice::Ndarray => Ok(ComputeDevice {
            // Deprecated upstream in favour of flex, but still selectable for comparison.
            #[allow(deprecated)]
            device: Device::ndarray(),
            backend: BackendChoice::Ndarray,
            description: "ndarray (CPU; far slower than flex for convolutions, see README)".into(),
            replicas: Vec::new(),
        }),
        BackendChoice::Auto => {
            let adapters = gpu_adapters();
            match adapters.iter().find(|a| a.is_hardware()) {
                Some(adapter) => Ok(wgpu_device(adapter, 0)),
                None => Ok(flex()),
            }
        }
        BackendChoice::Wgpu => {
            let adapters = gpu_adapters();
            match adapters.first() {
                Some(adapter) => Ok(wgpu_device(adapter, 0)),
                None => bail!(
                    "--backend wgpu: no wgpu adapter found (install a Vulkan driver, e.g. \
                     `apt-get install mesa-vulkan-drivers`, or use --backend flex)"
                ),
            }
        }
        BackendChoice::Cuda => cuda(0),
        BackendChoice::Tch => tch(),
    }
}

/// The devices of `run.devices`, the first the main one (where the optimizer steps and
/// validation runs), for data-parallel training: `flex`, `ndarray`, `wgpu:N` (the N-th adapter
/// of the best kind, as `vitrine devices` lists them) or `cuda:N`.
pub fn select_devices(names: &[String]) -> Result<ComputeDevice> {
    let mut chosen = Vec::with_capacity(names.len());
    for name in names {
        let compute = named_device(name).with_context(|| format!("run.devices: `{name}`"))?;
        if chosen.iter().any(|c: &ComputeDevice| c.device == compute.device) {
            bail!("run.devices: `{name}` is named twice (each device takes its own share of a batch)");
        }
        chosen.push(compute);
    }
    let mut devices = chosen.into_iter();
    let Some(mut main) = devices.next() else { bail!("run.devices is empty: name at least one device, or leave it out") };
    for replica in devices {
        main.description = format!("{} + {}", main.description, replica.description);
        main.replicas.push(replica.device);
    }
    if !main.replicas.is_empty() {
        main.description = format!("{} (data-parallel)", main.description);
    }
    Ok(main)
}

/// One device of `run.devices` by name.
fn named_device(name: &str) -> Result<ComputeDevice> {
    let (backend, index) = match name.split_once(':') {
        Some((backend, index)) => {
            let index: usize = index.parse().map_err(|_| anyhow::anyhow!("`{index}` is not a device number"))?;
            (backend, Some(index))
        }
        None => (name, None),
    };
    match (backend.parse::<BackendChoice>()?, index) {
        (BackendChoice::Flex | BackendChoice::Ndarray | BackendChoice::Tch, Some(_)) => bail!("the CPU backends have one device each: write `{backend}`"),
        (choice @ (BackendChoice::Flex | BackendChoice::Ndarray | BackendChoice::Tch), None) => select_device(choice),
        (BackendChoice::Wgpu, index) => {
            let adapters = gpu_adapters();
            // None at all: select_device's error, which says what to install.
            let Some(best) = adapters.first() else { return select_device(BackendChoice::Wgpu) };
            let index = index.unwrap_or(0);
            let same_kind: Vec<&GpuAdapter> = adapters.iter().filter(|a| a.kind == best.kind).collect();
            match same_kind.get(index) {
                Some(adapter) => Ok(wgpu_device(adapter, index)),
                None => bail!("wgpu has {} adapter(s) of the kind {:?}, numbered from 0", same_kind.len(), best.kind),
            }
        }
        (BackendChoice::Cuda, index) => cuda(index.unwrap_or(0)),
        (BackendChoice::Auto, _) => bail!("name a device, not `auto`"),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<ComputeDevice> {
    bail!(
        "--backend cuda: this vitrine was built without CUDA; build it with \
         `cargo build --release --features cuda` (it needs the NVIDIA driver and NVRTC at run time), \
         or use --backend wgpu"
    )
}

/// CUDA device `index`, once a small computation on it has worked: cubecl panics when the driver or
/// NVRTC is missing, and that must become an error, not a crash halfway into a run.
#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<ComputeDevice> {
    use burn::tensor::Tensor;
    let device = Device::cuda(index);
    let probe = device.clone();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let worked = std::panic::catch_unwind(move || {
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &probe);
        (x.clone() * x).sum().into_scalar::<f32>()
    });
    std::panic::set_hook(quiet);
    match worked {
        Ok(sum) if sum == 14.0 => {
            Ok(ComputeDevice { device, backend: BackendChoice::Cuda, description: format!("cuda: device {index} (NVRTC)"), replicas: Vec::new() })
        }
        Ok(sum) => bail!("--backend cuda: a test sum on device {index} gave {sum}, not 14; the CUDA device is unusable"),
        Err(panic) => {
            let why = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("unknown failure");
            bail!("--backend cuda: CUDA device {index} could not run ({why}); it needs the NVIDIA driver and NVRTC. Use --backend wgpu instead")
        }
    }
}

#[cfg(not(feature = "tch"))]
fn tch() -> Result<ComputeDevice> {
    bail!(
        "--backend tch: this vitrine was built without LibTorch; scripts/bench-tch-diagnostic.sh \
         builds one with `--features tch` (a speed diagnostic, not a backend to train with)"
    )
}

/// burn's LibTorch backend on the CPU, linked against the PyTorch wheel the build found.
#[cfg(feature = "tch")]
fn tch() -> Result<ComputeDevice> {
    Ok(ComputeDevice {
        device: Device::libtorch(),
        backend: BackendChoice::Tch,
        description: "tch (LibTorch on the CPU; diagnostic)".into(),
        replicas: Vec::new(),
    })
}

fn flex() -> ComputeDevice {
    ComputeDevice {
        device: Device::flex(),
        backend: BackendChoice::Flex,
        description: format!("flex (CPU, {} threads)", rayon::current_num_threads()),
        replicas: Vec::new(),
    }
}

/// `adapter`, the `index`-th of its kind: cubecl numbers adapters within their kind.
fn wgpu_device(adapter: &GpuAdapter, index: usize) -> ComputeDevice {
    let kind = match adapter.kind {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(index),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(index),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(index),
        wgpu::DeviceType::Cpu | wgpu::DeviceType::Other => DeviceKind::Cpu,
    };
    let software = if adapter.is_hardware() { "" } else { " [software adapter: slow, for testing]" };
    ComputeDevice { device: Device::wgpu(kind), backend: BackendChoice::Wgpu, description: format!("{}{software}", adapter.describe()), replicas: Vec::new() }
}

/// Held by the tests that seed `flex`'s one generator and compare what it draws: the tests of
/// a binary run on several threads, and another such test drawing in between changes the values.
#[cfg(test)]
pub(crate) fn seeded_draws() -> std::sync::MutexGuard<'static, ()> {
    static DRAWING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    DRAWING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls `f(avx512)` once with flex's kernels allowed AVX-512 and, on x86-64, once kept to
/// their AVX2 code (so an AVX-512 machine tests both). The flag is process-wide: a test running
/// beside one of these may take either code, both correct.
#[cfg(test)]
pub(crate) fn for_each_instruction_set(mut f: impl FnMut(bool)) {
    #[cfg(target_arch = "x86_64")]
    for avx512 in [true, false] {
        burn::backend::flex::ops::allow_avx512(avx512);
        f(avx512);
    }
    #[cfg(target_arch = "x86_64")]
    burn::backend::flex::ops::allow_avx512(true);
    #[cfg(not(target_arch = "x86_64"))]
    f(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_steps_run_on_the_compute_pool_and_others_where_they_are_called() {
        let outside = std::thread::spawn(|| {
            let on_flex = on_compute_pool(&Device::flex().autodiff(), || (rayon::current_thread_index(), vec![1, 2, 3]));
            #[allow(deprecated)] // burn-ndarray: a CPU device that is not flex
            let on_ndarray = on_compute_pool(&Device::ndarray(), rayon::current_thread_index);
            (on_flex, on_ndarray)
        });
        let ((pool_thread, returned), on_ndarray) = outside.join().unwrap();
        assert!(pool_thread.is_some(), "flex's step ran on a pool thread");
        assert_eq!(returned, [1, 2, 3]);
        assert_eq!(on_ndarray, None, "ndarray's step ran on the calling thread");
        // Already on a pool thread, it runs in place.
        let (here, there) = rayon::scope(|_| (rayon::current_thread_index(), on_compute_pool(&Device::flex(), rayon::current_thread_index)));
        assert_eq!(here, there);
    }

    /// burn's batch norm keeps running-statistics updates per thread and averages them on sync:
    /// steps spread over the pool's threads would give another running mean than steps on one.
    #[test]
    fn batch_norm_steps_on_the_pool_keep_one_running_mean() {
        use burn::module::Module;
        use burn::tensor::Tensor;
        fn running_mean_after_steps(step: &dyn Fn(&dyn Fn())) -> Vec<f32> {
            let device = Device::flex().autodiff();
            let bn = burn::nn::BatchNormConfig::new(3).init(&device);
            for i in 0..24 {
                let x = Tensor::<4>::ones([2, 3, 2, 2], &device) * (i as f32 + 1.0);
                step(&|| drop(bn.forward(x.clone())));
            }
            // `valid` folds the threads' updates in, as saving the model does.
            bn.valid().running_mean.value().into_data().try_to_vec::<f32>().unwrap()
        }
        let here = running_mean_after_steps(&|step| step());
        let on_pool = running_mean_after_steps(&|step| train_on_compute_pool(&Device::flex(), step));
        assert!((0..8).all(|_| train_on_compute_pool(&Device::flex(), rayon::current_thread_index) == Some(0)));
        assert_eq!(on_pool, here);
        assert!(here[0] > 1.0, "the running mean moved: {here:?}");
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn subnormals_flush_to_zero_on_every_pool_thread() {
        // A pool of its own, so that other tests keep the default.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let half_of_the_smallest_normal = || std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5f32);
        assert!(pool.broadcast(|_| half_of_the_smallest_normal()).iter().all(|v| v.is_subnormal()), "subnormal by default");
        pool.install(flush_subnormals_to_zero);
        assert_eq!(pool.broadcast(|_| half_of_the_smallest_normal()), [0.0, 0.0]);
        let subnormal = std::hint::black_box(f32::from_bits(1));
        assert_eq!(pool.broadcast(|_| subnormal * std::hint::black_box(2.0f32)), [0.0, 0.0], "as inputs too");
    }

    #[test]
    fn auto_never_picks_a_software_adapter() {
        let selected = select_device(BackendChoice::Auto).unwrap();
        let has_hardware = gpu_adapters().iter().any(GpuAdapter::is_hardware);
        assert_eq!(selected.backend == BackendChoice::Wgpu, has_hardware, "{}", selected.description);
        assert!(!selected.description.contains("software"));
    }

    /// `got` equals `want` to 1e-5 of `want`'s largest magnitude (at least 1).
    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: size");
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = crate::metrics::largest_gap(got, want);
        assert!(worst <= 1e-5 * scale, "{what} differs by {worst} (scale {scale})");
    }

    /// The patched burn-flex (patches/burn-flex) computes 2-D convolutions, transposed
    /// convolutions and all their gradients its own way; burn-ndarray keeps upstream's.
    #[test]
    fn flex_convolutions_and_their_gradients_match_ndarray() {
        use burn::tensor::module::{conv_transpose2d, conv2d};
        use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
        use burn::tensor::{Tensor, TensorData};

        enum Op {
            Conv(ConvOptions<2>),
            Transpose(ConvTransposeOptions<2>),
        }
        // (input [n, c, h, w], weight, operation)
        let cases = [
            ([3, 1, 9, 9], [4, 1, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([2, 3, 10, 7], [5, 3, 4, 4], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 1))),
            ([2, 4, 9, 8], [6, 2, 3, 2], Op::Conv(ConvOptions::new([2, 1], [0, 2], [2, 1], 2))),
            ([1, 2, 8, 8], [3, 2, 3, 3], Op::Conv(ConvOptions::new_with_padding([1, 2], [(0, 2), (1, 0)], [1, 1], 1))),
            // Stride 1 with "same" padding (contiguous plane copies): dilated, one image split
            // into tiles of rows across the threads, uneven padding.
            ([1, 3, 7, 6], [4, 3, 3, 3], Op::Conv(ConvOptions::new([1, 1], [2, 2], [2, 2], 1))),
            ([1, 2, 6, 5], [3, 2, 3, 2], Op::Conv(ConvOptions::new_with_padding([1, 1], [(2, 0), (1, 0)], [1, 1], 1))),
            // Batches of 5 and 4 images (uneven and even shares of two threads): gathered
            // columns in groups, a transposed convolution.
            ([5, 4, 9, 8], [6, 2, 3, 3], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 2))),
            ([4, 3, 5, 6], [3, 2, 3, 3], Op::Transpose(ConvTransposeOptions::new([2, 2], [1, 1], [1, 1], [1, 1], 1))),
            // Images smaller than the kernel (the last blocks of a ResNet on small photos).
            ([2, 3, 1, 1], [4, 3, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([1, 2, 2, 3], [3, 2, 7, 7], Op::Conv(ConvOptions::new([2, 2], [3, 3], [1, 1], 1))),
            ([1, 2, 2, 1], [3, 2, 7, 7], Op::Conv(ConvOptions::new([1, 1], [3, 3], [1, 1], 1))),
            ([2, 4, 5, 5], [4, 3, 4, 4], Op::Transpose(ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1))),
            ([2, 3, 4, 6], [3, 2, 3, 3], Op::Transpose(ConvTransposeOptions::new([2, 3], [1, 0], [1, 2], [1, 1], 1))),
            ([2, 3, 5, 6], [3, 2, 3, 3], Op::Transpose(ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1))),
            ([1, 4, 5, 4], [4, 2, 3, 3], Op::Transpose(ConvTransposeOptions::new([1, 2], [1, 1], [0, 1], [2, 1], 2))),
            // 3×3, stride 1, padding 1 on images of 14×14 or more: the direct kernels on AVX-512
            // machines with an image per thread (`conv_direct`; elsewhere im2col + gemm again).
            // 20 outputs = two register blocks and four channels of a third (the weight
            // gradient's: six blocks of 3 and two channels); three images, the last grid block
            // partly past the image; 18 images, 9 to a thread's weight-gradient share (a run of
            // 8 images, then 1); a transposed one.
            ([2, 5, 14, 14], [20, 5, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([18, 2, 14, 14], [4, 2, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([3, 9, 16, 14], [8, 9, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([2, 6, 16, 14], [6, 11, 3, 3], Op::Transpose(ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1))),
            // The same convolutions with 16 channels or more: Winograd on AVX-512 and AVX2 machines
            // (`conv_winograd`; F(4×4, 3×3) for the output and the input gradient, F(2×2, 3×3)
            // for the weight gradient). Heights and widths not multiples of 4 or of 2 (tiles cut
            // off at the last rows and columns), 3 and 5 images (tasks of 2 and 3 images, the
            // last one short), 18 tiles to a row (a block of 16 and one of 2) of either size,
            // an image of 156 F(4×4) tiles (bands of 5, 5 and 3 tile rows), a transposed one.
            ([3, 16, 7, 9], [17, 16, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([5, 20, 14, 12], [16, 20, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([2, 16, 5, 35], [16, 16, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([2, 16, 6, 70], [16, 16, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([2, 16, 50, 46], [16, 16, 3, 3], Op::Conv(ConvOptions::new([1, 1], [1, 1], [1, 1], 1))),
            ([2, 16, 6, 7], [16, 18, 3, 3], Op::Transpose(ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1))),
            // Strided convolutions of 8 images or more: several whole images to a task (the last
            // one short). Kernel 4, stride 2, padding 1, halving the image (the row-wise col2im
            // on AVX-512 and AVX2 machines): 11 images, rows of 11 outputs (a block of 8 and one
            // of 3) and of 20 (two blocks of 8 and one of 4), a transposed one; then stride 2
            // otherwise (the scatter col2im).
            ([11, 3, 10, 8], [5, 3, 4, 4], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 1))),
            ([10, 2, 6, 22], [3, 2, 4, 4], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 1))),
            ([8, 2, 6, 40], [3, 2, 4, 4], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 1))),
            ([9, 6, 4, 5], [6, 3, 4, 4], Op::Transpose(ConvTransposeOptions::new([2, 2], [1, 1], [0, 0], [1, 1], 1))),
            ([9, 2, 9, 7], [3, 2, 3, 3], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 1))),
            // Column stride 2 on rows of at most 32 pixels: on AVX-512 machines each row split
            // into its even and odd halves in registers, the kernel columns' runs permuted out
            // of them (`halved_patches`): a ResNet's 1×1 projection, rows of 32 pixels (two
            // vectors, 16 outputs), of 33 (gathered again).
            ([9, 3, 7, 7], [4, 3, 1, 1], Op::Conv(ConvOptions::new([2, 2], [0, 0], [1, 1], 1))),
            ([8, 2, 5, 32], [3, 2, 3, 3], Op::Conv(ConvOptions::new([2, 2], [1, 1], [1, 1], 1))),
            ([2, 2, 3, 33], [3, 2, 3, 3], Op::Conv(ConvOptions::new([1, 2], [1, 1], [1, 1], 1))),
        ];
        let mut state = 12345u64;
        let mut random = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        for_each_instruction_set(|avx512| {
            for (case, (x_shape, w_shape, op)) in cases.iter().enumerate() {
                let bias_len = match op {
                    Op::Conv(_) => w_shape[0],
                    Op::Transpose(options) => w_shape[1] * options.groups,
                };
                let (x, w, b) = (random(x_shape.iter().product()), random(w_shape.iter().product()), random(bias_len));
                // Output, and the gradients of half the output's squared norm.
                let run = |device: Device| -> [Vec<f32>; 4] {
                    let device = device.autodiff();
                    let x = Tensor::<4>::from_data(TensorData::new(x.clone(), *x_shape), &device).require_grad();
                    let w = Tensor::<4>::from_data(TensorData::new(w.clone(), *w_shape), &device).require_grad();
                    let b = Tensor::<1>::from_data(TensorData::new(b.clone(), [bias_len]), &device).require_grad();
                    let y = match op {
                        Op::Conv(options) => conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone()),
                        Op::Transpose(options) => conv_transpose2d(x.clone(), w.clone(), Some(b.clone()), options.clone()),
                    };
                    let grads = (y.clone() * y.clone()).sum().div_scalar(2.0).backward();
                    let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
                    [
                        values(y),
                        values(x.grad(&grads).unwrap()),
                        values(w.grad(&grads).unwrap()),
                        b.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                    ]
                };
                #[allow(deprecated)] // burn-ndarray keeps upstream's formulation: the reference here
                let (flex, reference) = (run(Device::flex()), run(Device::ndarray()));
                for (what, (got, want)) in ["output", "input gradient", "weight gradient", "bias gradient"].iter().zip(flex.iter().zip(&reference)) {
                    assert_close(&format!("case {case} (AVX-512 allowed: {avx512}): {what}"), got, want);
                }
            }
        });
    }

    /// The patched burn-flex also computes batch normalization its own way.
    #[test]
    fn flex_batch_norm_and_its_gradients_match_ndarray() {
        use burn::tensor::module::batch_norm_train;
        use burn::tensor::{Tensor, TensorData};

        // Images (statistics over batch and pixels) and feature rows (over the batch alone),
        // the last in several blocks of rows and of columns, the last block of each shorter.
        for shape in [[4, 3, 5, 6], [16, 40, 1, 1], [37, 300, 1, 1]] {
            let len: usize = shape.iter().product();
            let channels = shape[1];
            let x: Vec<f32> = (0..len).map(|i| ((i * 7919 % 101) as f32 / 101.0 - 0.3) * (1.0 + (i % channels) as f32)).collect();
            let gamma: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.1).collect();
            let beta: Vec<f32> = (0..channels).map(|c| c as f32 * 0.2 - 0.1).collect();
            let run = |device: Device| -> Vec<Vec<f32>> {
                let device = device.autodiff();
                let x = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device).require_grad();
                let gamma = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [channels]), &device).require_grad();
                let beta = Tensor::<1>::from_data(TensorData::new(beta.clone(), [channels]), &device).require_grad();
                let result = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                let weights = Tensor::<4>::from_data(TensorData::new((0..len).map(|i| (i % 13) as f32 - 6.0).collect(), shape), &device);
                let grads = (result.output.clone() * weights).sum().backward();
                let flat = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
                let flat1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
                vec![
                    flat(result.output),
                    flat1(result.mean),
                    flat1(result.variance),
                    flat(x.grad(&grads).unwrap()),
                    flat1(gamma.grad(&grads).unwrap()),
                    flat1(beta.grad(&grads).unwrap()),
                ]
            };
            #[allow(deprecated)] // burn-ndarray keeps upstream's formulation: the reference here
            let (flex, reference) = (run(Device::flex()), run(Device::ndarray()));
            let names = ["output", "mean", "variance", "input gradient", "gamma gradient", "beta gradient"];
            for (what, (got, want)) in names.iter().zip(flex.iter().zip(&reference)) {
                assert_close(&format!("{shape:?}: {what}"), got, want);
            }
        }
    }

    /// … and the masked select under leaky ReLU, and ReLU with its gradient across threads
    /// (in place where the tensor is not shared, else into a new buffer), over more values
    /// than one chunk of threads; ReLU also at NaN, ±0 and the infinities (-0 may come out
    /// as either zero: upstream burn-flex and burn-ndarray differ there).
    #[test]
    fn flex_relu_leaky_relu_and_their_gradients_match_ndarray() {
        use burn::tensor::activation::{leaky_relu, relu};
        use burn::tensor::{Tensor, TensorData};

        let len = 100_003;
        let mut x: Vec<f32> = (0..len).map(|i| (i * 7919 % 1013) as f32 / 1013.0 - 0.5).collect();
        let run = |device: Device, x: &[f32], activation: &dyn Fn(Tensor<1>) -> Tensor<1>| -> [Vec<f32>; 2] {
            let device = device.autodiff();
            let x = Tensor::<1>::from_data(TensorData::new(x.to_vec(), [len]), &device).require_grad();
            let y = activation(x.clone());
            let weights = Tensor::<1>::from_data(TensorData::new((0..len).map(|i| (i % 13) as f32 - 6.0).collect(), [len]), &device);
            let grads = (y.clone() * weights).sum().backward();
            [y, x.grad(&grads).unwrap()].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
        };
        let leaky: &dyn Fn(Tensor<1>) -> Tensor<1> = &|x| leaky_relu(x, 0.2);
        let shared: &dyn Fn(Tensor<1>) -> Tensor<1> = &relu;
        let unique: &dyn Fn(Tensor<1>) -> Tensor<1> = &|x| relu(x.mul_scalar(1.0));
        #[allow(deprecated)]
        let compare = |what: &str, x: &[f32], activation| {
            let (flex, reference) = (run(Device::flex(), x, activation), run(Device::ndarray(), x, activation));
            for (part, (got, want)) in ["output", "gradient"].iter().zip(flex.iter().zip(&reference)) {
                let differs = got.iter().zip(want).position(|(g, w)| g != w && !(g.is_nan() && w.is_nan()));
                assert!(differs.is_none(), "{what}: {part} at {differs:?}");
            }
        };
        compare("leaky ReLU", &x, leaky);
        x[..5].copy_from_slice(&[f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY]);
        compare("ReLU of a shared tensor", &x, shared);
        compare("ReLU of an unshared tensor", &x, unique);
    }

    /// Arithmetic on tensors past the patch's threshold for threads (262,144 values), which it
    /// shares out: same shapes, a row broadcast over the rows (a bias) and a column broadcast
    /// (left to the single-threaded nest), each operand order, and scalar operands, as ndarray
    /// computes them.
    #[test]
    fn flex_large_arithmetic_matches_ndarray() {
        use burn::tensor::{Tensor, TensorData};

        let [rows, width] = [611, 769];
        let values = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7919 + seed) % 1013) as f32 / 101.0 - 5.0 + 0.001).collect() };
        let run = |device: Device, op: usize, other: [usize; 2], swapped: bool| -> Vec<f32> {
            // Fresh tensors, so that the patch may write into the large one.
            let big = Tensor::<2>::from_data(TensorData::new(values(rows * width, 1), [rows, width]), &device);
            let small = Tensor::<2>::from_data(TensorData::new(values(other[0] * other[1], 2), other), &device);
            let (a, b) = if swapped { (small, big) } else { (big, small) };
            let y = match op {
                0 => a + b,
                1 => a - b,
                2 => a * b,
                _ => a / b,
            };
            y.into_data().try_to_vec::<f32>().unwrap()
        };
        for other in [[rows, width], [1, width], [rows, 1]] {
            for op in 0..4 {
                for swapped in [false, true] {
                    #[allow(deprecated)]
                    let reference = run(Device::ndarray(), op, other, swapped);
                    let flex = run(Device::flex(), op, other, swapped);
                    let differs = flex.iter().zip(&reference).position(|(g, w)| g != w);
                    assert!(differs.is_none() && flex.len() == rows * width, "op {op}, other {other:?}, swapped {swapped}: at {differs:?}");
                }
            }
        }
        // Scalar operands, into the tensor itself where it is unique and into a new one where
        // it is shared.
        let scalar = |device: Device, op: usize, shared: bool| -> Vec<f32> {
            let a = Tensor::<2>::from_data(TensorData::new(values(rows * width, 3), [rows, width]), &device);
            let kept = shared.then(|| a.clone());
            let y = match op {
                0 => a.add_scalar(0.3),
                1 => a.sub_scalar(1.7),
                2 => a.mul_scalar(-2.9),
                _ => a.div_scalar(7.0),
            };
            drop(kept);
            y.into_data().try_to_vec::<f32>().unwrap()
        };
        for op in 0..4 {
            for shared in [false, true] {
                #[allow(deprecated)]
                let reference = scalar(Device::ndarray(), op, shared);
                let flex = scalar(Device::flex(), op, shared);
                let differs = flex.iter().zip(&reference).position(|(g, w)| g != w);
                assert!(differs.is_none() && flex.len() == rows * width, "scalar op {op}, shared {shared}: at {differs:?}");
            }
        }
    }

    /// … and e^x, tanh, the sigmoid and erf, which the patch computes without libm so that they
    /// vectorise: the first three within a few ulp of libm (here, Rust's `f32` functions) from
    /// 1e-30 to the overflow, near it in the subnormals, and libm's answers at ±inf, NaN, 0 and
    /// past the overflow; erf within 5e-7 of libm's f64 erf, and GELU's gradient, which uses it.
    #[test]
    fn flex_exp_tanh_sigmoid_and_erf_match_libm() {
        use burn::tensor::activation::sigmoid;
        use burn::tensor::{Tensor, TensorData};

        let mut x: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.0045).collect(); // ±90
        x.extend((-30..=1).flat_map(|e| [10f32.powi(e), -(10f32.powi(e))]));
        x.extend([
            0.0,
            -0.0,
            0.625,
            -0.625,
            0.624_999_9,
            88.72,
            88.722_8,
            88.73,
            -87.29,
            -87.31,
            -100.0,
            -103.9,
            -104.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let device = Device::flex();
        let input = || Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device);
        let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let cases: [(&str, Vec<f32>, fn(f32) -> f32); 3] = [
            ("exp", values(input().exp()), f32::exp),
            ("tanh", values(input().tanh()), f32::tanh),
            ("sigmoid", values(sigmoid(input())), |v| 1.0 / (1.0 + (-v).exp())),
        ];
        for (name, got, want) in cases {
            for (&v, &g) in x.iter().zip(&got) {
                let w = want(v);
                // Subnormals (below 1.2e-38) carry fewer digits: a few of their last units apart.
                let close = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-6 * w.abs() || (w.abs() < 1.2e-38 && (g - w).abs() <= 1e-44);
                assert!(close, "{name}({v:e}) = {g:e}, libm {w:e}");
            }
        }
        // erf within 5e-7 of libm's f64 erf (flex's f64 path), absolute and relative, and GELU's
        // gradient within 1e-6 of its formula in f64.
        let f64_erf = |t: Tensor<1>| t.cast(burn::tensor::FloatDType::F64).erf().into_data().try_to_vec::<f64>().unwrap();
        let (got, exact) = (values(input().erf()), f64_erf(input()));
        for ((&v, &g), &w) in x.iter().zip(&got).zip(&exact) {
            let error = (g as f64 - w).abs();
            let close = (g.is_nan() && w.is_nan()) || (error <= 5e-7 && error <= 5e-7 * w.abs() + 1e-44);
            assert!(close, "erf({v:e}) = {g:e}, libm {w:e}");
        }
        let x: Vec<f32> = (-4_000..=4_000).map(|i| i as f32 * 0.002).collect();
        let grad_input = Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device.clone().autodiff()).require_grad();
        let grads = burn::tensor::activation::gelu(grad_input.clone()).sum().backward();
        let gradient = values(grad_input.grad(&grads).unwrap());
        let halves = f64_erf(Tensor::<1>::from_data(TensorData::new(x.clone(), [x.len()]), &device).div_scalar(std::f32::consts::SQRT_2));
        for ((&v, &g), &erf) in x.iter().zip(&gradient).zip(&halves) {
            let v = v as f64;
            let want = 0.5 * (1.0 + erf) + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((g as f64 - want).abs() <= 1e-6, "GELU'({v:e}) = {g:e}, want {want:e}");
        }
    }

    /// … and softmax, whose exp the patch vectorises: within 1e-6 of the f64 softmax, rows
    /// shorter and longer than a vector, far from zero, and with -inf.
    #[test]
    fn flex_softmax_matches_f64() {
        use burn::tensor::activation::softmax;
        use burn::tensor::{Tensor, TensorData};

        for width in [5usize, 16, 1_027] {
            let mut x: Vec<f32> = (0..4 * width).map(|i| ((i * 7919 % 1013) as f32 / 50.0 - 10.0) * (1 + i / width) as f32).collect();
            x[width..2 * width].iter_mut().for_each(|v| *v += 300.0);
            x[2 * width] = f32::NEG_INFINITY;
            let got = softmax(Tensor::<2>::from_data(TensorData::new(x.clone(), [4, width]), &Device::flex()), 1).into_data().try_to_vec::<f32>().unwrap();
            for (row, got) in x.chunks(width).zip(got.chunks(width)) {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (&v, &g) in row.iter().zip(got) {
                    let want = (v as f64 - max).exp() / sum;
                    assert!((g as f64 - want).abs() <= 1e-6 * want.max(1e-3), "softmax {g:e} against {want:e} (width {width})");
                }
            }
        }
    }

    /// … and dropout masks, which the patch draws from whole blocks of the generator: the same
    /// values as rand's Bernoulli drawn one at a time (burn-flex's f16 path still does that), and
    /// the generator left where it would be, including after an odd number of 32-bit words.
    #[test]
    fn flex_bernoulli_masks_equal_one_draw_at_a_time() {
        use burn::tensor::{Distribution, FloatDType, Tensor};
        let _seeded = super::seeded_draws();

        let device = Device::flex();
        // Masks of 96 Ki draws or more are split among the threads (three here, so the parts
        // differ in size), each part drawn from its own place in the generator's stream.
        let three_threads = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (p, count) in [(0.9, 5_000), (0.1, 2_048), (1.0, 7), (0.0, 3), (0.3, 100_003)] {
            let draw = |dtype: FloatDType| {
                three_threads.install(|| {
                    device.seed(7);
                    let first = Tensor::<1>::random([1], Distribution::Uniform(0.0, 1.0), &device); // one u32: odd
                    let mask = Tensor::<1>::zeros([count], &device).cast(dtype).random_like(Distribution::Bernoulli(p)).cast(FloatDType::F32);
                    let after = Tensor::<1>::random([3], Distribution::Uniform(0.0, 1.0), &device);
                    [first, mask, after].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
                })
            };
            let (blocks, one_by_one) = (draw(FloatDType::F32), draw(FloatDType::F16));
            assert_eq!(blocks, one_by_one, "Bernoulli({p}) over {count}");
            let ones = blocks[1].iter().filter(|&&v| v == 1.0).count() as f64;
            assert!((ones / count as f64 - p).abs() < 0.03, "{ones} ones of {count} at p = {p}");
        }
    }

    /// … and max pooling without padding.
    #[test]
    fn flex_max_pooling_and_its_gradient_match_ndarray() {
        // On AVX-512 machines the kernel's AVX2 code too (a process-wide flag, as above).
        #[cfg(target_arch = "x86_64")]
        for avx512 in [true, false] {
            burn::backend::flex::ops::allow_avx512(avx512);
            max_pooling_and_its_gradient_match_ndarray();
        }
        #[cfg(target_arch = "x86_64")]
        burn::backend::flex::ops::allow_avx512(true);
        #[cfg(not(target_arch = "x86_64"))]
        max_pooling_and_its_gradient_match_ndarray();
    }

    fn max_pooling_and_its_gradient_match_ndarray() {
        use burn::tensor::module::max_pool2d;
        use burn::tensor::ops::MaxPoolOptions;
        use burn::tensor::{Tensor, TensorData};

        // 257 levels: ties are rare; 3 levels: most windows tie, and the first maximum must win.
        // ResNet's stem pools 3×3 windows, stride 2, padding 1: windows clipped at every edge.
        let settings = [([2, 2], [2, 2], [0, 0]), ([3, 2], [1, 2], [0, 0]), ([3, 3], [2, 2], [1, 1]), ([3, 2], [1, 2], [1, 1])];
        for ((kernel, stride, padding), levels) in settings.into_iter().flat_map(|kps| [(kps, 257), (kps, 3)]) {
            // 37 columns: 18 windows a row, 16 to a vector and 2 more (AVX2: 8, 8 and 2), one
            // column left over.
            let shape = [2, 3, 7, 37];
            let len: usize = shape.iter().product();
            // Negative values too: a padded position taken for a 0 would win where a window is all below.
            let x: Vec<f32> = (0..len).map(|i| ((i * 7919) % levels) as f32 / levels as f32 - 0.5).collect();
            let run = |device: Device| -> [Vec<f32>; 2] {
                let device = device.autodiff();
                let x = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device).require_grad();
                let y = max_pool2d(x.clone(), MaxPoolOptions::new(kernel).with_stride(stride).with_padding(padding));
                let weights = y.ones_like().mul_scalar(3.0) + y.clone();
                let grads = (y.clone() * weights).sum().backward();
                [y.into_data().try_to_vec::<f32>().unwrap(), x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap()]
            };
            #[allow(deprecated)] // burn-ndarray keeps upstream's kernel: the reference here
            let (flex, reference) = (run(Device::flex()), run(Device::ndarray()));
            assert_eq!(flex, reference, "kernel {kernel:?}, stride {stride:?}, padding {padding:?}, {levels} levels");
            // Without autodiff burn asks for the output alone, which flex pools without indices.
            let inference = |device: Device| {
                let x = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device);
                max_pool2d(x, MaxPoolOptions::new(kernel).with_stride(stride).with_padding(padding)).into_data().try_to_vec::<f32>().unwrap()
            };
            #[allow(deprecated)]
            let reference = inference(Device::ndarray());
            assert_eq!(inference(Device::flex()), reference, "inference: kernel {kernel:?}, stride {stride:?}, padding {padding:?}, {levels} levels");
        }
        // A window of -inf alone: its first position inside the plane is the maximum's (as
        // PyTorch's), so the gradient of each window lands there. ResNet's stem setting, rows
        // of 19 windows (a full vector and a partial one).
        let [h, w] = [5, 37];
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(vec![f32::NEG_INFINITY; h * w], [1, 1, h, w]), &device).require_grad();
        let y = max_pool2d(x.clone(), MaxPoolOptions::new([3, 3]).with_stride([2, 2]).with_padding([1, 1]));
        let [_, _, out_h, out_w] = y.dims();
        let grads = y.sum().backward();
        let got = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let mut want = vec![0f32; h * w];
        for oh in 0..out_h {
            for ow in 0..out_w {
                want[(2 * oh).saturating_sub(1) * w + (2 * ow).saturating_sub(1)] += 1.0;
            }
        }
        assert_eq!(got, want, "windows of -inf");
        // A NaN anywhere in a window wins (PyTorch's rule; ndarray's kernel lets it lose), with
        // and without autodiff: one row of 20 windows, NaNs in windows 1 and 17.
        let mut x: Vec<f32> = (0..80).map(|i| i as f32).collect();
        (x[3], x[40 + 2 * 17 + 1]) = (f32::NAN, f32::NAN);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<4>::from_data(TensorData::new(x.clone(), [1, 1, 2, 40]), &device);
            let y = max_pool2d(x, MaxPoolOptions::new([2, 2]).with_stride([2, 2])).into_data().try_to_vec::<f32>().unwrap();
            for (window, value) in y.iter().enumerate() {
                match window {
                    1 | 17 => assert!(value.is_nan(), "window {window}: {value}"),
                    _ => assert_eq!(*value, (40 + 2 * window + 1) as f32, "window {window}"),
                }
            }
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("FLEX".parse::<BackendChoice>().unwrap(), BackendChoice::Flex);
        assert_eq!("cuda".parse::<BackendChoice>().unwrap(), BackendChoice::Cuda);
        assert!("tpu".parse::<BackendChoice>().is_err());
    }

    #[test]
    fn devices_by_name_and_the_mistakes_said_clearly() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let two = select_devices(&names(&["flex", "ndarray"])).unwrap();
        assert_eq!(two.device, Device::flex());
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        assert_eq!(two.replicas, [ndarray]);
        assert!(two.description.ends_with("(data-parallel)"), "{}", two.description);
        let one = select_devices(&names(&["flex"])).unwrap();
        assert!(one.replicas.is_empty() && !one.description.contains("data-parallel"));
        for (list, says) in [
            (&["flex", "flex"][..], "named twice"),
            (&["flex:1"][..], "one device each"),
            (&["tpu:0"][..], "unknown backend `tpu`"),
            (&["wgpu:x"][..], "not a device number"),
            (&["auto"][..], "not `auto`"),
            (&[][..], "run.devices is empty"),
        ] {
            let error = format!("{:#}", select_devices(&names(list)).unwrap_err());
            assert!(error.contains(says), "{list:?}: {error}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let error = select_device(BackendChoice::Cuda).unwrap_err().to_string();
        assert!(error.contains("--features cuda"), "{error}");
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn tch_without_the_feature_names_the_script_that_builds_it() {
        assert_eq!("tch".parse::<BackendChoice>().unwrap(), BackendChoice::Tch);
        let error = select_device(BackendChoice::Tch).unwrap_err().to_string();
        assert!(error.contains("bench-tch-diagnostic.sh"), "{error}");
    }
}
