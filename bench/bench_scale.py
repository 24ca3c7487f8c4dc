"""The catalog and the commit path at dataset scale, on this machine, without running a model.

A synthetic OUT as a VoxCeleb2-sized build would leave it: ``--clips`` sources of one clip
each, packed ``--clips-per-shard`` to a shard (as pipeline/build.py's plan_units packs short
videos), each shard a small but real Parquet file in the frames contract, written by the
project's own writer (pipeline/writer.py: pending marker, fsync, rename, sha256 and footer
digest) in ``--workers`` processes, the way Ray actors write them; the driver commits the unit
results through the build's own commit loop (pipeline.build.Committer: deserialise, one
transaction per batch, publish). Then it times what a user runs, each in a fresh process
(wall time and peak RSS): `portrait query` for a clips-only query, the named `rethreshold`
and a `frames` count; `portrait verify` (MB/s); opening the catalog. A 40-shard OUT answers the
same clips-only query for comparison, and a second catalog of ``--sql-clips`` clip rows (no
shards: rows inserted in bulk) gives the SQL figures at 10M clips.

    python bench/bench_scale.py                      # 1M clips in 10,000 shards, 10M-clip SQL
    python bench/bench_scale.py --clips 100000 --sql-clips 1000000 --keep /tmp/scale

``make_synthetic_out`` is also what bench/bench_reader.py builds its scale figures on.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from manifests import schemas  # noqa: E402
from manifests.catalog import Catalog  # noqa: E402
from pipeline.build import BuildStats, Committer  # noqa: E402
from pipeline.config import StorageConfig  # noqa: E402
from pipeline.results import UnitResult  # noqa: E402
from pipeline.writer import ShardWriter, WriterSettings  # noqa: E402

RUN_ID = "20260101T000000-5ca1e0"
CLIPS_SQL = "SELECT verdict, count(*) AS n, avg(sharpness) AS sharpness FROM clips GROUP BY verdict"


def _config_json() -> str:
    """The default build config, as a run records it (rethreshold reads its thresholds)."""
    from pipeline.config import load_config

    return load_config(None, {}).to_json()


def _tiny_jpeg() -> bytes:
    import cv2

    img = np.full((16, 16, 3), 128, np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _ids(start: int, n: int) -> pa.Array:
    return pa.array([f"{k:016x}" for k in range(start, start + n)], pa.string())


def _clip_rows(first: int, n: int, frames: int, rng: np.random.Generator) -> pa.Table:
    """``n`` clip rows in the CLIPS contract with plausible scores (so rethreshold has work)."""
    template = schemas.table_from_rows([{
        "clip_id": "x", "source_id": "x", "dataset": "voxceleb2", "media_type": "video", "clip_index": 0,
        "start_s": 0.0, "end_s": 8.0, "n_frames": frames, "fps": 12.5, "split": "train", "labels": {},
        "identity": "id00000", "verdict": "kept", "reasons": [], "run_id": RUN_ID,
    }], schemas.CLIPS)
    t = template.take(np.zeros(n, np.int64))
    ids = _ids(first, n)
    scores = {
        "crop_source_px": rng.uniform(200, 900, n), "face_px": rng.uniform(80, 400, n),
        "face_frac": rng.uniform(0.2, 0.5, n), "pad_frac": rng.uniform(0, 0.1, n),
        "face_cut": rng.uniform(0, 0.05, n), "face_conf": rng.uniform(0.7, 1, n),
        "face_human": rng.uniform(0.5, 1, n), "occlusion": rng.uniform(0, 0.3, n),
        "occluded_share": rng.uniform(0, 0.2, n), "lighting_mean": rng.uniform(60, 200, n),
        "lighting_std": rng.uniform(20, 60, n), "lighting_clipped": rng.uniform(0, 0.1, n),
        "bg_motion": rng.uniform(0, 8, n), "sharpness": rng.uniform(0.01, 0.15, n),
        "detail_4x": rng.uniform(0.05, 0.8, n),
    }
    occl = rng.uniform(0, 0.6, n * frames).astype(np.float32)
    offsets = pa.array(np.arange(0, n * frames + 1, frames, dtype=np.int32))
    occl_list = pa.ListArray.from_arrays(offsets, pa.array(occl))
    for name, values in {**scores, "clip_id": ids, "source_id": ids}.items():
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.array(values).cast(t.schema.field(i).type))
    i = t.schema.get_field_index("occlusion_frames")
    t = t.set_column(i, t.schema.field(i), occl_list)
    i = t.schema.get_field_index("n_faces")
    return t.set_column(i, t.schema.field(i), pa.array(np.ones(n, np.int32)))


def _unit(args: tuple) -> dict:
    """One worker's unit: its sources' frames written as a shard by the project's writer, and
    the result row the driver receives."""
    out, unit, first, n, frames = args
    rng = np.random.default_rng(unit)
    clips = _clip_rows(first, n, frames, rng)
    ids = clips.column("clip_id").to_pylist()
    sources = schemas.table_from_rows([{
        "source_id": sid, "dataset": "voxceleb2", "path": f"/data/vox/{sid}.mp4", "rel_path": f"{sid}.mp4",
        "media_type": "video", "status": "kept", "reasons": [], "n_clips": 1, "n_kept": 1, "run_id": RUN_ID,
        "duration_s": 8.0,
    } for sid in ids], schemas.SOURCES)
    jpeg = _tiny_jpeg()
    # The build's own storage settings (row groups of 32 rows: what training reads at once).
    st = StorageConfig()
    writer = ShardWriter(WriterSettings(out, RUN_ID, st.shard_target_mb, st.row_group_rows, st.compression), unit)
    for sid in ids:
        writer.add(sid, schemas.table_from_rows([{
            "clip_id": sid, "source_id": sid, "frame_index": k, "source_frame": 2 * k, "timestamp_s": k / 12.5,
            "view": 0, "jpeg": jpeg, "face_conf": 0.99} for k in range(frames)], schemas.FRAMES))
    shards = writer.finish()
    return UnitResult(sources, clips, schemas.ERRORS.empty_table(), shards).to_row()


def make_synthetic_out(out: str, clips: int, frames_per_clip: int = 2, clips_per_shard: int = 100,
                       workers: int = 2, progress: bool = True) -> dict:
    """Write a synthetic OUT (see the module docstring); returns the driver's figures."""
    cat = Catalog.for_build(out)
    try:
        cat.start_run({"run_id": RUN_ID, "started_at": datetime.now(timezone.utc), "status": "running",
                       "schema_version": schemas.SCHEMA_VERSION, "config_json": _config_json(), "n_sources": clips})
        stats = BuildStats()
        committer = Committer(cat, RUN_ID, stats, committed=set(), publish_every_s=10.0)
        jobs = [(str(out), u, first, min(clips_per_shard, clips - first), frames_per_clip)
                for u, first in enumerate(range(0, clips, clips_per_shard))]
        driver_s, t0 = 0.0, time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for k, row in enumerate(pool.map(_unit, jobs, chunksize=16)):
                t = time.perf_counter()
                committer.add(row)
                driver_s += time.perf_counter() - t
                if progress and k % 1000 == 999:
                    print(f"  {k + 1}/{len(jobs)} units", file=sys.stderr)
        t = time.perf_counter()
        committer.commit()
        cat.update_run(RUN_ID, status="finished", finished_at=datetime.now(timezone.utc))
        cat.publish(final=True)
        final_s = time.perf_counter() - t
        return {"units": len(jobs), "frames": stats.frames, "shards": stats.shards, "driver_s": driver_s + final_s,
                "final_publish_s": final_s, "wall_s": time.perf_counter() - t0}
    finally:
        cat.close()


def make_sql_catalog(out: str, clips: int, chunk: int = 1_000_000) -> None:
    """A catalog of ``clips`` clip rows (and their sources) with no shards: rows in bulk."""
    rng = np.random.default_rng(0)
    with Catalog(out) as cat:
        cat.start_run({"run_id": RUN_ID, "started_at": datetime.now(timezone.utc), "status": "finished",
                       "schema_version": schemas.SCHEMA_VERSION, "config_json": _config_json(), "n_sources": clips})
        for first in range(0, clips, chunk):
            cat.insert("clips", _clip_rows(first, min(chunk, clips - first), 8, rng))
        cat.checkpoint()


# Runs one command and prints its peak RSS (KB) as the last line of stderr: the wrapper's only
# child is the command, so RUSAGE_CHILDREN is exactly its figure.
_RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of a command in a fresh process, and its stdout."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t
    lines = proc.stderr.strip().splitlines()
    if proc.returncode not in (0, 1) or not lines:
        raise SystemExit(f"{' '.join(argv)} failed: {lines[-2] if len(lines) > 1 else proc.returncode}")
    return wall, int(lines[-1]) / 1024, proc.stdout


def portrait(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def in_process_open(out: str) -> list[str]:
    code = ("import time,sys; t=time.perf_counter(); from manifests.catalog import Catalog; "
            "c=Catalog(sys.argv[1], read_only=True); c.query('SELECT count(*) FROM clips'); "
            "print(f'{time.perf_counter()-t:.3f}')")
    return [sys.executable, "-c", code, out]


def dir_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--clips-per-shard", type=int, default=100)
    ap.add_argument("--frames-per-clip", type=int, default=2)
    ap.add_argument("--sql-clips", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", help="folder to build in and keep (default: a temporary one, removed)")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    env_note = f"{os.cpu_count()} CPUs; local disk; each command in a fresh process (page cache warm)"
    try:
        small, big, sql = root / "out40", root / "out", root / "sql"
        for folder in (small, big, sql):
            shutil.rmtree(folder, ignore_errors=True)
        print(f"building a 40-shard OUT ({40 * args.clips_per_shard} clips) ...", file=sys.stderr)
        make_synthetic_out(str(small), 40 * args.clips_per_shard, args.frames_per_clip, args.clips_per_shard,
                           args.workers, progress=False)
        print(f"building the scale OUT ({args.clips} clips) ...", file=sys.stderr)
        b = make_synthetic_out(str(big), args.clips, args.frames_per_clip, args.clips_per_shard, args.workers)
        print(f"filling a {args.sql_clips}-clip catalog ...", file=sys.stderr)
        t = time.perf_counter()
        make_sql_catalog(str(sql), args.sql_clips)
        sql_fill = time.perf_counter() - t

        rows = []
        q40 = min(timed(portrait("query", "--catalog", str(small), CLIPS_SQL))[:2] for _ in range(3))
        qbig = min(timed(portrait("query", "--catalog", str(big), CLIPS_SQL))[:2] for _ in range(3))
        rows.append(("clips-only query, 40 shards", *q40))
        rows.append((f"clips-only query, {b['shards']} shards", *qbig))
        rows.append((f"frames count, {b['shards']} shards",
                     *timed(portrait("query", "--catalog", str(big), "SELECT count(*) FROM frames"))[:2]))
        rows.append((f"rethreshold, {args.clips} clips (CLI, first rows shown)",
                     *timed(portrait("query", "--catalog", str(big), "--named", "rethreshold"))[:2]))
        rethreshold = portrait("query", "--catalog", str(sql), "--named", "rethreshold")
        rows.append((f"rethreshold, {args.sql_clips} clips (CLI, first rows shown)",
                     *min(timed(rethreshold)[:2] for _ in range(2))))
        rows.append((f"clips-only query, {args.sql_clips} clips",
                     *timed(portrait("query", "--catalog", str(sql), CLIPS_SQL))[:2]))
        opened = [timed(in_process_open(str(big))) for _ in range(3)]
        open_s = min(float(o[2].strip()) for o in opened)
        rows.append((f"catalog open + count, {args.clips} clips (in the process)", open_s, min(o[1] for o in opened)))
        shard_mb = dir_mb(big / "shards")
        v_wall, v_rss, _ = timed(portrait("verify", str(big)))
        rows.append((f"verify, {b['shards']} shards", v_wall, v_rss))

        print(f"\n# bench_scale: {args.clips} clips in {b['shards']} shards ({shard_mb:.0f} MB), {env_note}")
        print(f"driver commit: {b['units'] / b['driver_s']:.0f} units/s, {b['frames'] / b['driver_s']:.0f} frames/s "
              f"(driver {b['driver_s']:.1f} s of {b['wall_s']:.1f} s wall, final publish {b['final_publish_s']:.1f} s)")
        print(f"shards per source: {b['shards'] / args.clips:.4f} ({args.clips / b['shards']:.0f} sources a shard)")
        mb = {folder: (folder / "catalog.duckdb").stat().st_size / 1e6 for folder in (big, sql)}
        print(f"catalog: {mb[big]:.0f} MB at {args.clips} clips, {mb[sql]:.0f} MB at {args.sql_clips} "
              f"(filled in {sql_fill:.0f} s)")
        print(f"{'what':58s} {'seconds':>8s} {'peak RSS MB':>12s}")
        for name, wall, rss in rows:
            print(f"{name:58s} {wall:8.2f} {rss:12.0f}")
        print(f"verify throughput: {shard_mb / v_wall:.0f} MB/s, {b['shards'] / v_wall:.0f} shards/s "
              "(process start included)")
        print(f"clips-only query, {b['shards']} vs 40 shards: {qbig[0] / q40[0]:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
