//! Choosing where tensors live on the desktop: a GPU through wgpu when there is one, else burn's
//! CPU backend (flex).

use burn::tensor::{Device, DeviceKind};
use std::fmt;
use std::str::FromStr;

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A discrete or integrated GPU if wgpu finds one, else the CPU backend.
    #[default]
    Auto,
    /// burn's CPU backend (flex).
    Cpu,
    /// wgpu's best adapter, whatever it is (a software rasteriser such as lavapipe included).
    Wgpu,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            _ => Err(format!("unknown device '{s}': expected auto, cpu or wgpu")),
        }
    }
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

/// Resolves a [`DeviceChoice`]. `Auto` only takes a hardware GPU; `Wgpu` fails with a message
/// when wgpu finds no adapter at all.
pub fn choose_device(choice: DeviceChoice) -> Result<ChosenDevice, String> {
    let cpu = || ChosenDevice {
        device: Device::flex(),
        description: "cpu (burn flex backend)".into(),
    };
    let try_wgpu = |kind: DeviceKind| {
        let label = format!("{kind:?}");
        std::panic::catch_unwind(|| Device::wgpu_options().device_kind(kind).init())
            .map_err(|_| "wgpu panicked while opening an adapter".to_string())?
            .map(|device| ChosenDevice {
                device,
                description: format!("wgpu ({label})"),
            })
            .map_err(|e| e.to_string())
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => try_wgpu(DeviceKind::DefaultDevice).map_err(|e| format!("no wgpu adapter: {e}")),
        DeviceChoice::Auto => Ok(try_wgpu(DeviceKind::DiscreteGpu(0))
            .or_else(|_| try_wgpu(DeviceKind::IntegratedGpu(0)))
            .unwrap_or_else(|_| cpu())),
    }
}
