//! The CPU backend's kernels: the operations where the U-Net's time goes, written as burn backend
//! extensions (with their gradients under autodiff) for burn's CPU backend, and as plain tensor
//! operations on the GPU backends. The network in [`crate::model`] calls them; nothing here knows
//! the network.
//!
//! - [`same_conv`]: the 3×3 and 1×1 "same" convolutions (3×3 by Winograd F(2×2, 3×3) in `winograd`,
//!   in the browser F(4×4, 3×3) in `winograd_f4`);
//! - [`down_conv`]: the stride-2 downsampling convolution;
//! - [`norm_silu`]: GroupNorm followed by SiLU, fused;
//! - [`dropout`]: dropout with a mask drawn on the host;
//! - `conv_ops` (what the convolutions share: gemm on raw slices, also the evaluation's nearest-image
//!   search; in the browser `simd128_product` instead, where it is faster) and `cpu_vectors`
//!   (AVX-512 / AVX2 picked at run time).

mod conv_ops;
pub(crate) use conv_ops::write_product;
mod cpu_vectors;
pub mod down_conv;
pub mod dropout;
pub mod norm_silu;
pub mod same_conv;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128_product;
mod winograd;
mod winograd_f4;
