//! Choosing where tensors live: flex or ndarray on the CPU, or a GPU through wgpu.

use std::fmt;

use anyhow::{Result, bail};
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
}

impl std::str::FromStr for BackendChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            _ => bail!("unknown backend `{s}`: expected auto, flex, ndarray or wgpu"),
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
        matches!(
            self.kind,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu
        )
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

/// Whether `device` computes in host memory (the CPU backends), where reading a tensor back
/// costs a copy at most.
pub fn computes_in_host_memory(device: &Device) -> bool {
    #[allow(deprecated)]
    let cpu = [Device::flex(), Device::ndarray()];
    cpu.contains(&device.clone().without_autodiff())
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
        }),
        BackendChoice::Auto => {
            let adapters = gpu_adapters();
            match adapters.iter().find(|a| a.is_hardware()) {
                Some(adapter) => Ok(wgpu_device(adapter)),
                None => Ok(flex()),
            }
        }
        BackendChoice::Wgpu => {
            let adapters = gpu_adapters();
            match adapters.first() {
                Some(adapter) => Ok(wgpu_device(adapter)),
                None => bail!(
                    "--backend wgpu: no wgpu adapter found (install a Vulkan driver, e.g. \
                     `apt-get install mesa-vulkan-drivers`, or use --backend flex)"
                ),
            }
        }
    }
}

fn flex() -> ComputeDevice {
    ComputeDevice {
        device: Device::flex(),
        backend: BackendChoice::Flex,
        description: format!("flex (CPU, {} threads)", rayon::current_num_threads()),
    }
}

fn wgpu_device(adapter: &GpuAdapter) -> ComputeDevice {
    // cubecl indexes adapters within their type; the first of the best type is ours.
    let kind = match adapter.kind {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(0),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(0),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(0),
        wgpu::DeviceType::Cpu | wgpu::DeviceType::Other => DeviceKind::Cpu,
    };
    let software = if adapter.is_hardware() { "" } else { " [software adapter: slow, for testing]" };
    ComputeDevice {
        device: Device::wgpu(kind),
        backend: BackendChoice::Wgpu,
        description: format!("{}{software}", adapter.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_picks_a_software_adapter() {
        let selected = select_device(BackendChoice::Auto).unwrap();
        let has_hardware = gpu_adapters().iter().any(GpuAdapter::is_hardware);
        assert_eq!(selected.backend == BackendChoice::Wgpu, has_hardware, "{}", selected.description);
        assert!(!selected.description.contains("software"));
    }

    #[test]
    fn names_parse() {
        assert_eq!("FLEX".parse::<BackendChoice>().unwrap(), BackendChoice::Flex);
        assert!("cuda".parse::<BackendChoice>().is_err());
    }
}
