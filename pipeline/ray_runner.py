"""Map plain stages onto Ray Data: each model stage becomes an actor pool sized by its resources.

Stages know nothing of Ray. Here each stage is wrapped in a callable class (Ray builds one per
actor, so models load once per worker), given the CPUs/GPUs and batch size the stage declares,
and chained into one streaming Dataset. The driver consumes finished sources as they arrive.
An exception that escapes a stage becomes an error row for that source, never a failed build.
"""
from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator

from .results import PARTS, pack_tables, spec_from_json, to_tables, unpack

log = logging.getLogger(__name__)

# Quiet the C++ logging of mediapipe/TFLite in workers (must be set before they import it).
WORKER_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}


@dataclass
class StagePlan:
    """One Ray operator: the stages its actors run, in order, and the resources of one actor.

    Stages that need the same kind of device share an operator (one actor runs them one after
    the other on a source), so a CPU-only build has a single pool that scales with the CPUs and
    nothing is serialised between its stages; a GPU stage gets its own pool, one actor per GPU.
    """

    name: str
    steps: list[tuple[str, Callable, dict]]  # (stage name, factory, constructor kwargs)
    num_cpus: float
    num_gpus: float
    max_workers: int


class ChainUDF:
    """Per actor: builds the plan's stages once; per source: runs them in order.

    The first stage of the first operator turns a source spec (JSON) into the source's tables
    (``process(spec)``); every other stage maps tables to tables (``process_packed``). An
    exception escaping a stage costs that source (an error row), never the build.
    """

    def __init__(self, steps: list[tuple[str, Callable, dict]]):
        os.environ.update(WORKER_ENV)
        self.steps = [(name, factory(**kwargs)) for name, factory, kwargs in steps]
        for _, stage in self.steps:
            stage.setup()

    def __call__(self, batch: dict) -> dict:
        out = {k: [] for k in ("source_id", *PARTS)}
        specs = batch.get("spec")
        n = len(specs) if specs is not None else len(batch["source_id"])
        for i in range(n):
            if specs is not None:
                sid, tables, rest = self._source(specs[i])
            else:
                sid, tables, rest = batch["source_id"][i], unpack({k: batch[k][i] for k in PARTS}), self.steps
            for name, stage in rest:
                tables = self._packed(name, stage, sid, tables)
            packed = pack_tables(sid, tables)
            for k in out:
                out[k].append(packed[k])
        return out

    def _source(self, spec_json: str):
        name, stage = self.steps[0]
        spec = spec_from_json(spec_json)
        try:
            res = stage.process(spec)
            tables = to_tables(res.source, res.clips, res.frames, res.errors)
        except Exception as e:
            log.error("%s failed on %s:\n%s", name, spec.path, traceback.format_exc())
            tables = to_tables(*internal_error(spec, name, e, stage.run_id))
        return spec.source_id, tables, self.steps[1:]

    @staticmethod
    def _packed(name: str, stage, sid: str, tables: dict) -> dict:
        from stages.features import with_error

        try:
            return stage.process_packed(tables)
        except Exception as e:
            log.error("%s failed on %s:\n%s", name, sid, traceback.format_exc())
            return with_error(tables, name, f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def internal_error(spec, stage: str, exc: Exception, run_id: str):
    from manifests.schemas import ERROR

    source = {
        "source_id": spec.source_id, "dataset": spec.dataset, "path": spec.path, "rel_path": spec.rel_path,
        "media_type": spec.media_type, "identity": spec.identity, "split": spec.split, "labels": dict(spec.labels),
        "status": ERROR, "reasons": [stage], "n_clips": 0, "n_kept": 0, "run_id": run_id,
    }
    message = f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    err = {"source_id": spec.source_id, "path": spec.path, "dataset": spec.dataset, "stage": stage,
           "message": message, "run_id": run_id}
    return source, [], [], [err]


def init_ray(address: str | None, num_cpus: int | None) -> dict:
    """Connect to a cluster (address or RAY_ADDRESS) or start a local instance; returns resources."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(logging_level=logging.WARNING, log_to_driver=False, runtime_env={"env_vars": WORKER_ENV})
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the build draws its own bar (sources and clips)
    # A block whose worker died for good (a poison input crashing the process) is dropped, not
    # fatal: the driver accounts for its sources as errors.
    ctx.max_errored_blocks = -1
    ctx.print_on_execution_start = False
    return ray.cluster_resources()


def run(spec_jsons: list[str], plans: list[StagePlan]) -> Iterator[dict]:
    """Stream packed per-source results (in completion order) through the chained stages."""
    import ray

    if not spec_jsons:
        return
    # Small blocks let sources spread over the pool; beyond ~10k blocks scheduling costs more
    # than it balances (each source still streams out on its own).
    ds = ray.data.from_items([{"spec": s} for s in spec_jsons], override_num_blocks=min(len(spec_jsons), 10_000))
    for p in plans:
        ds = ds.map_batches(
            ChainUDF,
            fn_constructor_kwargs={"steps": p.steps},
            batch_size=1,  # one source per call: stages batch frames inside a source
            batch_format="numpy",
            num_cpus=p.num_cpus,
            num_gpus=p.num_gpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, p.max_workers)),
            # A worker that crashes on a poison input is restarted a bounded number of times.
            max_restarts=2,
            max_task_retries=1,
        )
    yield from ds.iter_rows()


def run_inline(spec_jsons: list[str], plans: list[StagePlan]) -> Iterator[dict]:
    """The same chain in this process, without Ray (debugging, profiling)."""
    workers = [ChainUDF(p.steps) for p in plans]
    for s in spec_jsons:
        batch = {"spec": [s]}
        for w in workers:
            batch = w(batch)
        yield {k: v[0] for k, v in batch.items()}
