//! # ddpm-explorer
//!
//! Denoising Diffusion Probabilistic Models (Ho et al. 2020) you can watch and touch.
//!
//! The crate is cut by concept:
//! - [`diffusion`]: the paper — the β [`diffusion::schedule`], the forward process
//!   [`diffusion::forward`], the reverse process [`diffusion::sampler`] (DDPM, DDIM, the
//!   [`diffusion::sampler::ReverseChain`]) and the variational bound [`diffusion::vlb`];
//! - [`model`]: the ε-predicting U-Net in burn and its weights format; [`kernels`]: the CPU
//!   backend's operations its layers run on (convolutions, GroupNorm + SiLU, dropout);
//! - [`data`], [`image`], [`rng`]: digits in, pictures out, and the seeded noise both targets share;
//! - [`eval`]: the project's MNIST classifier, the sample-quality figures and the report;
//! - [`view_state`]: what the explorer shows, as a URL query; [`adapter`]: GPU or CPU emulation;
//! - `native` (desktop): device choice, file output, the loss chart and the trainer;
//! - `web` (browser): the Leptos explorer.
//!
//! The mathematics and the model are shared by the CLI (`src/bin/ddpm/`) and the browser app; only
//! I/O and device choice differ between the targets.

pub mod adapter;
pub mod data;
pub mod diffusion;
pub mod eval;
pub mod image;
pub mod kernels;
pub mod model;
pub mod rng;
pub mod view_state;

#[cfg(feature = "native")]
pub mod native;

#[cfg(target_family = "wasm")]
pub mod web;
