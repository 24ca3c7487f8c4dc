"""A default build of the fixtures at two commits, side by side (prints figures; asserts nothing).

Each commit is checked out in a temporary git worktree (this checkout is not touched) and runs
`portrait build --input FIXTURES --out TMP` in a fresh process with the default settings
(features on, embedded defaults) and the inline executor, so one process does all the work and
its CPU time is the build's. Printed per commit: wall seconds, CPU seconds (user + system of the
build process and its children), frames in clips (sum of `clips.n_frames`), frames per second
and frames per CPU second (= per core), and whether both commits gave the same clips and
verdicts. With --runs N the commits alternate N times and the best run of each counts.

Usage: python bench/bench_commits.py [--base REV] [--head REV] [--input DIR] [--runs 1] [--cpu 0]
  --base defaults to a7b4a13 (the code before issue 23's work); --head to this working tree.
  --cpu pins each build to the listed cores (taskset), e.g. --cpu 0 for one core.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "media"


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(into), rev],
                   check=True, capture_output=True)
    return into


def build(tree: Path, inputs: Path, out: Path, cpu: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2", "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--input", str(inputs), "--out", str(out),
           "--set", "ray.executor=inline"]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"build at {tree} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(wall=wall, cpu=cpu_s, clips=clip_table(out))


def clip_table(out: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(out / "catalog.duckdb"), read_only=True) as con:
        return con.sql("SELECT s.rel_path, c.clip_index, c.n_frames, c.verdict, c.reasons "
                       "FROM clips c JOIN sources s USING (source_id) ORDER BY 1, 2").fetchall()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="a7b4a13")
    ap.add_argument("--head", default=None, help="a revision; default: this working tree as it is")
    ap.add_argument("--input", default=str(FIXTURES))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--cpu", default=None, help="taskset core list for each build, e.g. 0")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-commits-"))
    try:
        trees = {"base " + args.base: checkout(args.base, tmp / "base")}
        trees["head " + (args.head or "(working tree)")] = checkout(args.head, tmp / "head") if args.head else REPO
        best: dict[str, dict] = {}
        for run in range(args.runs):
            for name, tree in trees.items():
                out = tmp / f"out-{len(best)}-{run}"
                r = build(tree, Path(args.input), out, args.cpu)
                shutil.rmtree(out)
                print(f"run {run + 1} {name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU", file=sys.stderr)
                if name not in best or r["cpu"] < best[name]["cpu"]:
                    best[name] = r
        print(f"input: {args.input}; default settings, features on, inline executor"
              + (f", cores {args.cpu}" if args.cpu else ""))
        print(f"{'commit':30s} {'wall s':>7s} {'CPU s':>7s} {'frames':>7s} {'frames/s':>9s} {'frames/CPU s':>13s}")
        rates = []
        for name, r in best.items():
            frames = sum(c[2] for c in r["clips"])
            rates.append(frames / r["cpu"])
            print(f"{name:30s} {r['wall']:7.1f} {r['cpu']:7.1f} {frames:7d} {frames / r['wall']:9.1f} "
                  f"{rates[-1]:13.1f}")
        print(f"speed-up per core: {rates[1] / rates[0]:.2f}x")
        a, b = (r["clips"] for r in best.values())
        print("clips, frames per clip, verdicts and reasons: " + ("identical" if a == b else "DIFFERENT"))
    finally:
        for sub in ("base", "head"):
            if (tmp / sub).exists():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / sub)],
                               capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
