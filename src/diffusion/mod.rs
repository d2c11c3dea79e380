//! The diffusion process of Ho et al. (2020) and its samplers: everything here is the paper's
//! mathematics, independent of the network and of the target.

pub mod forward;
pub mod sampler;
pub mod schedule;
pub mod vlb;
