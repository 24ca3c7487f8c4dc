"""Launch ``train`` on a Ray cluster with Ray Train's TorchTrainer (one process per GPU).

Ray is imported only when this launcher runs. TorchTrainer sets up the process group; ``train``
sees it initialised and uses it. ``run_dir`` and ``data`` must be on storage every worker sees.
A worker or node that dies restarts the whole group (``FailureConfig(max_failures)``), and
``train`` resumes from ``run_dir/checkpoint-last.pt``: the step, reader position and RNG.
"""
from __future__ import annotations

from dataclasses import asdict

from . import PortraitModelError
from .train import TrainConfig


def _worker_loop(config: dict) -> None:
    from .train import train

    train(TrainConfig(**config["train_config"]))


def launch_ray_train(cfg: TrainConfig, num_workers: int, use_gpu: bool | None = None, address: str | None = None,
                     cpus_per_worker: float | None = None, max_failures: int = 3):
    """``use_gpu`` None: GPUs when the cluster has them (and the device is not 'cpu').
    ``cpus_per_worker`` None: an even share of the cluster's CPUs, at most 4."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not cfg.resume:
        # A restarted group must resume from the run's last checkpoint, not start over.
        raise PortraitModelError("--no-resume cannot be used with --ray (restarts resume from checkpoint-last.pt)")
    if not ray.is_initialized():
        ray.init(address=address)
    resources = ray.cluster_resources()
    if use_gpu is None:
        use_gpu = cfg.device != "cpu" and resources.get("GPU", 0) >= num_workers
    if cpus_per_worker is None:
        cpus_per_worker = max(1.0, min(4.0, resources.get("CPU", 1) // max(num_workers, 1)))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"train_config": asdict(cfg)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(failure_config=FailureConfig(max_failures=max_failures)),
    )
    return trainer.fit()
