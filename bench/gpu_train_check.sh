#!/usr/bin/env bash
# The paper preset for a few steps at stage 1 (batch 8/GPU) and stage 2 (batch 1/GPU, 16 frames),
# with and without gradient checkpointing, on one GPU: step time, samples/s, time waited for
# data and peak memory against the dry-run estimate. Prepared for a lent GPU (a few minutes);
# without one it runs the same path on the CPU with the tiny preset (a smoke test).
#
#   bench/gpu_train_check.sh            # STEPS=6; PRESET=paper on CUDA, tiny on CPU
#   STEPS=4 CONFIGS="1:8:auto 2:1:auto" bench/gpu_train_check.sh
#
# Data: a small build written from the fixture media with stand-in latents (tests/model_shards.py),
# 64x64 latents as the paper's 512 px crops give; the reader is not the bottleneck here
# (bench/bench_reader.py measures it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export STEPS=${STEPS:-6} CONFIGS=${CONFIGS:-"1:8:auto 1:8:none 2:1:auto 2:1:none"} PRESET=${PRESET:-}
exec "$PY" - <<'PYEOF'
import csv, os, sys, tempfile, time
from pathlib import Path

import torch

sys.path[:0] = [".", "tests"]
from model_shards import make_test_build  # noqa: E402
from portrait_model.cli import dry_run  # noqa: E402
from portrait_model.train import LOG_FILE, TrainConfig, train  # noqa: E402

cuda = torch.cuda.is_available()
preset = os.environ["PRESET"] or ("paper" if cuda else "tiny")
steps = int(os.environ["STEPS"])
root = Path(tempfile.mkdtemp(prefix="gpu_train_check_"))
data = make_test_build(root / "build", n_frames=20, n_clips=2, with_excluded=False, references=[(0,), (0,)])
print(f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, preset {preset}, {steps} steps per run")
print(f"{'stage':>5} {'batch':>5} {'ckpt':>5} {'step_s':>7} {'samples/s':>9} {'wait_ms':>7} "
      f"{'peak_gb':>7} {'est_gb':>6}")
for spec in os.environ["CONFIGS"].split():
    stage, batch, ckpt = spec.split(":")
    stage, batch = int(stage), int(batch)
    frames = 16 if preset == "paper" else 8
    est = dry_run(preset, stage, batch, ckpt, frames=frames)["estimated_gb_per_gpu"]["peak_gb"]
    run_dir = root / f"run-{stage}-{batch}-{ckpt}"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        train(TrainConfig(data=str(data), run_dir=str(run_dir), stage=stage, preset=preset, steps=steps,
                          batch_size=batch, frames=frames, grad_checkpointing=ckpt, log_every=1,
                          save_checkpoints=False, num_workers=2, quiet=True,
                          latent_size=None if preset == "paper" else 16))
    except torch.OutOfMemoryError:
        print(f"{stage:>5} {batch:>5} {ckpt:>5} {'out of memory':>25} {'':>7} {est:>6.1f}")
        continue
    with open(run_dir / LOG_FILE) as f:
        rows = list(csv.DictReader(f))
    timed = rows[2:] or rows  # the first steps compile kernels and warm the allocator
    elapsed = [float(r["elapsed_s"]) for r in rows]
    step_s = (elapsed[-1] - elapsed[len(rows) - len(timed) - 1]) / len(timed) if len(rows) > len(timed) else elapsed[-1] / len(rows)
    wait = sum(float(r["data_wait_ms"]) for r in timed) / len(timed)
    peak = max(float(r["peak_mem_gb"]) for r in rows)
    print(f"{stage:>5} {batch:>5} {ckpt:>5} {step_s:>7.3f} {batch / step_s:>9.2f} {wait:>7.1f} "
          f"{peak:>7.1f} {est:>6.1f}", flush=True)
import shutil  # noqa: E402

shutil.rmtree(root, ignore_errors=True)
PYEOF
