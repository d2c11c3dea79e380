//! Telling a GPU from CPU emulation. Software rasterisers (Mesa's lavapipe/llvmpipe, SwiftShader,
//! WARP) run GPU code on the CPU, far slower than burn's own CPU backend, and timings on them are
//! never GPU figures: both targets label them, and neither picks one by itself.

/// Names software rasterisers give themselves (lower case).
const SOFTWARE_NAMES: [&str; 5] = ["llvmpipe", "lavapipe", "swiftshader", "softpipe", "warp"];

/// Whether an adapter is CPU emulation: `reported_cpu` is what the platform says of its type (wgpu's
/// device type `Cpu`, WebGPU's `isFallbackAdapter`), and the name catches those that do not say.
pub fn is_software_adapter(name: &str, reported_cpu: bool) -> bool {
    let name = name.to_lowercase();
    reported_cpu || SOFTWARE_NAMES.iter().any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_adapters_are_recognised_by_type_or_name() {
        assert!(is_software_adapter("llvmpipe (LLVM 15.0.6, 256 bits)", false));
        assert!(is_software_adapter("Google SwiftShader", false));
        assert!(is_software_adapter("Microsoft Basic Render Driver (WARP)", false));
        assert!(is_software_adapter("Some Future Rasteriser", true));
        assert!(!is_software_adapter("NVIDIA H100 80GB HBM3", false));
    }
}
