//! Choosing where tensors live on the desktop: a GPU through wgpu when there is one, else burn's
//! CPU backend (flex).

use burn::tensor::{Device, DeviceKind};
use std::fmt;

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A discrete or integrated GPU if wgpu finds one, else the CPU backend.
    #[default]
    Auto,
    /// burn's CPU backend (flex).
    Cpu,
    /// wgpu's best adapter, whatever it is (a software rasteriser such as lavapipe included).
    #[value(alias = "gpu")]
    Wgpu,
}

/// The device chosen, with a description for the user.
pub struct ChosenDevice {
    /// The device.
    pub device: Device,
    /// e.g. "wgpu (discrete GPU)" or "cpu (flex)".
    pub description: String,
}

impl fmt::Display for ChosenDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// Whether an adapter name is a software rasteriser (Mesa's lavapipe/llvmpipe, SwiftShader): timings
/// on it are CPU emulation.
pub fn is_software_adapter(name: &str) -> bool {
    let name = name.to_lowercase();
    ["llvmpipe", "lavapipe", "swiftshader", "softpipe"]
        .iter()
        .any(|s| name.contains(s))
}

/// Resolves a [`DeviceChoice`]. `Auto` only takes a hardware GPU; `Wgpu` fails with a message
/// when wgpu finds no adapter at all.
pub fn choose_device(choice: DeviceChoice) -> Result<ChosenDevice, String> {
    let cpu = || ChosenDevice {
        device: Device::flex(),
        description: "cpu (burn flex backend)".into(),
    };
    let try_wgpu = |kind: DeviceKind| {
        let device = std::panic::catch_unwind(|| Device::wgpu_options().device_kind(kind.clone()).init())
            .map_err(|_| "wgpu panicked while opening an adapter".to_string())?
            .map_err(|e| e.to_string())?;
        let name = device
            .identity()
            .map(|id| id.name)
            .unwrap_or_else(|| format!("{kind:?}"));
        let description = if is_software_adapter(&name) {
            format!("wgpu · {name} (CPU emulation, not a GPU)")
        } else {
            format!("wgpu · {name}")
        };
        Ok::<_, String>(ChosenDevice { device, description })
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => try_wgpu(DeviceKind::DefaultDevice).map_err(|e| format!("no wgpu adapter: {e}")),
        DeviceChoice::Auto => Ok(try_wgpu(DeviceKind::DiscreteGpu(0))
            .or_else(|_| try_wgpu(DeviceKind::IntegratedGpu(0)))
            .ok()
            .filter(|chosen| !chosen.description.contains("CPU emulation"))
            .unwrap_or_else(cpu)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_adapters_are_recognised() {
        assert!(is_software_adapter("llvmpipe (LLVM 15.0.6, 256 bits)"));
        assert!(is_software_adapter("Google SwiftShader"));
        assert!(!is_software_adapter("NVIDIA H100 80GB HBM3"));
        use clap::ValueEnum;
        assert_eq!(DeviceChoice::from_str("gpu", false), Ok(DeviceChoice::Wgpu));
        assert!(DeviceChoice::from_str("tpu", false).is_err());
    }
}
