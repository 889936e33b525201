//! `vitrine`: train, evaluate, export and run the models of every family in the registry from the
//! command line. This binary parses arguments, dispatches through the families' one trait, and
//! prints; the work happens in the library crates.

mod cli;
mod commands;
mod registry;
mod terminal;

use std::process::ExitCode;

// mimalloc rather than glibc's malloc: the steps run on rayon's threads
// (`vitrine_core::backend::on_compute_pool`), and glibc serves a thread other than the main one
// from arenas of at most 64 MiB, mapping every larger block afresh and unmapping it when freed
// (ResNet-18's training: 24 → 19 images/s, 12% of the samples zeroing fresh pages; one arena for
// all threads instead cost the CNNs a fifth in its lock).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory for the next tensors instead of handing it back to the operating system
/// after 10 ms: a training step frees and allocates the same sizes again (ResNet-18 19.6 → 23.7
/// images/s; peak memory 1,392 → 1,529 MiB, PyTorch's ~2,000). It replaces the `mallopt` settings
/// that did this for glibc's malloc (no block mapped on its own, no trimming), which no longer
/// serves the tensors.
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc.h's enum (libmimalloc-sys names no constant for it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets one of mimalloc's options; -1 means never purge.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    vitrine_core::backend::flush_subnormals_to_zero();
    vitrine_core::backend::apply_kernel_request();
    // Anything that asks burn for its default device stays on the CPU rather than probing GPUs;
    // the device for real work is always chosen explicitly. Set before any thread starts.
    if std::env::var_os("BURN_DEVICE").is_none() {
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    // Probing Vulkan adapters on a headless machine makes Mesa's Wayland client print
    // "XDG_RUNTIME_DIR is invalid or not set" errors; we never open a window.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let matches = cli::command(registry::FAMILIES).get_matches();
    match commands::run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
