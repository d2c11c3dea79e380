#!/usr/bin/env bash
# Lints for both targets (kept out of the test command: clippy re-checks every dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --release --features native --all-targets -- -D warnings
cargo clippy --release --target wasm32-unknown-unknown --lib --test web -- -D warnings
