#!/usr/bin/env bash
# Runs every test of ddpm-explorer on a fresh machine: set-up, formatting, the native test suite
# (release profile, shared with `cargo run --release`), the page's build (`trunk build --release`,
# the web-release profile), the browser tests in headless Chromium (the same profile, so the wasm
# crates are compiled once for both), and the built page driven end to end.
#
# The native build and the browser's (set-up, trunk, the browser tests' binary) run at the same
# time: each has long stretches on one core (one large crate, a link, wasm-opt), which the other
# fills. The tests themselves then run one suite after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test --check # every prerequisite first, one line for each missing
bash scripts/setup.sh train        # the datasets: seconds
export PATH="$(pwd)/tools/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

mkdir -p target
native_log=target/native-build.log
echo "== native test build (release), in the background: $native_log"
cargo test --release --features native --no-run >"$native_log" 2>&1 &
native=$!
trap 'kill $native 2>/dev/null || true' EXIT

echo "== set-up for the browser: the wasm target, trunk, wasm-bindgen, wasm-opt, Chromium"
bash scripts/setup.sh test
echo "== the page's build (trunk build --release: the wasm32 library in the web-release profile)"
trunk build --release
echo "== browser tests' build (the same profile)"
cargo test --profile web-release --target wasm32-unknown-unknown --test web --no-run

echo "== waiting for the native test build"
if ! wait $native; then
  tail -n 60 "$native_log"
  echo "the native test build failed (whole log: $native_log)" >&2
  exit 1
fi
trap - EXIT
echo "== native tests (release)"
cargo test --release --features native
echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
cargo test --profile web-release --target wasm32-unknown-unknown --test web
echo "== the built page end to end (headless Chromium)"
node --test tests/e2e/
