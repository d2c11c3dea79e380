//! The ε-prediction network: timestep embedding, building blocks, the U-Net and its weights format.

pub mod blocks;
mod conv_ops;
mod cpu_vectors;
pub mod down_conv;
pub mod dropout;
pub mod embedding;
pub mod norm_silu;
pub mod same_conv;
pub mod unet;
pub mod weights;
mod winograd;

pub use unet::{SkipLayout, UNet, UNetConfig, UNetConfigError};
