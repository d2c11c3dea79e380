#!/usr/bin/env bash
# The demo: set up, then sample digits with the shipped weights in assets/ and write the grid and
# the reverse chain of one digit to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
cargo run --release --features native -- sample --weights assets --n 16 --sampler ddim --steps 50 \
  --out out/samples.png --chain out/chain.png "$@"
