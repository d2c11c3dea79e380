#!/usr/bin/env bash
# Times `bash scripts/test.sh` as a newcomer meets it: a fresh clone of this checkout's HEAD, a fresh
# HOME (no cargo registry, no trunk, no wasm-bindgen, no npm cache) and no target directory. What it
# cannot take away is kept: rustup's toolchain (with its wasm32 target, when installed) and
# Debian's packages, which a fresh machine installs in the set-up too (Chromium, ChromeDriver, Mesa:
# about 150 MB). Every line of the run is printed with the seconds since the start.
#
#   bash benches/cold_test_run.sh [WORK_DIR]   # default: a new temporary folder; needs the network
#                                              # the set-up needs (crates.io, npm, Debian)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d -t ddpm-cold.XXXXXX)}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=$(dirname "$(command -v rustup)")
mkdir -p "$work/home/.cargo/bin"
for tool in cargo rustc rustup rustdoc cargo-clippy cargo-fmt rustfmt clippy-driver; do
  ln -sf "$cargo_bin/$tool" "$work/home/.cargo/bin/$tool"
done
rm -rf "$work/repo"
git clone -q "$repo" "$work/repo"
cd "$work/repo"
# Only the toolchain's proxies and the system's tools on PATH: nothing installed under the old HOME
# (python3 stays, wherever it lives).
python=$(dirname "$(command -v python3)")
path="$work/home/.cargo/bin"
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  case "$dir" in "$HOME"/* | "$repo"/* | "$cargo_bin") ;; *) path="$path:$dir" ;; esac
done
start=$(date +%s)
set +e
env -u CARGO_HOME -u CARGO_TARGET_DIR HOME="$work/home" RUSTUP_HOME="$rustup_home" PATH="$path:$python" \
  PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}" \
  bash scripts/test.sh 2>&1 | while IFS= read -r line; do
  printf '%5d %s\n' $(($(date +%s) - start)) "$line"
done
status=${PIPESTATUS[0]}
echo "exit status $status after $(($(date +%s) - start)) s (work folder: $work)"
exit "$status"
