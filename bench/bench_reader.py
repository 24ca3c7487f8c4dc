"""What the training reader costs, per loader process: samples/s (local shards and the local S3
server), bytes read per sample, open descriptors at steady state, the epoch plan's time at 10M
samples, and startup time and RSS on a large synthetic OUT.

    .venv/bin/python bench/bench_reader.py                      # paper-sized rows, local + S3
    .venv/bin/python bench/bench_reader.py --row-group-rows 1024 # the same with the old row groups
    .venv/bin/python bench/bench_reader.py --data OUT            # any build (local or s3://)
    .venv/bin/python bench/bench_reader.py --scale-clips 1000000 # + startup/RSS on bench_scale's OUT
    .venv/bin/python bench/bench_reader.py --scale-out OUT       # the same on an OUT made before

Without ``--data`` it writes a build of paper-sized rows (a (4, 64, 64) float16 latent, a
(3, 64, 64) map and a 40 KB JPEG each: about 100 KB a frame) through the project's shard writer:
``--clips`` clips of ``--frames`` frames, packed ``--clips-per-shard`` to a shard, in row groups of
``--row-group-rows`` (default: the build setting ``storage.row_group_rows``). Samples/s is
measured in this process (one loader process: the DataLoader's workers each do the same work)
for ``--seconds`` after a warm-up batch, as the first of ``--readers`` loader processes (16: it
gets a sixteenth of the row groups, as on a node of 8 ranks x 2 workers, so samples rarely share a
row group, as at paper scale); bytes read are what the reader asked the storage for
(footers and column chunks), and, locally, what the process read (``/proc/self/io`` rchar).
``--s3`` (default on) starts the local moto S3 server the tests use, uploads the build and reads it
from there. Compare samples/s x loader processes with what a GPU consumes
(bench/gpu_train_check.sh prints it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import torch  # noqa: E402

from portrait_model.reader import ShardReader  # noqa: E402

torch.set_num_threads(1)


def rchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def bench_stage(data: str, stage: int, args) -> dict:
    batch = args.batch_size if stage == 1 else max(1, args.batch_size // 8)
    reader = ShardReader(data, stage, batch, frames=args.frames, mix_units=args.mix_units,
                         samples_per_clip=args.samples_per_clip)
    it = reader.batches_for(0, args.readers)  # this process: reader 0 of --readers
    next(it)  # start-up: first footers, first row groups
    pool = reader.pool
    b0, r0, start, samples = pool.bytes_read, rchar(), time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        samples += next(it)["latents"].shape[0]
    elapsed = time.perf_counter() - start
    return {"stage": stage, "batch": batch, "clips": len(reader.clips), "samples_per_s": samples / elapsed,
            "mb_per_sample": (pool.bytes_read - b0) / max(samples, 1) / 1e6,
            "rchar_mb_per_sample": (rchar() - r0) / max(samples, 1) / 1e6 if reader.loc.is_local else None,
            "open_shards": len(pool), "open_fds": open_fds(), "opens": pool.opens, "full_hashes": pool.full_hashes}


def plan_time(data: str, samples: int) -> dict:
    reader = ShardReader(data, 1, 8)
    reader.samples_per_clip = max(1, -(-samples // len(reader.clips)))
    n = len(reader.clips) * reader.samples_per_clip
    t = time.perf_counter()
    whole = reader.epoch_plan(0)
    t_global = time.perf_counter() - t
    t = time.perf_counter()
    mine = reader.worker_plan(0, 3, 16)
    t_worker = time.perf_counter() - t
    return {"samples": n, "clips": len(reader.clips), "epoch_plan_s": t_global, "worker_plan_s_of_16": t_worker,
            "check": len(whole), "mine": len(mine)}


STARTUP = """
import json, sys, time
t = time.perf_counter()
sys.path[:0] = [{repo!r}]
from portrait_model.reader import ShardReader
imported = time.perf_counter() - t
reader = ShardReader({out!r}, 1, 8)
ready = time.perf_counter() - t
plan = reader.worker_plan(0, 0, 16)
# VmHWM, not ru_maxrss: the latter counts the forking parent's memory before exec.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"import_s": imported, "reader_s": ready, "with_plan_s": time.perf_counter() - t,
                   "clips": len(reader.clips), "rss_mb": hwm / 1024}}))
"""


def startup(out: str) -> list[dict]:
    """Reader start-up in fresh processes: the first builds the frame index (once per node)."""
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", STARTUP.format(repo=str(REPO), out=out)],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr.strip().splitlines()[-1])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


class LocalS3:
    """The moto S3 server the tests use (tests/test_object_store.py), with the AWS_* env."""

    def __enter__(self):
        from local_cluster import free_ports

        exe = Path(sys.executable).with_name("moto_server")
        if not exe.exists():
            raise SystemExit("moto_server is not installed: run with --no-s3")
        port = free_ports(1)[0]
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        return "s3://bench"

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def upload(local: str, uri: str) -> None:
    import pyarrow.fs as pafs

    from manifests import storage

    loc = storage.resolve(uri)
    pafs.copy_files(local, loc.root, destination_filesystem=loc.fs)


def show(where: str, r: dict) -> None:
    extra = f", rchar {r['rchar_mb_per_sample']:.2f} MB" if r["rchar_mb_per_sample"] is not None else ""
    print(f"  {where} stage {r['stage']} (batch {r['batch']}, {r['clips']} clips): {r['samples_per_s']:.1f} samples/s "
          f"per loader process; {r['mb_per_sample']:.2f} MB read per sample{extra}; "
          f"{r['open_shards']} shards open, {r['open_fds']} descriptors; {r['opens']} shard opens, "
          f"{r['full_hashes']} whole-shard hashes")


def main() -> int:
    from pipeline.config import StorageConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a build (local folder or URI) instead of the synthetic one")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=100, help="frames per synthetic clip")
    ap.add_argument("--clips-per-shard", type=int, default=24, help="24 clips of 100 frames: a ~240 MB shard")
    ap.add_argument("--row-group-rows", type=int, default=StorageConfig().row_group_rows)
    ap.add_argument("--stage", type=int, choices=(1, 2), help="one stage only (default: both)")
    ap.add_argument("--window", type=int, default=16, help="stage-2 frames")
    ap.add_argument("--batch-size", type=int, default=8, help="stage 1; stage 2 uses batch/8")
    ap.add_argument(
        "--samples-per-clip", type=int, default=1, help="1: as at paper scale, few samples share a row group"
    )
    ap.add_argument("--mix-units", type=int, default=32)
    ap.add_argument("--readers", type=int, default=16,
                    help="loader processes sharing the epoch (ranks x workers); this one is the first")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--plan-samples", type=int, default=10_000_000)
    ap.add_argument("--no-s3", dest="s3", action="store_false")
    ap.add_argument("--scale-clips", type=int, help="write bench_scale's synthetic OUT of this many clips first")
    ap.add_argument("--scale-out", help="a synthetic OUT written before (bench/bench_scale.py --keep)")
    args = ap.parse_args()
    frames_per_clip, args.frames = args.frames, args.window
    tmp = tempfile.mkdtemp(prefix="bench_reader_")
    os.environ.setdefault("PORTRAIT_INDEX_DIR", str(Path(tmp) / "index-cache"))
    data = args.data
    if not data:
        from model_shards import make_many_shards

        t = time.perf_counter()
        data = str(make_many_shards(Path(tmp) / "out", args.clips, frames=frames_per_clip,
                                    clips_per_shard=args.clips_per_shard, row_group_rows=args.row_group_rows,
                                    jpeg_bytes=40_000))
        size = sum(f.stat().st_size for f in (Path(data) / "shards").glob("*.parquet"))
        print(f"synthetic build: {args.clips} clips x {frames_per_clip} frames, {size / 1e6:.0f} MB of shards, "
              f"row groups of {args.row_group_rows} rows ({time.perf_counter() - t:.0f} s to write)")
    t = time.perf_counter()
    ShardReader(data, 1, 1)
    print(f"reader start (catalog snapshot + frame index, built once per node): {time.perf_counter() - t:.2f} s")
    stages = [args.stage] if args.stage else [1, 2]
    for stage in stages:
        show("local" if not data.startswith("s3://") else data, bench_stage(data, stage, args))
    if args.s3 and not args.data:
        with LocalS3() as bucket:
            uri = f"{bucket}/out"
            upload(data, uri)
            for stage in stages:
                show("S3 (local moto server)", bench_stage(uri, stage, args))
    p = plan_time(data, args.plan_samples)
    print(f"epoch plan at {p['samples'] / 1e6:.1f}M samples ({p['clips']} clips): {p['epoch_plan_s']:.2f} s global; "
          f"{p['worker_plan_s_of_16']:.2f} s for one reader of 16 ({p['mine']} samples)")
    scale = args.scale_out
    if args.scale_clips:
        from bench_scale import make_synthetic_out

        scale = str(Path(tmp) / "scale")
        print(f"writing bench_scale's synthetic OUT of {args.scale_clips} clips ...", flush=True)
        print(f"  {make_synthetic_out(scale, args.scale_clips, progress=False)}")
    if scale:
        first, again = startup(scale)
        print(
            f"start-up on {scale} ({first['clips']} clips): first process {first['reader_s']:.1f} s (builds the "
            f"index), later ones {again['reader_s'] - again['import_s']:.2f} s to a reader after imports, "
            f"{again['with_plan_s'] - again['import_s']:.2f} s with an epoch "
            f"plan (import {again['import_s']:.1f} s); peak RSS {first['rss_mb']:.0f} / {again['rss_mb']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
