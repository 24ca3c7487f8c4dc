"""How fast the build's driver commits when workers write the shards, and what it receives.

Real unit results are made once (a fixture video and a photograph curated with the default
features, their shards written by the same code the last Ray operator runs); then thousands of
copies under new source and clip ids (videos one per unit, images in groups, as
pipeline/build.py's plan_units makes them) are fed to the driver's commit loop (pipeline.build.Committer:
deserialise, classify errors, one DuckDB transaction per unit, stats, catalog publishing), as
they would arrive from a cluster. Prints the frames per second the driver sustains, the bytes it
receives per frame, and the ratio to one worker core's rate (`--worker-fps`, default 16: the
default curation path measured by bench/bench_curate.py).

    python bench/bench_driver.py [--units 3000] [--images-per-unit 64] [--worker-fps 16]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from manifests.catalog import Catalog  # noqa: E402
from pipeline import ray_runner  # noqa: E402
from pipeline.build import BuildStats, Committer, stage_plans  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.results import UnitResult, row_bytes, units_to_json  # noqa: E402
from pipeline.sources import dataset_entries, discover  # noqa: E402
from pipeline.writer import WriterSettings  # noqa: E402


def real_results(media: Path, work: Path) -> list[dict]:
    """One result row per fixture source, from the real stages and writer."""
    folder = work / "media"
    folder.mkdir()
    shutil.copy(media / "videos" / "d0.mp4", folder / "d0.mp4")
    shutil.copy(media / "images" / "s1.jpg", folder / "s1.jpg")
    config = load_config(None, {"ray.executor": "inline"})
    specs = discover(dataset_entries(config, [str(folder)], []), out=None).specs
    plans = stage_plans(config, "20260101T000000-bench0", 1)
    plans[-1].writer = WriterSettings(str(work / "shards_out"), "20260101T000000-bench0", 256, 1024, "zstd")
    return list(ray_runner.run_inline(units_to_json([[s] for s in specs]), plans))


def _renamed(t: pa.Table, column: str, suffix: str) -> pa.Table:
    if t.num_rows == 0 or column not in t.column_names:
        return t
    import pyarrow.compute as pc

    i = t.schema.get_field_index(column)
    values = pc.binary_join_element_wise(t.column(i), pa.scalar("-" + suffix), "")  # nulls stay null
    return t.set_column(i, t.schema.field(i), values.cast(t.schema.field(i).type))


def _copy(res: UnitResult, k: int) -> UnitResult:
    suffix = hashlib.sha1(str(k).encode()).hexdigest()[:8]
    tables = {name: _renamed(_renamed(getattr(res, name), "source_id", suffix), "clip_id", suffix)
              for name in ("sources", "clips", "errors")}
    shards = [type(s)(**{**s.__dict__, "shard_id": f"{s.shard_id}-{suffix}", "path": f"shards/{suffix}.parquet",
                         "source_ids": tuple(f"{i}-{suffix}" for i in s.source_ids)}) for s in res.shards]
    return UnitResult(tables["sources"], tables["clips"], tables["errors"], shards)


def copies(template: dict, n: int, start: int, per_unit: int = 1) -> list[dict]:
    """``n`` units of ``per_unit`` copies each of a source's result under new ids (images come
    in groups: pipeline/build.py plan_units), serialised as the driver receives them."""
    res = UnitResult.from_row(template)
    rows = []
    for k in range(start, start + n):
        parts = [_copy(res, k * per_unit + j) for j in range(per_unit)]
        def cat(name: str, parts: list = parts) -> pa.Table:
            return pa.concat_tables([getattr(p, name) for p in parts])

        shard = parts[0].shards[0]
        merged = [type(shard)(**{**shard.__dict__, "rows": sum(p.shards[0].rows for p in parts),
                                 "bytes": sum(p.shards[0].bytes for p in parts),
                                 "source_ids": tuple(i for p in parts for i in p.shards[0].source_ids)})]
        rows.append(UnitResult(cat("sources"), cat("clips"), cat("errors"), merged).to_row())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=3000, help="half videos (d0.mp4: 39 frames), half groups of images")
    ap.add_argument("--images-per-unit", type=int, default=64,
                    help="images per unit (a large image dataset gets up to a shard's worth: ~1,300)")
    ap.add_argument("--worker-fps", type=float, default=16.0, help="one worker core's frames/s on the default path")
    ap.add_argument(
        "--media", default=os.environ.get("PORTRAIT_FIXTURES", str(REPO.parent / "shared" / "fixtures")) + "/media"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    try:
        templates = real_results(Path(args.media), work)
        for t in templates:
            r = UnitResult.from_row(t)
            frames = sum(s.rows for s in r.shards)
            print(f"template {r.sources.column('rel_path')[0]}: {frames} frames, {r.clips.num_rows} clips, "
                  f"{row_bytes(t)} bytes received ({row_bytes(t) / max(frames, 1):.0f} B/frame)")
        per = args.units // len(templates)
        rows = [
            row
            for i, t in enumerate(templates)
            for row in copies(
                t,
                per,
                i * per * args.images_per_unit,
                args.images_per_unit if UnitResult.from_row(t).sources["media_type"][0].as_py() == "image" else 1,
            )
        ]
        rows = [rows[i] for i in sorted(range(len(rows)), key=lambda i: hashlib.md5(str(i).encode()).digest())]
        received = sum(map(row_bytes, rows))
        stats = BuildStats()
        out = work / "out"
        catalog = Catalog.for_build(out)
        committer = Committer(catalog, "20260101T000000-bench1", stats, set(), publish_every_s=10.0)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for row in rows:
            committer.add(row)
        committer.commit()
        committer.publish()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        catalog.close()
        fps = stats.frames / wall
        print(f"driver: {len(rows)} units, {stats.frames} frames in {wall:.1f} s ({cpu:.1f} s CPU): "
              f"{fps:,.0f} frames/s, {len(rows) / wall:,.0f} units/s ({stats.frames / cpu:,.0f} frames per CPU second)")
        print(f"received: {received / stats.frames:.0f} bytes per frame ({received / 1e6:.1f} MB in all)")
        print(f"= {fps / args.worker_fps:,.0f}x one worker core ({args.worker_fps:g} frames/s): the driver keeps up "
              f"with about {fps / args.worker_fps:,.0f} worker cores")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
