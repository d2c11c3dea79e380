//! The page's WebGPU module: this crate built with the `webgpu` feature (burn's wgpu backend and
//! the hand-written WGSL kernel), which the page fetches only where the browser has WebGPU and
//! starts in a Web Worker (`ddpm_explorer::web::worker`). Its entry point is the library's
//! `eps_worker_start`; the page's own module carries burn's CPU backend alone.

pub use ddpm_explorer::web::worker::eps_worker_start;

fn main() {}
