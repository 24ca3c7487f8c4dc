"""How a build maps its stages onto a cluster's resources (pipeline/build.py: stage_plans),
without starting Ray: tests/test_cluster.py runs these plans on a real 3-node cluster."""
from __future__ import annotations

import pytest

from pipeline.build import stage_plans
from pipeline.config import load_config


@pytest.fixture(scope="module")
def config(small_vae_dir):
    return load_config(None, {"features.latents.weights": str(small_vae_dir), "features.latents.device": "cpu"})


def test_a_cluster_with_gpus_gets_a_gpu_pool_that_asks_no_cpu(config):
    cpu, gpu = stage_plans(config, "run", workers=3, gpus=2)
    assert [n for n, _, _ in cpu.steps] == ["curate", "features"] and (cpu.num_cpus, cpu.num_gpus, cpu.max_workers) == (1, 0, 3)
    # The CPU pool may hold every CPU of the GPU nodes: a GPU actor asking any CPU could wait forever.
    assert [n for n, _, _ in gpu.steps] == ["latents"] and (gpu.num_cpus, gpu.num_gpus, gpu.max_workers) == (0, 1, 2)
    # device=cpu is honoured inside the GPU actor (a logical GPU), not a reason to leave the pool.
    assert gpu.steps[0][2]["device"] == "cpu"


def test_without_gpus_every_stage_shares_one_cpu_pool(config):
    (plan,) = stage_plans(config, "run", workers=4, gpus=0)
    assert [n for n, _, _ in plan.steps] == ["curate", "features", "latents"]
    assert (plan.num_cpus, plan.num_gpus, plan.max_workers) == (1, 0, 4)


def test_auto_device_resolves_to_cpu_only_without_gpus(small_vae_dir):
    config = load_config(None, {"features.latents.weights": str(small_vae_dir)})
    assert stage_plans(config, "run", 1, gpus=0)[0].steps[2][2]["device"] == "cpu"
    assert stage_plans(config, "run", 1, gpus=1)[1].steps[0][2]["device"] == "auto"  # CUDA if the actor sees one
