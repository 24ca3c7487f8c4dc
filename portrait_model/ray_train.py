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


def launch_ray_train(cfg: TrainConfig, num_workers: int, use_gpu: bool = True, address: str | None = None,
                     cpus_per_worker: float = 4.0):
    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(address=address)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"train_config": asdict(cfg)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
    )
    return trainer.fit()
