#!/usr/bin/env bash
# ddpm-explorer's U-Net against its layer-for-layer PyTorch port, on this machine, in one run:
# forward at batch 1 and 16, and a training step at batch 64 (forward, backward, Adam), each at 1
# and 2 threads, then the ratios (PyTorch time / ours: above 1 means we are faster). With
# `--preset cifar10`: Ho et al.'s 35.7 M CIFAR-10 net on 32 x 32 RGB, forward at batch 1 and 32 and a
# training step at batch 32, with each side's peak resident memory after its training steps.
#
#   bash benches/compare_with_pytorch.sh [--res-blocks 2 | --preset cifar10] [--peer PATH/torch_unet.py]
#
# PyTorch is a benchmark dependency only: it goes into a throw-away venv under target/ (PyPI's
# Linux wheel with its CUDA libraries, a few GB, downloaded once). Nothing here is a test.
set -euo pipefail
cd "$(dirname "$0")/.."
RES_BLOCKS=2
PRESET=mnist
PEER=benches/torch_unet.py   # the layer-for-layer PyTorch port of the U-Net, carried here
while [ $# -gt 0 ]; do
  case "$1" in
    --res-blocks) RES_BLOCKS=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --peer) PEER=$2; shift 2 ;;
    *) echo "error: unknown argument '$1' (expected --res-blocks N, --preset mnist|cifar10 or --peer PATH)" >&2; exit 2 ;;
  esac
done
case "$PRESET" in
  mnist) FILTER='^(unet_forward|train_step)/' ;;
  cifar10) FILTER='^cifar10/' ;;
  *) echo "error: unknown preset '$PRESET' (expected mnist or cifar10)" >&2; exit 2 ;;
esac
[ -f "$PEER" ] || { echo "error: the PyTorch peer '$PEER' is missing (pass --peer PATH)" >&2; exit 2; }
VENV=target/peer-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "[bench] installing torch into $VENV (once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch==2.15.0
fi
OUT=target/peer-bench
mkdir -p "$OUT"
# PyTorch's OpenMP threads spin while waiting; on 2-core VMs that makes 2 threads slower than 1.
export OMP_WAIT_POLICY=PASSIVE
for threads in 1 2; do
  echo "[bench] PyTorch, $threads thread(s)" >&2
  "$VENV/bin/python" "$PEER" --res-blocks "$RES_BLOCKS" --preset "$PRESET" --threads "$threads" --json \
    > "$OUT/torch_${PRESET}_$threads.json"
  echo "[bench] ddpm-explorer (burn flex), $threads thread(s)" >&2
  RAYON_NUM_THREADS=$threads DDPM_BENCH_RES_BLOCKS=$RES_BLOCKS cargo bench --quiet --features native --bench unet -- \
    --save-baseline "threads_$threads" "$FILTER" > "$OUT/burn_${PRESET}_$threads.log" 2>&1
done
python3 - "$OUT" "$PRESET" <<'PY'
import json, os, re, sys
out, preset = sys.argv[1], sys.argv[2]
def ours(threads, group, name):
    path = f"target/criterion/{group}/{name}/threads_{threads}/estimates.json"
    return json.load(open(path))["mean"]["point_estimate"] / 1e6  # ms
rows = []
memory = []
for threads in (1, 2):
    peer = json.load(open(os.path.join(out, f"torch_{preset}_{threads}.json")))
    if preset == "cifar10":
        rows += [
            (f"forward, batch 1 ({threads} thr)", ours(threads, "cifar10", "forward_batch_1"), peer["fwd_b1_ms"]),
            (f"forward, batch 32 ({threads} thr)", ours(threads, "cifar10", "forward_batch_32"), peer["fwd_b32_ms"]),
            (f"training step, batch 32 ({threads} thr)", ours(threads, "cifar10", "train_step_batch_32"), peer["train_step_s"] * 1000),
        ]
        log = open(os.path.join(out, f"burn_{preset}_{threads}.log")).read()
        hwm = re.search(r"VmHWM:\s+(\d+) kB", log)
        memory.append((threads, int(hwm.group(1)) / 1024 if hwm else float("nan"), peer["train_peak_rss_mib"]))
    else:
        rows += [
            (f"forward, batch 1 ({threads} thr)", ours(threads, "unet_forward", "batch_1"), peer["fwd_b1_ms"]),
            (f"forward, batch 16 ({threads} thr)", ours(threads, "unet_forward", "batch_16"), peer["fwd_b16_ms"]),
            (f"training step, batch 64 ({threads} thr)", ours(threads, "train_step", "batch_64"), peer["train_step_s"] * 1000),
        ]
print(f"U-Net with {peer['params']:,} parameters (PyTorch count), this machine, one run")
print(f"{'':34} {'ddpm-explorer':>14} {'PyTorch':>10} {'ratio':>7}")
for name, a, b in rows:
    batch = 32000 if preset == "cifar10" else 64000
    extra = f"  ({batch / a:.1f} vs {batch / b:.1f} img/s)" if "training" in name else ""
    print(f"{name:34} {a:11.1f} ms {b:7.1f} ms {b / a:6.2f}×{extra}")
for threads, a, b in memory:
    print(f"peak resident memory after training ({threads} thr): ddpm-explorer {a:.0f} MiB, PyTorch {b:.0f} MiB")
PY
