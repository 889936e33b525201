//! `vitrine devices`: the wgpu adapters found, whether CUDA works, and what `--backend auto` picks.

use anyhow::Result;
use vitrine_core::backend::{BackendChoice, gpu_adapters, select_device};

pub fn devices() -> Result<()> {
    let adapters = gpu_adapters();
    if adapters.is_empty() {
        println!("no wgpu adapters (no Vulkan/Metal/DX12 driver found)");
    }
    for a in &adapters {
        let kind = if a.is_hardware() { "hardware" } else { "software" };
        println!("wgpu adapter: {} ({:?}, {:?}, {kind})", a.name, a.kind, a.api);
    }
    match select_device(BackendChoice::Cuda) {
        Ok(cuda) => println!("--backend cuda: {}", cuda.description),
        Err(why) => println!("{why}"),
    }
    println!("--backend auto picks: {}", select_device(BackendChoice::Auto)?.description);
    Ok(())
}
