//! The ε-prediction network: timestep and class embeddings, building blocks, the U-Net and its
//! weights format. The CPU kernels its layers run on are in [`crate::kernels`].

pub mod blocks;
pub mod embedding;
pub mod preset;
pub mod unet;
pub mod validate;
pub mod weights;

pub use preset::Preset;
pub use unet::{SkipLayout, UNet, UNetConfig};
pub use validate::UNetConfigError;
