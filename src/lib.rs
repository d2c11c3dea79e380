//! # ddpm-explorer
//!
//! Denoising Diffusion Probabilistic Models (Ho et al. 2020) you can watch and touch.
//!
//! The crate is cut by concept, each module a noun of the paper:
//! - [`schedule`]: the β schedule and every number derived from it (host-side `f64`s);
//! - [`forward`]: the forward process q(x_t | x_0);
//! - [`sampler`]: the reverse process: DDPM and DDIM steps and the [`sampler::ReverseChain`];
//! - [`vlb`]: the variational bound in bits per dimension;
//! - [`model`]: the ε-predicting U-Net in burn;
//! - [`eval`]: the project's MNIST classifier and the sample-quality figures it gives;
//! - [`data`], [`image`], [`weights`]: digits in, pictures and trained models out;
//! - `train`, `device`, `io` (native): the desktop trainer and its edges.
//!
//! The mathematics and the model are shared by the native CLI and the browser app; only I/O and
//! device choice differ between the targets.

pub mod data;
pub mod eval;
pub mod forward;
pub mod image;
pub mod model;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod view_state;
pub mod vlb;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod web;

#[cfg(feature = "native")]
pub mod device;
#[cfg(feature = "native")]
pub mod io;
#[cfg(feature = "native")]
pub mod plot;
#[cfg(feature = "native")]
pub mod train;
