#!/usr/bin/env bash
# The latents (GPU) pool on a real GPU: build fixture media with an SD1.5-sized VAE (random
# weights, `allow_random_weights`, recorded in the catalog) on a local Ray instance that sees
# the GPU, and print
#   - VAE frames/s of the stage alone (512 px crops of the build, batches of LATENT_BATCH),
#   - VAE frames/s in the build (latent frames / time the GPU pool was busy),
#   - the share of the build's wall time the GPU was busy, overall and after warm-up (from
#     the first busy sample), sampled by nvidia-smi every 200 ms. Goal: >= 80% after warm-up,
#     i.e. curation feeds the GPU pool fast enough.
# Prepared for a lent GPU machine (a few minutes); without CUDA it exits with one line.
# SMOKE=1 runs the same steps on the CPU without nvidia-smi (give MEDIA one small photo: the
# SD1.5-sized VAE costs seconds per frame on a CPU), to check the script itself.
#
#   bench/gpu_check.sh                     # fixture videos + photos, CPUS = cores - 1
#   MEDIA=/data/media CPUS=15 LATENT_BATCH=16 bench/gpu_check.sh
#
# Needs the project's environment (PYTHON, default .venv/bin/python) with a CUDA torch, and
# media: MEDIA, else $PORTRAIT_FIXTURES/media or ../shared/fixtures/media (shared/fixtures/media
# inside the checkout too), else the demo set (pipeline/demo.py) is generated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
export CPUS=${CPUS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))} LATENT_BATCH=${LATENT_BATCH:-16} WORK

export SMOKE=${SMOKE:-} DEVICE=cuda
if [[ -n "$SMOKE" ]]; then
  DEVICE=cpu
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch: nothing to measure')"
  command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: cannot sample GPU use"; exit 1; }
fi

if [[ -z "${MEDIA:-}" ]]; then
  for d in "${PORTRAIT_FIXTURES:-/nonexistent}/media" ../shared/fixtures/media shared/fixtures/media; do
    [[ -d "$d" ]] && { MEDIA=$d; break; }
  done
fi
if [[ -z "${MEDIA:-}" ]]; then
  MEDIA=$WORK/demo_media
  "$PY" -c "import sys; from pathlib import Path; from pipeline.demo import make_sample_set; make_sample_set(Path(sys.argv[1]))" "$MEDIA"
fi
export MEDIA
echo "media $MEDIA, $CPUS CPUs for Ray, work folder $WORK"

# An SD1.5-sized AutoencoderKL config (diffusers' defaults are SD1.5's VAE); weights are random.
"$PY" - <<'PYEOF'
import json, os
cfg = dict(_class_name="AutoencoderKL", in_channels=3, out_channels=3, latent_channels=4,
           block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32,
           down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
           act_fn="silu", sample_size=512, scaling_factor=0.18215)
os.makedirs(f"{os.environ['WORK']}/sd15_vae", exist_ok=True)
json.dump(cfg, open(f"{os.environ['WORK']}/sd15_vae/config.json", "w"))
PYEOF

# GPU use, every 200 ms, while the build runs.
if [[ -n "$SMOKE" ]]; then
  sleep 3600 > "$WORK/gpu_util.csv" &
else
  nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 200 > "$WORK/gpu_util.csv" &
fi
SMI=$!
trap 'kill $SMI 2>/dev/null || true' EXIT
date +%s.%N > "$WORK/t0"
"$PY" -m pipeline.cli build --input "$MEDIA" --out "$WORK/out" --num-cpus "$CPUS" --no-progress \
  --set features.latents.backend=diffusers --set features.latents.config_dir="$WORK/sd15_vae" \
  --set features.latents.allow_random_weights=true --set features.latents.device="$DEVICE" \
  --set features.latents.batch_size="$LATENT_BATCH" --set eval_split.n=0 2>&1 | tail -20
date +%s.%N > "$WORK/t1"
kill $SMI 2>/dev/null || true
trap - EXIT

"$PY" - <<'PYEOF'
import csv, os, time
from pathlib import Path

import numpy as np
import torch

work = Path(os.environ["WORK"])
t0, t1 = float((work / "t0").read_text()), float((work / "t1").read_text())
util = []
for row in csv.reader(open(work / "gpu_util.csv")):
    try:
        util.append(float(row[1]))
    except (IndexError, ValueError):
        pass
util = np.array(util)

from manifests.catalog import Catalog

with Catalog(work / "out", read_only=True) as cat:
    n_lat = cat.query("SELECT count(latent) AS n FROM frames").to_pylist()[0]["n"]
    n_frames = cat.query("SELECT count(*) AS n FROM frames").to_pylist()[0]["n"]
    jpegs = [r["jpeg"] for r in cat.query("SELECT jpeg FROM frames LIMIT 64").to_pylist()]
wall = t1 - t0
print(f"build: {wall:.1f} s wall, {n_frames} frames stored, {n_lat} with latents")
if len(util):
    busy = util > 0
    first = int(np.argmax(busy)) if busy.any() else len(util)
    after = util[first:]
    print(f"GPU busy (utilization > 0): {busy.mean():.0%} of the build's samples; "
          f"{(after > 0).mean() if len(after) else 0:.0%} after warm-up ({len(util)} samples, 200 ms); "
          f"mean utilization after warm-up {after.mean() if len(after) else 0:.0f}%")
    busy_s = busy.sum() * 0.2
    if busy_s:
        print(f"VAE in the build: {n_lat / busy_s:.1f} frames/s of GPU-busy time")

# The stage alone on the GPU: the same crops, batches of LATENT_BATCH.
from stages.jpeg import decode_jpeg
from stages.latents import LatentStage

if jpegs:
    cuda = os.environ["DEVICE"] == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    stage = LatentStage(backend="diffusers", config_dir=str(work / "sd15_vae"), allow_random_weights=True,
                        device=os.environ["DEVICE"], batch_size=int(os.environ["LATENT_BATCH"]))
    stage.setup()
    crops = [decode_jpeg(j) for j in jpegs]
    stage.encode(crops[: stage.batch_size])  # warm-up: kernels, allocator
    sync()
    start = time.perf_counter()
    reps = 3 if cuda else 1
    for _ in range(reps):
        stage.encode(crops)
    sync()
    dt = time.perf_counter() - start
    print(f"VAE alone ({torch.cuda.get_device_name() if cuda else 'cpu'}, {stage.describe().get('dtype', '?')}): "
          f"{reps * len(crops) / dt:.1f} frames/s at {crops[0].shape[1]} px, batch {stage.batch_size}")
PYEOF
