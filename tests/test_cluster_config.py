"""The cluster configs load as Ray's cluster launcher loads them: ``prepare_config`` fills the
defaults (``validate_config`` alone fails on fields only the defaults add), then
``validate_config`` checks them against Ray's schema. Plus what a user relies on: the GPU
worker type has GPUs, the CPU types leave the head free, every node gets the project (one pip
resolver pass) and the cluster's auth token, and the entry point `ray submit` runs exists."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("ray")


def prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / name).read_text()))
    validate_config(config)
    return config


def pip_installs(commands: list[str]) -> list[str]:
    return [part for c in commands for part in c.split("&&") if "pip install" in part]


def test_cloud_config_loads_with_cpu_and_gpu_workers():
    config = prepared("ray_cluster.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["resources"].get("GPU", 0) >= 1 and types["gpu_worker"]["min_workers"] >= 1
    assert types["cpu_worker"]["resources"].get("CPU", 0) > 0 and not types["cpu_worker"]["resources"].get("GPU")
    # The project in one resolver pass, the cluster's token on every node.
    assert len(pip_installs(config["setup_commands"])) == 1 and "-e ." in pip_installs(config["setup_commands"])[0]
    assert any(k.endswith(".ray/auth_token") for k in config["file_mounts"])
    assert ".venv" in config["rsync_exclude"]
    assert (REPO / "pipeline" / "ray_entry.py").is_file()


def test_on_prem_config_loads_with_its_machines():
    config = prepared("ray_cluster.onprem.yaml")
    assert config["provider"]["type"] == "local"
    # Ray's local provider: one node type, as many workers as worker_ips.
    (node_type,) = config["available_node_types"].values()
    assert node_type["max_workers"] == len(config["provider"]["worker_ips"]) == 2
    assert len(pip_installs(config["setup_commands"])) == 1
    assert any(k.endswith(".ray/auth_token") for k in config["file_mounts"])


def test_a_misspelt_field_is_refused():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = bad["available_node_types"]["gpu_worker"].pop(
        "min_workers"
    )
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(bad))
