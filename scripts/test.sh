#!/usr/bin/env bash
# Runs every test of ddpm-explorer on a fresh machine: set-up, formatting, the native test suite
# (release profile, shared with `cargo run --release`), the wasm32 library build, the browser tests
# in headless Chromium, and the built page driven end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(pwd)/tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== native tests (release)"
cargo test --release --features native
echo "== wasm32 library build"
cargo build --release --lib --target wasm32-unknown-unknown
echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
cargo test --release --target wasm32-unknown-unknown --test web
echo "== the built page end to end (trunk build --release, then headless Chromium)"
trunk build --release
node --test tests/e2e/
