"""Launch ``train`` on a Ray cluster with Ray Train's TorchTrainer (one process per GPU).

Ray is imported only when this launcher runs. TorchTrainer sets up the process group; ``train``
sees it initialised and uses it. ``run_dir`` and ``data`` must be on storage every worker sees.
"""
from __future__ import annotations

from dataclasses import asdict

from .train import TrainConfig


def _worker_loop(config: dict) -> None:
    from .train import train

    train(TrainConfig(**config["train_config"]))


def launch_ray_train(cfg: TrainConfig, num_workers: int, use_gpu: bool | None = None, address: str | None = None,
                     cpus_per_worker: float | None = None):
    """``use_gpu`` None: GPUs when the cluster has them (and the device is not 'cpu').
    ``cpus_per_worker`` None: an even share of the cluster's CPUs, at most 4."""
    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

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
    )
    return trainer.fit()
