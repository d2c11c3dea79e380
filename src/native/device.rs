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
    /// `--devices` names a device twice, or the CPU beside others.
    #[error("--devices: {0}")]
    Devices(String),
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

/// Ends the process with `code` once stdout and stderr are flushed, without the C library's exit
/// handlers.
///
/// Mesa's Vulkan drivers register static destructors that run at `exit`; with two lavapipe
/// devices open they can race the drivers' own queue threads, and a run that had written all its
/// files once died after them with glibc's "double free or corruption" (the two-device test, on a
/// loaded 2-core machine). Every command has written and closed its files by the time it returns
/// (what was written to a closed file is the kernel's, which `_exit` does not discard), so the
/// handlers have nothing left to do for it. Call last thing in `main`.
pub fn exit_without_handlers(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process at once; nothing runs after it and nothing is left half-written.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// Opens wgpu's adapter of `kind`, named, and labelled as CPU emulation when it is a software one.
fn open_wgpu(kind: DeviceKind) -> Result<ChosenDevice, String> {
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
    Ok(ChosenDevice { device, description })
}

fn cpu() -> ChosenDevice {
    ChosenDevice {
        device: Device::flex(),
        description: "cpu (burn flex backend)".into(),
    }
}

/// Resolves a [`DeviceChoice`]. `Auto` only takes a hardware GPU; `Wgpu` fails with a message
/// when wgpu finds no adapter at all.
pub fn choose_device(choice: DeviceChoice) -> Result<ChosenDevice, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Wgpu => open_wgpu(DeviceKind::DefaultDevice).map_err(DeviceError::NoAdapter),
        DeviceChoice::Auto => Ok(open_wgpu(DeviceKind::DiscreteGpu(0))
            .or_else(|_| open_wgpu(DeviceKind::IntegratedGpu(0)))
            .ok()
            .filter(|chosen| !chosen.description.contains("CPU emulation"))
            .unwrap_or_else(cpu)),
    }
}

/// One device of a run on several (`train --devices`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `cpu`: burn's CPU backend, which is one device (it uses every core).
    Cpu,
    /// `wgpu` (the best adapter), `wgpu:N` (discrete GPU N), `igpu:N` (integrated GPU N),
    /// `vgpu:N` (virtual GPU N) or `wgpu-cpu` (wgpu's software adapter, such as lavapipe).
    Wgpu(DeviceKind),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let indexed = |kind: fn(usize) -> DeviceKind, n: &str| {
            n.parse()
                .map(|n| DeviceSpec::Wgpu(kind(n)))
                .map_err(|_| format!("'{s}': the device index must be a number (e.g. wgpu:1)"))
        };
        match s.split_once(':') {
            None if s == "cpu" => Ok(DeviceSpec::Cpu),
            None if s == "wgpu" || s == "gpu" => Ok(DeviceSpec::Wgpu(DeviceKind::DefaultDevice)),
            None if s == "wgpu-cpu" => Ok(DeviceSpec::Wgpu(DeviceKind::Cpu)),
            Some(("wgpu" | "gpu", n)) => indexed(DeviceKind::DiscreteGpu, n),
            Some(("igpu", n)) => indexed(DeviceKind::IntegratedGpu, n),
            Some(("vgpu", n)) => indexed(DeviceKind::VirtualGpu, n),
            _ => Err(format!(
                "'{s}' is not a device: cpu, wgpu, wgpu:N (discrete GPU N), igpu:N, vgpu:N or wgpu-cpu"
            )),
        }
    }
}

/// Opens the devices of `specs`, in order; each one once, and the CPU backend alone (it is one
/// device, already on every core).
pub fn open_devices(specs: &[DeviceSpec]) -> Result<Vec<ChosenDevice>, DeviceError> {
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].contains(spec) {
            return Err(DeviceError::Devices(format!("{spec:?} is named twice")));
        }
    }
    if specs.len() > 1 && specs.contains(&DeviceSpec::Cpu) {
        return Err(DeviceError::Devices(
            "the CPU backend is one device that already uses every core: several devices are wgpu adapters".into(),
        ));
    }
    specs
        .iter()
        .map(|spec| match spec {
            DeviceSpec::Cpu => Ok(cpu()),
            DeviceSpec::Wgpu(kind) => {
                open_wgpu(kind.clone()).map_err(|e| DeviceError::NoAdapter(format!("{kind:?}: {e}")))
            }
        })
        .collect()
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

    #[test]
    fn device_lists_name_adapters_by_kind_and_index() {
        let parse = |s: &str| s.parse::<DeviceSpec>();
        assert_eq!(parse("wgpu:1"), Ok(DeviceSpec::Wgpu(DeviceKind::DiscreteGpu(1))));
        assert_eq!(parse("igpu:0"), Ok(DeviceSpec::Wgpu(DeviceKind::IntegratedGpu(0))));
        assert_eq!(parse("wgpu-cpu"), Ok(DeviceSpec::Wgpu(DeviceKind::Cpu)));
        assert_eq!(parse("cpu"), Ok(DeviceSpec::Cpu));
        assert!(parse("wgpu:x").unwrap_err().contains("must be a number"));
        assert!(parse("cuda:0").unwrap_err().contains("is not a device"));
        let twice = open_devices(&[DeviceSpec::Cpu, DeviceSpec::Cpu])
            .err()
            .unwrap()
            .to_string();
        assert!(twice.contains("named twice"), "{twice}");
        let mixed = open_devices(&[DeviceSpec::Cpu, DeviceSpec::Wgpu(DeviceKind::Cpu)])
            .err()
            .unwrap()
            .to_string();
        assert!(mixed.contains("one device"), "{mixed}");
    }
}
