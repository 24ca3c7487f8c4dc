"""The same build inline, on a 1-node and on a 3-node local Ray cluster with the same total CPUs:
wall time, throughput, and Ray's overhead (cluster wall time / inline wall time for the same
work; below 1 once the pool's parallelism beats Ray's start-up and data movement).

    .venv/bin/python bench/bench_cluster.py                       # d0.mp4 + 3 photos, 3 CPUs
    .venv/bin/python bench/bench_cluster.py --cpus 6 --media DIR --features

Each build is the user's command (``python -m pipeline.cli build``) in a fresh process, so every
figure includes the process's imports and Ray's connection and actor start-up; cluster start
is timed apart. Clusters are tests/local_cluster.py's (own temp dir and ports, stopped by their
own processes; RAY_AUTH_MODE=disabled). On a machine with fewer cores than --cpus the clusters
oversubscribe the cores and show Ray's overhead rather than its scaling.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import fixtures_root  # noqa: E402
from tests.local_cluster import LocalCluster, cluster_env  # noqa: E402


def default_media(folder: Path) -> Path:
    media = fixtures_root() / "media"
    folder.mkdir(parents=True)
    shutil.copy(media / "videos" / "d0.mp4", folder / "d0.mp4")
    for name in ("s1.jpg", "s12.jpg", "d9.jpg"):
        shutil.copy(media / "images" / name, folder / name)
    return folder


def build(media: Path, out: Path, settings: list[str], address: str | None = None) -> float:
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--input", str(media), "--out", str(out), "--no-progress"]
    for s in settings:
        cmd += ["--set", s]
    if address:
        cmd += ["--address", address]
    env = {k: v for k, v in cluster_env().items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"build failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall


def counts(out: Path) -> tuple[int, int]:
    from manifests.catalog import Catalog

    with Catalog(out, read_only=True) as cat:
        s = cat.query("SELECT count(*) AS n FROM sources").to_pylist()[0]["n"]
        f = cat.query("SELECT count(*) AS n FROM frames").to_pylist()[0]["n"]
    return s, f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", type=Path, help="a folder of images and videos (default: fixture d0.mp4 + 3 photos)")
    ap.add_argument(
        "--cpus", type=int, default=3, help="total CPUs of each cluster (the 3-node one: head gets the rest)"
    )
    ap.add_argument("--features", action="store_true", help="compute the CPU features too (default: curation only)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    media = args.media or default_media(root / "media")
    settings = ["eval_split.n=0", *([] if args.features else ["features.enabled=false"]), *args.set]
    per_worker = max(1, args.cpus // 3)
    shapes = {
        "1 node": (args.cpus, {}),
        "3 nodes": (args.cpus - 2 * per_worker, {"w1": dict(num_cpus=per_worker), "w2": dict(num_cpus=per_worker)}),
    }
    rows = []
    inline = build(media, root / "inline", [*settings, "ray.executor=inline"])
    n_src, n_frames = counts(root / "inline")
    rows.append(("inline", 1, 0.0, inline))
    for name, (head_cpus, workers) in shapes.items():
        cluster = LocalCluster(root / name.replace(" ", "_"), dashboard=False)
        t = time.perf_counter()
        try:
            cluster.start(head_cpus=head_cpus, workers=workers)
            started = time.perf_counter() - t
            wall = build(media, root / f"out_{name.replace(' ', '_')}", settings, cluster.address)
        finally:
            cluster.stop()
        rows.append((name, head_cpus + sum(w["num_cpus"] for w in workers.values()), started, wall))
    print(f"{n_src} sources, {n_frames} frames stored; features {'on' if args.features else 'off'}; "
          f"{os.cpu_count()} cores on this machine")
    print(f"{'run':>8} {'CPUs':>4} {'start_s':>7} {'build_s':>7} {'sources/s':>9} {'frames/s':>8} {'vs inline':>9}")
    for name, cpus, started, wall in rows:
        print(f"{name:>8} {cpus:>4} {started:>7.1f} {wall:>7.1f} {n_src / wall:>9.3f} {n_frames / wall:>8.2f} "
              f"{wall / inline:>8.2f}x")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
