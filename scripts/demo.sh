#!/usr/bin/env bash
# The demo: set up, then serve the browser explorer with the shipped weights on
# http://127.0.0.1:8080 (first build a few minutes). Extra arguments go to `trunk serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$(pwd)/tools/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ ! -f assets/model.bpk ]; then
  echo "note: assets/ has no trained weights yet; the page will say so (train with: cargo run --release --features native -- train)" >&2
fi
exec trunk serve --release "$@"
