//! The ε-prediction network: timestep embedding, building blocks and the U-Net.

pub mod blocks;
pub mod embedding;
pub mod norm_silu;
pub mod unet;

pub use unet::{UNet, UNetConfig, UNetConfigError};
