//! Choosing where tensors live on the desktop: a GPU through wgpu when there is one, else burn's
//! CPU backend (flex).

use crate::adapter::is_software_adapter;
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

/// A device that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `--device wgpu` and wgpu found no adapter (the reason is wgpu's).
    #[error("no wgpu adapter: {0}")]
    NoAdapter(String),
}

/// Turns off Mesa's Vulkan "device select" layer where there is no graphical session.
///
/// Mesa installs that layer implicitly; when wgpu lists Vulkan adapters it asks the Wayland
/// compositor for the default GPU, and with no session (a server, a container, CI) libwayland
/// prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment" for each probe.
/// `--device` chooses the adapter itself, so nothing is lost; `NODEVICE_SELECT=1` is the layer's
/// own off switch. Call first thing in `main`, before any other thread exists.
pub fn quiet_vulkan_device_select() {
    #[cfg(target_os = "linux")]
    {
        let unset = |name| std::env::var_os(name).is_none();
        if unset("WAYLAND_DISPLAY") && unset("XDG_RUNTIME_DIR") && unset("NODEVICE_SELECT") {
            // SAFETY: called before the program starts any thread, so nothing reads the
            // environment while it changes.
            unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
        }
    }
}

/// Resolves a [`DeviceChoice`]. `Auto` only takes a hardware GPU; `Wgpu` fails with a message
/// when wgpu finds no adapter at all.
pub fn choose_device(choice: DeviceChoice) -> Result<ChosenDevice, DeviceError> {
    let cpu = || ChosenDevice {
        device: Device::flex(),
        description: "cpu (burn flex backend)".into(),
    };
    let try_wgpu = |kind: DeviceKind| {
        let device = std::panic::catch_unwind(|| Device::wgpu_options().device_kind(kind.clone()).init())
            .map_err(|_| "wgpu panicked while opening an adapter".to_string())?
            .map_err(|e| e.to_string())?;
        // wgpu's device type `Cpu` leaves the identity without a physical card.
        let (name, reported_cpu) = device
            .identity()
            .map(|id| (id.name, id.physical.is_none()))
            .unwrap_or_else(|| (format!("{kind:?}"), false));
        let description = if is_software_adapter(&name, reported_cpu) {
            format!("wgpu · {name} (CPU emulation, not a GPU)")
        } else {
            format!("wgpu · {name}")
        };
        Ok::<_, String>(ChosenDevice { device, description })
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => try_wgpu(DeviceKind::DefaultDevice).map_err(DeviceError::NoAdapter),
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
    fn gpu_is_an_alias_of_wgpu() {
        use clap::ValueEnum;
        assert_eq!(DeviceChoice::from_str("gpu", false), Ok(DeviceChoice::Wgpu));
        assert!(DeviceChoice::from_str("tpu", false).is_err());
    }
}
