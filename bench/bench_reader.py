"""Samples per second the training reader delivers from local shards, per DataLoader worker,
for stage 1 (reference/driving pairs) and stage 2 (16-frame windows).

    .venv/bin/python bench/bench_reader.py --data OUT --workers 8 --batch-size 8
    .venv/bin/python bench/bench_reader.py --test-build   # a small build from the fixtures

Each stage: the frame index is opened (built once per build, timed separately), then samples
leaving the DataLoader are counted for ``--seconds`` after a warm-up batch. Compare with the
samples/s a GPU consumes (bench/gpu_train_check.sh prints it): workers x per-worker rate must
exceed it, or the trainer's ``data_wait_ms`` column grows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portrait_model.reader import ShardReader, open_index  # noqa: E402


def bench_stage(data: str, stage: int, args) -> str:
    reader = ShardReader(data, stage, args.batch_size if stage == 1 else max(1, args.batch_size // 8),
                         frames=args.frames, mix_units=args.mix_units, samples_per_clip=8)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)
    it = iter(loader)
    next(it)  # start-up: worker processes, first shard checksums, first row groups
    start, samples, frames = time.perf_counter(), 0, 0
    while time.perf_counter() - start < args.seconds:
        batch = next(it)
        samples += batch["latents"].shape[0]
        frames += batch["latents"].shape[0] * (batch["latents"].shape[2] + 1)  # + the reference
    elapsed = time.perf_counter() - start
    per_worker = samples / elapsed / max(1, args.workers)
    return (f"stage {stage}: {samples / elapsed:.1f} samples/s ({per_worker:.1f} per worker, "
            f"{frames / elapsed:.0f} latent frames/s) from {len(reader.clips)} clips, {args.workers} workers, "
            f"batch {reader.batch_size}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="build output folder (catalog.duckdb + shards/)")
    ap.add_argument("--test-build", action="store_true", help="write a small build from the fixture media first")
    ap.add_argument("--stage", type=int, choices=(1, 2), help="one stage only (default: both)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8, help="stage 1; stage 2 uses batch/8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--mix-units", type=int, default=32)
    args = ap.parse_args()
    data = args.data
    if args.test_build:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from model_shards import make_test_build

        data = str(make_test_build(Path(tempfile.mkdtemp(prefix="bench_reader_")), n_frames=40, n_clips=4,
                                   references=[(0,)] * 4))
    if not data:
        ap.error("give --data OUT or --test-build")
    start = time.perf_counter()
    index = open_index(data)
    print(f"frame index: {len(index.frame)} frames, {len(index.clip_ids)} clips, "
          f"{time.perf_counter() - start:.2f} s to open (built once per build)")
    for stage in ([args.stage] if args.stage else [1, 2]):
        print(bench_stage(data, stage, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
