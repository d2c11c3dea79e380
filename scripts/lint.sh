#!/usr/bin/env bash
# Lints for both targets (kept out of the test command: clippy re-checks every dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --release --features native --all-targets -- -D warnings
# The page's module (burn's CPU backend alone), then its WebGPU module with the browser tests.
cargo clippy --release --target wasm32-unknown-unknown --lib -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown --features webgpu --lib --bins --test web -- -D warnings
# The page's second CPU module (relaxed SIMD's multiply-add in the kernels), with the browser tests.
cargo clippy --release --target wasm32-unknown-unknown --features webgpu,relaxed-simd --lib --bins --test web -- -D warnings
