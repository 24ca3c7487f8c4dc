"""Benchmark of the curation path on d3.mp4 (prints figures; asserts nothing).

1. Frames per second on one core of: decode alone, face mesh alone, and the whole default path
   (CurateStage.process: decode, detection, mesh, scores, crop, JPEG), all over the same sampled
   frames. The bound is what decode + mesh alone cost together; goal: path >= 60% of the bound.
   The three take turns ``--rounds`` times (default 3) and each one's fastest round counts.
2. Build throughput with Ray on 1 CPU and on 2 CPUs (separate processes, same inputs);
   goal: 2 CPUs >= 1.8x one. Ray's num_cpus only limits its actors: the 1-CPU build's Ray
   processes (raylet, GCS, Ray Data's helper actors, the driver) and its actor's helper threads
   still run on the machine's other cores. ``cores_busy`` says how many cores each build kept
   busy (the machine's CPU time over the build's wall time: meaningful on a quiet machine).
   With --pinned the two builds run again with all their processes held to 1 and to 2 cores
   (taskset), the way a 1-CPU and a 2-CPU machine would run them.

Usage: python bench/bench_curate.py [--video PATH] [--rounds 3] [--copies 4] [--skip-ray] [--processes] [--pinned]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_VIDEO = REPO.parent / "shared" / "fixtures" / "media" / "videos" / "d3.mp4"


def one_core_figures(video: Path, rounds: int = 3) -> dict:
    import mediapipe as mp

    from manifests.adapters.base import SourceSpec
    from pipeline.build import stage_steps
    from pipeline.config import load_config
    from stages.base import SourceWork, use_cpu_threads
    from stages.curate import CurateStage
    from stages.decode import VideoReader
    from stages.probe import probe

    use_cpu_threads(1)  # one core, as a 1-CPU actor and an inline build run
    config = load_config()
    fps = config.sampling.fps
    info = probe(str(video), "video")
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
    kwargs = stage_steps(config)[0][2]  # the curate stage's settings
    stage = CurateStage(**kwargs)
    stage.setup()
    spec = SourceSpec(dataset="bench", path=str(video), rel_path=video.name, media_type="video")
    stage.process(SourceWork.start(spec, "bench"))  # warm-up: first-call costs of the models

    # The three figures take turns, ``rounds`` times, and the fastest round of each counts: on
    # a shared machine one slow moment would otherwise skew the ratio either way.
    t_decode = t_mesh = t_path = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        frames = [f.rgb for f in VideoReader(str(video), info.rotation).frames(fps)]
        t_decode = min(t_decode, time.perf_counter() - t)
        mesh.process(frames[0])
        t = time.perf_counter()
        for f in frames:
            mesh.process(f)
        t_mesh = min(t_mesh, time.perf_counter() - t)
        t = time.perf_counter()
        result = stage.process(SourceWork.start(spec, "bench"))
        t_path = min(t_path, time.perf_counter() - t)
    n = len(frames)

    decode_fps, mesh_fps, path_fps = n / t_decode, n / t_mesh, n / t_path
    bound_fps = 1.0 / (1.0 / decode_fps + 1.0 / mesh_fps)
    return {
        "video": video.name, "sampled_frames": n, "sampling_fps": fps,
        "decode_fps_per_core": round(decode_fps, 1), "mesh_fps_per_core": round(mesh_fps, 1),
        "bound_fps_per_core": round(bound_fps, 1), "path_fps_per_core": round(path_fps, 1),
        "path_over_bound": round(path_fps / bound_fps, 3), "goal_path_over_bound": 0.6, "rounds": rounds,
        "clips": len(result.clips), "kept_frames": len(result.frames),
    }


def _process_cpu() -> dict[int, tuple[float, str]]:
    """CPU seconds and name of every process now running (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(pid)] = ((int(fields[11]) + int(fields[12])) / tick, cmd)
    return out


def _process_kind(cmd: str) -> str:
    """A Ray process by what it runs: ray::<actor or task>, or the binary or module's name."""
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    for kind in ("raylet", "gcs_server", "dashboard/agent", "runtime_env/agent", "dashboard", "monitor",
                 "log_monitor"):
        if kind in cmd:
            return kind
    return "driver" if "pipeline.build" in cmd else cmd[:40]


def machine_busy_seconds() -> float:
    """CPU seconds all cores of this machine have been busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(limit_s: float = 20.0) -> None:
    """Wait (at most ``limit_s``) until the machine's cores are idle for a second: the Ray
    instance of the build before takes a few seconds to shut its processes down, and a build
    started meanwhile shares the cores with them."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        b0 = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - b0 < 0.1:
            return


def ray_build_seconds(inputs: Path, num_cpus: int, processes: dict | None = None,
                      cores: str | None = None) -> tuple[float, float, float]:
    """Wall seconds of a Ray build with ``num_cpus`` CPUs, the CPU seconds its driver used
    (the driver only commits: its share says whether it could limit a larger cluster), and the
    cores the machine kept busy meanwhile. With ``processes`` (a dict), the CPU seconds of
    every process the run started (Ray's included), by kind, sampled from /proc while it runs
    (a process's last ~0.2 s may be missed). ``cores``: a taskset core list that the whole run,
    Ray's processes included, is held to."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-ray{num_cpus}-"))
    code = (
        "import resource, sys, time; from pipeline.build import build; from pipeline.config import load_config; "
        "from pipeline.sources import dataset_entries, discover; from pipeline import ray_runner; "
        "from bench.bench_curate import machine_busy_seconds as busy; "
        f"c = load_config(None, {{'ray.num_cpus': {num_cpus}}}); ray_runner.init_ray(None, {num_cpus}); "
        f"d = discover(dataset_entries(c, [{str(inputs)!r}], [])); "
        "cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); c0, b0 = cpu(), busy(); "
        f"t = time.perf_counter(); build(c, {str(out)!r}, d, progress=False); w = time.perf_counter() - t; "
        "print(w, cpu() - c0, (busy() - b0) / w)"
    )
    wait_until_quiet()
    before = _process_cpu() if processes is not None else {}
    cmd = [sys.executable, "-c", code]
    proc = subprocess.Popen(["taskset", "-c", cores, *cmd] if cores else cmd, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: dict[int, tuple[float, str]] = {}
    while processes is not None and proc.poll() is None:
        for pid, (cpu, cmd) in _process_cpu().items():
            if pid not in before:
                seen[pid] = (cpu, cmd)
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the Ray build failed:\n{stderr[-2000:]}")
    for cpu, cmd in seen.values():
        kind = _process_kind(cmd)
        processes[kind] = processes.get(kind, 0.0) + cpu
    shutil.rmtree(out, ignore_errors=True)
    wall, driver_cpu, busy = stdout.strip().splitlines()[-1].split()
    return float(wall), float(driver_cpu), float(busy)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--copies", type=int, default=4, help="copies of the video in the Ray build")
    ap.add_argument("--rounds", type=int, default=3, help="one-core figures: best of this many alternating rounds")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--pinned", action="store_true",
                    help="also run both Ray builds held to 1 and to 2 cores (taskset), Ray's processes included")
    ap.add_argument("--processes", action="store_true",
                    help="also print the CPU seconds of every process each Ray build started, by kind")
    args = ap.parse_args()
    figures = one_core_figures(args.video, max(1, args.rounds))
    if not args.skip_ray:
        folder = Path(tempfile.mkdtemp(prefix="bench-inputs-"))
        for i in range(args.copies):
            shutil.copy(args.video, folder / f"copy{i}{args.video.suffix}")
        per_process: dict[int, dict] = {1: {}, 2: {}} if args.processes else {1: None, 2: None}
        t1, _, busy1 = ray_build_seconds(folder, 1, per_process[1])
        t2, driver_cpu, busy2 = ray_build_seconds(folder, 2, per_process[2])
        if args.pinned:
            p1, _, _ = ray_build_seconds(folder, 1, cores="0")
            p2, _, _ = ray_build_seconds(folder, 2, cores="0,1")
        shutil.rmtree(folder, ignore_errors=True)
        for n, cpu in per_process.items():
            for kind, seconds in sorted((cpu or {}).items(), key=lambda kv: -kv[1]):
                if seconds >= 0.1:
                    print(f"ray {n} CPU: {seconds:6.2f} CPU s  {kind}")
        figures.update({
            "ray_sources": args.copies, "ray_1cpu_s": round(t1, 2), "ray_2cpu_s": round(t2, 2),
            "ray_speedup_2_over_1": round(t1 / t2, 3), "goal_speedup": 1.8,
            "ray_1cpu_cores_busy": round(busy1, 2), "ray_2cpu_cores_busy": round(busy2, 2),
            # The driver's CPU seconds over all the CPU time the 2-CPU build had (wall x CPUs).
            "driver_cpu_s": round(driver_cpu, 2), "driver_share_of_cpu": round(driver_cpu / (2 * t2), 3),
        })
        if args.pinned:
            figures.update({"pinned_1core_s": round(p1, 2), "pinned_2cores_s": round(p2, 2),
                            "pinned_speedup_2_over_1": round(p1 / p2, 3)})
    for k, v in figures.items():
        print(f"{k:>24}: {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
