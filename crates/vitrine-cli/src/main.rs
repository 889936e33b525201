//! `vitrine`: train, evaluate, export and run the models of every family in the registry from the
//! command line. This binary parses arguments, dispatches through the families' one trait, and
//! prints; the work happens in the library crates.

mod cli;
mod commands;
mod registry;
mod terminal;

use std::process::ExitCode;

fn main() -> ExitCode {
    vitrine_core::backend::keep_freed_memory_for_reuse();
    vitrine_core::backend::flush_subnormals_to_zero();
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
