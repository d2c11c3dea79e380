//! Which vector extensions the CPU has, for the loops that are compiled for several (GroupNorm +
//! SiLU in [`super::norm_silu`], the Winograd transforms in [`super::winograd`]) and pick one at
//! run time.

/// The widest vectors an x86-64 CPU offers the hand-vectorised loops (checked once, at run time).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) enum X86Vectors {
    Avx512,
    Avx2,
    Sse,
}

/// The CPU's [`X86Vectors`], detected on the first call.
#[cfg(target_arch = "x86_64")]
pub(super) fn x86_vectors() -> X86Vectors {
    use std::arch::is_x86_feature_detected as has;
    static VECTORS: std::sync::OnceLock<X86Vectors> = std::sync::OnceLock::new();
    *VECTORS.get_or_init(|| {
        if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
            X86Vectors::Avx512
        } else if has!("avx2") && has!("fma") {
            X86Vectors::Avx2
        } else {
            X86Vectors::Sse
        }
    })
}
