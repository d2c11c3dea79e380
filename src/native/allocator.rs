//! Keeps freed tensor buffers in the process instead of handing them back to the kernel.
//!
//! A training step allocates and frees hundreds of activation and gradient buffers of 1–20 MB.
//! glibc's malloc serves every block above its mmap threshold (128 KiB at start, raised only
//! when such a block is freed) with a fresh `mmap`, and returns the top of the heap to the kernel
//! once more than 128 KiB of it is free; either way the next buffer of the same size starts as
//! untouched pages, and the kernel zeroes and maps them one page fault at a time. Measured on the
//! 2-core VM, those faults and the `munmap`/`brk` calls were ≈ 10 % of a training step.

/// Raises glibc's mmap threshold to its ceiling (32 MiB on 64-bit targets: every activation of
/// the U-Net fits below it) and stops heap trimming, so that freed buffers are reused by the
/// next allocation of their size. The process keeps its peak heap, which it reaches again in the
/// next step anyway. Call once, first thing in `main`; elsewhere (musl, macOS, Windows) this
/// does nothing.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;
        // SAFETY: `mallopt` only changes malloc's tuning parameters; it is safe to call at any
        // time, and returns 0 (leaving the setting as it was) for a value it rejects.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    }
}
