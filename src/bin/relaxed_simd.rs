//! The page built with the `relaxed-simd` feature: the same app, whose CPU kernels multiply and
//! add in one relaxed-SIMD instruction (`src/kernels/simd128_product.rs`). The page's loader
//! (written by `scripts/post_build.py`) starts this module instead of the page's own where the browser
//! validates relaxed SIMD, and the page's CPU workers run the module the page runs. Its entry
//! points are the library's: `start` (the app) and `eps_worker_start` (a worker).

pub use ddpm_explorer::web::{start, worker::eps_worker_start};

fn main() {}
