"""How a build maps its stages onto a cluster's resources (pipeline/build.py: stage_plans),
without starting Ray: tests/test_cluster.py runs these plans on a real 3-node cluster."""
from __future__ import annotations

import os

import pytest

from pipeline.build import stage_plans
from pipeline.config import load_config
from pipeline.ray_runner import ChainUDF
from stages.base import CPU_THREADS_ENV, Stage, cpu_threads


@pytest.fixture(scope="module")
def config(small_vae_dir):
    return load_config(None, {"features.latents.weights": str(small_vae_dir), "features.latents.device": "cpu"})


def test_a_cluster_with_gpus_gets_a_gpu_pool_that_asks_no_cpu(config):
    cpu, gpu = stage_plans(config, "run", workers=3, gpus=2)
    assert [n for n, _, _ in cpu.steps] == ["curate", "duplicate_keys", "features"]
    assert (cpu.num_cpus, cpu.num_gpus, cpu.max_workers) == (1, 0, 3)
    # The CPU pool may hold every CPU of the GPU nodes: a GPU actor asking any CPU could wait forever.
    assert [n for n, _, _ in gpu.steps] == ["latents"] and (gpu.num_cpus, gpu.num_gpus, gpu.max_workers) == (0, 1, 2)
    # device=cpu is honoured inside the GPU actor (a logical GPU), not a reason to leave the pool.
    assert gpu.steps[0][2]["latents"].device == "cpu"


def test_without_gpus_every_stage_shares_one_cpu_pool(config):
    (plan,) = stage_plans(config, "run", workers=4, gpus=0)
    assert [n for n, _, _ in plan.steps] == ["curate", "duplicate_keys", "features", "latents"]
    assert (plan.num_cpus, plan.num_gpus, plan.max_workers) == (1, 0, 4)


def test_a_stage_without_a_model_for_the_gpu_stays_in_the_cpu_pool():
    (plan,) = stage_plans(load_config(), "run", workers=2, gpus=4)  # no VAE weights: latents has nothing to do
    assert [n for n, _, _ in plan.steps] == ["curate", "duplicate_keys", "features", "latents"]
    assert plan.num_gpus == 0


class _SeesDevices(Stage):
    """Records what CUDA devices its actor sees when it sets up."""

    seen: list = []

    def setup(self):
        _SeesDevices.seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))


def test_cpu_pool_actors_see_no_gpu_while_gpu_actors_keep_theirs(monkeypatch):
    # 'auto' devices resolve inside the actor: on a CPU actor that must mean the CPU, never a
    # GPU some GPU actor of the same node reserved.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    _SeesDevices.seen = []
    ChainUDF([("a", _SeesDevices, {})], run_id="r", hide_gpus=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    ChainUDF([("a", _SeesDevices, {})], run_id="r", hide_gpus=False)
    assert _SeesDevices.seen == ["", "0"]


class _SeesThreads(Stage):
    """Records how many threads OpenCV would use when its actor sets up."""

    seen: list = []

    def setup(self):
        import cv2

        _SeesThreads.seen.append(cv2.getNumThreads())


def test_an_actor_runs_opencv_on_the_cpus_it_reserved(monkeypatch):
    # OpenCV's default is one thread per core of the node: 1-CPU actors on a 64-core node would
    # each start 64, and take cores other actors reserved.
    import cv2

    monkeypatch.delenv(CPU_THREADS_ENV, raising=False)  # ChainUDF sets it: undone after the test
    default = cv2.getNumThreads()
    try:
        _SeesThreads.seen = []
        ChainUDF([("a", _SeesThreads, {})], run_id="r", num_cpus=1)
        ChainUDF([("a", _SeesThreads, {})], run_id="r", num_cpus=0)  # a GPU actor's CPU share
        ChainUDF([("a", _SeesThreads, {})], run_id="r", num_cpus=2.5)
        assert _SeesThreads.seen == [1, 1, 3]
        assert cpu_threads() == 3  # what the actor's onnxruntime sessions are held to
    finally:
        cv2.setNumThreads(default)


def test_an_inline_build_runs_opencv_on_one_thread_then_gives_the_default_back(monkeypatch):
    # One process does the whole build, as one 1-CPU actor would; the process goes on after it.
    import cv2

    from pipeline.ray_runner import StagePlan, run_inline

    monkeypatch.delenv(CPU_THREADS_ENV, raising=False)
    default = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        _SeesThreads.seen = []
        plan = StagePlan("a", [("a", _SeesThreads, {})], num_cpus=1, num_gpus=0, max_workers=1, run_id="r")
        assert list(run_inline([], [plan])) == []
        assert _SeesThreads.seen == [1]
        assert cv2.getNumThreads() == 2 and cpu_threads() is None
    finally:
        cv2.setNumThreads(default)


def test_a_local_instance_gives_its_workers_the_worker_env_and_the_caller_keeps_its_own(tmp_path):
    # The workers inherit WORKER_ENV from the instance's own processes (no runtime_env, so Ray
    # can hand the build the workers it pre-started); the process that started it, which goes
    # on after the build, must not be left with OMP_NUM_THREADS=1 and the rest. A fresh
    # process: this one may already hold a Ray instance.
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, os, ray; from pipeline.ray_runner import WORKER_ENV, init_ray; "
        "before = {k: os.environ.get(k) for k in WORKER_ENV}; init_ray(None, 1); "
        "seen = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in WORKER_ENV}).remote()); "
        "print(json.dumps({'worker': seen, 'before': before, 'after': {k: os.environ.get(k) for k in WORKER_ENV}}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GLOG_minloglevel", "RAY_ADDRESS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from pipeline.ray_runner import WORKER_ENV

    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["worker"] == WORKER_ENV
    assert seen["after"] == seen["before"] == {"GLOG_minloglevel": None, "TF_CPP_MIN_LOG_LEVEL": "0",
                                                "OMP_NUM_THREADS": None}
