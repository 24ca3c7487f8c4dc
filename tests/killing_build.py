"""One Ray build in a process of its own whose curate worker is SIGKILLed every time it takes
chosen files (`python -m tests.killing_build INPUTS OUT KILL_DIR VICTIMS`, comma-separated
names; an empty VICTIMS kills nothing). Prints the build's counts as one JSON line.

A process of its own, because a Ray instance started and shut down inside pytest carries the
state of every earlier test (and a hang there stalls the whole suite); here the test can time
the build out and kill it whole.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from pipeline import build as build_mod
from stages.curate import CurateStage


class KilledOnVictim(CurateStage):
    """CurateStage whose worker process is SIGKILLed whenever it takes a victim file; each
    kill leaves a file in kill_dir naming the victim (the kills span worker processes)."""

    def __init__(self, *, kill_dir: str, victims: str, **kwargs):
        super().__init__(**kwargs)
        self.kill_dir, self.victims = Path(kill_dir), set(filter(None, victims.split(",")))

    def process(self, work):
        name = Path(work.spec.path).name
        if name in self.victims:
            (self.kill_dir / f"kill-{os.getpid()}-{name}").write_text(name)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(work)


def main(inputs: str, out: str, kill_dir: str, victims: str) -> None:
    import ray

    from pipeline.config import load_config
    from pipeline.sources import dataset_entries, discover

    # Workers cannot import this module by name in every setup: its class travels by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    real_plans = build_mod.stage_plans

    def doomed_plans(*args, **kwargs):
        plans = real_plans(*args, **kwargs)
        name, _, curate_kwargs = plans[0].steps[0]
        plans[0].steps[0] = (name, KilledOnVictim, dict(curate_kwargs, kill_dir=kill_dir, victims=victims))
        return plans

    build_mod.stage_plans = doomed_plans
    config = load_config(None, {"ray.executor": "ray", "ray.num_cpus": 2, "storage.shard_target_mb": 0.001})
    try:
        stats = build_mod.build(config, out, discover(dataset_entries(config, [inputs], [])), progress=False)
    finally:
        ray.shutdown()
    print(json.dumps({k: v for k, v in dataclasses.asdict(stats).items() if isinstance(v, int)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
