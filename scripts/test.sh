#!/usr/bin/env bash
# Runs every test of ddpm-explorer on a fresh machine: set-up, formatting, the native test suite
# (release profile, shared with `cargo run --release`), the page's build (`trunk build --release`,
# the web-release profile), the browser tests in headless Chromium (the same profile, so the wasm
# crates are compiled once for both), and the built page driven end to end.
#
# Two lanes run at the same time: the native build and its tests, and the browser's set-up, the
# page's build and the browser tests. Each has long stretches on one core (one large crate, a link,
# wasm-opt), which the other fills. The end-to-end test runs last, alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test --check # every prerequisite first, one line for each missing
bash scripts/setup.sh train        # the datasets: seconds
export PATH="$(pwd)/tools/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

mkdir -p target
native_log=target/native-tests.log
echo "== native build and tests (release), in the background: $native_log"
# The native tests use the CPU backend, and wgpu on Mesa's lavapipe, which the browser's set-up
# installs: they wait for it (a flag file), the build does not.
rm -f target/.browser-setup-done
(
  cargo test --release --features native --no-run
  while [ ! -f target/.browser-setup-done ]; do sleep 2; done
  cargo test --release --features native
) >"$native_log" 2>&1 &
native=$!
trap 'pkill -P $native 2>/dev/null; kill $native 2>/dev/null || true' EXIT

echo "== set-up for the browser: the wasm target, trunk, wasm-bindgen, wasm-opt, Chromium"
bash scripts/setup.sh test
touch target/.browser-setup-done
echo "== the page's build (trunk build --release: its module, burn's CPU backend alone, the same with relaxed SIMD, and its WebGPU module)"
trunk build --release
echo "== browser tests (headless Chromium, WebGPU on SwiftShader; the WebGPU module's features and profile)"
cargo test --profile web-release --target wasm32-unknown-unknown --features webgpu --test web
echo "== browser tests again with relaxed SIMD's multiply-add in the CPU kernels (the page's second CPU module)"
cargo test --profile web-release --target wasm32-unknown-unknown --features webgpu,relaxed-simd --test web

echo "== native tests (release): waiting for them"
status=0
wait $native || status=$?
trap - EXIT
if [ "$status" != 0 ]; then
  tail -n 80 "$native_log"
  echo "the native build or tests failed (the end of $native_log is above)" >&2
  exit 1
fi
sed -n '/Running/,$p' "$native_log"
echo "== the built page end to end (headless Chromium)"
node --test tests/e2e/
