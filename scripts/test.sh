#!/usr/bin/env bash
# Runs every test of ddpm-explorer on a fresh machine: set-up, formatting, the native test suite
# (release profile, shared with `cargo run --release`), the page's build (`trunk build --release`,
# the web-release profile), the browser tests in headless Chromium (the same profile, so the wasm
# crates are compiled once for both), and the built page driven end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(pwd)/tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== native tests (release)"
cargo test --release --features native
echo "== the page's build (trunk build --release: the wasm32 library in the web-release profile)"
trunk build --release
echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
cargo test --profile web-release --target wasm32-unknown-unknown --test web
echo "== the built page end to end (headless Chromium)"
node --test tests/e2e/
