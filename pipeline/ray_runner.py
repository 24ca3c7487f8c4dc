"""Map plain stages onto Ray Data: each model stage becomes an actor pool sized by its resources.

Stages know nothing of Ray. Here each stage is wrapped in a callable class (Ray builds one per
actor, so models load once per worker), given the CPUs/GPUs and batch size the stage declares,
and chained into one streaming Dataset of *units* (a video, or a group of images: one row, one
call per operator). The last operator writes the unit's frames as shards on OUT
(pipeline/writer.py) and yields one small result row per unit; the driver only commits those.
An exception that escapes a stage becomes an error row for that source, never a failed build.
Media on an object store are fetched one source at a time to a local temporary file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa

from .results import INFRA, UnitResult, pack_sources, spec_from_json, to_tables, unit_specs, unpack_sources
from .writer import ShardWriter, WriterSettings

log = logging.getLogger(__name__)

# Quiet the C++ logging of mediapipe/TFLite in workers (must be set before they import it).
WORKER_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
_STORE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


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
    # Set by the build on the last operator: its actors write the shards.
    writer: WriterSettings | None = None


class ChainUDF:
    """Per actor: builds the plan's stages once; per unit: runs them on each of its sources.

    The first stage of the first operator turns a source spec (JSON) into the source's tables
    (``process(spec)``); every other stage maps tables to tables (``process_packed``). An
    exception escaping a stage costs that source (an error row), never the build. With a
    ``writer`` (the last operator) the unit's frames are written here and only its metadata
    leaves; otherwise the unit's tables go on to the next operator.
    """

    def __init__(self, steps: list[tuple[str, Callable, dict]], writer: WriterSettings | None = None):
        os.environ.update(WORKER_ENV)
        self.writer = writer
        self.steps = [(name, factory(**kwargs)) for name, factory, kwargs in steps]
        for _, stage in self.steps:
            stage.setup()

    def __call__(self, batch: dict) -> dict:
        outs = []
        first = "unit_json" in batch
        for i in range(len(batch["unit"])):
            unit = int(batch["unit"][i])
            if first:
                items = [self._source(s) for s in unit_specs(batch["unit_json"][i])]
                rest = self.steps[1:]
            else:
                items, rest = unpack_sources(batch["payload"][i]), self.steps
            items = [(sid, self._through(rest, sid, tables)) for sid, tables in items]
            outs.append(self._write(unit, items) if self.writer else {"unit": unit, "payload": pack_sources(items)})
        return {k: [o[k] for o in outs] for k in outs[0]} if outs else {}

    def _through(self, steps, sid: str, tables: dict) -> dict:
        for name, stage in steps:
            tables = self._packed(name, stage, sid, tables)
        return tables

    def _write(self, unit: int, items: list[tuple[str, dict]]) -> dict:
        writer = ShardWriter(self.writer, unit)
        try:
            for sid, tables in items:
                writer.add(sid, tables["frames"])
            shards, failure = writer.finish(), ""
        except OSError as e:
            shards, failure = [], writer.failure(e)
        return {"unit": unit, **UnitResult.of(items, shards, failure).to_row()}

    def _source(self, spec_json: str):
        import contextlib

        from manifests.storage import fetched

        name, stage = self.steps[0]
        spec = spec_from_json(spec_json)
        with contextlib.ExitStack() as stack:
            try:
                local = stack.enter_context(fetched(spec.path))
            except OSError as e:  # the store, not the input, failed: the next build retries it
                log.error("cannot fetch %s: %s", spec.path, e)
                return spec.source_id, to_tables(*internal_error(spec, "fetch", e, stage.run_id, kind=INFRA))
            try:
                res = stage.process(dataclasses.replace(spec, path=local) if local != spec.path else spec)
                tables = to_tables(res.source, res.clips, res.frames, res.errors)
                if local != spec.path:  # the catalog names the media where they are, not the copy
                    tables = _with_path(tables, spec.path)
            except Exception as e:
                log.error("%s failed on %s:\n%s", name, spec.path, traceback.format_exc())
                tables = to_tables(*internal_error(spec, name, e, stage.run_id))
        return spec.source_id, tables

    @staticmethod
    def _packed(name: str, stage, sid: str, tables: dict) -> dict:
        from stages.features import with_error

        try:
            return stage.process_packed(tables)
        except Exception as e:
            log.error("%s failed on %s:\n%s", name, sid, traceback.format_exc())
            return with_error(tables, name, f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _with_path(tables: dict, path: str) -> dict:
    out = dict(tables)
    for k in ("sources", "errors"):
        t = tables[k]
        if t.num_rows:
            i = t.schema.get_field_index("path")
            out[k] = t.set_column(i, t.schema.field(i), pa.array([path] * t.num_rows, t.schema.field(i).type))
    return out


def internal_error(spec, stage: str, exc: Exception, run_id: str, kind: str | None = None):
    from manifests.schemas import ERROR

    source = {
        "source_id": spec.source_id, "dataset": spec.dataset, "path": spec.path, "rel_path": spec.rel_path,
        "media_type": spec.media_type, "identity": spec.identity, "split": spec.split, "labels": dict(spec.labels),
        "status": ERROR, "reasons": [stage], "n_clips": 0, "n_kept": 0, "run_id": run_id,
    }
    message = f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    err = {"source_id": spec.source_id, "path": spec.path, "dataset": spec.dataset, "stage": stage,
           "message": message, "run_id": run_id, "kind": kind}
    return source, [], [], [err]


def init_ray(address: str | None, num_cpus: int | None) -> dict:
    """Connect to a cluster (address or RAY_ADDRESS) or start a local instance; returns resources."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # Workers on other nodes reach the same object store (credentials stay with each node).
        store = {k: os.environ[k] for k in _STORE_ENV if os.environ.get(k)}
        kwargs = dict(logging_level=logging.WARNING, log_to_driver=False,
                      runtime_env={"env_vars": {**WORKER_ENV, **store}})
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": a new instance of our own, never a cluster someone `ray start`ed here.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the build draws its own bar (sources and clips)
    # A block whose worker died for good (a poison input crashing the process) is dropped, not
    # fatal: the driver accounts for its sources as errors.
    ctx.max_errored_blocks = -1
    ctx.print_on_execution_start = False
    return ray.cluster_resources()


def run(unit_jsons: list[str], plans: list[StagePlan]) -> Iterator[dict]:
    """Stream per-unit result rows (in completion order) through the chained stages."""
    import ray

    if not unit_jsons:
        return
    # Small blocks let units spread over the pool; beyond ~10k blocks scheduling costs more
    # than it balances (each unit still streams out on its own).
    ds = ray.data.from_items([{"unit": i, "unit_json": u} for i, u in enumerate(unit_jsons)],
                             override_num_blocks=min(len(unit_jsons), 10_000))
    for p in plans:
        ds = ds.map_batches(
            ChainUDF,
            fn_constructor_kwargs={"steps": p.steps, "writer": p.writer},
            batch_size=1,  # one unit per call: stages batch frames inside a source
            batch_format="numpy",
            num_cpus=p.num_cpus,
            num_gpus=p.num_gpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, p.max_workers)),
            # A crashed actor always comes back (as Ray Data expects: an actor dead for good
            # stays counted in the pool and a pool of dead actors waits forever), while the
            # source it held is tried at most twice: a poison input costs two restarts and
            # becomes a lost source (errors.kind = 'infra'), never an endless loop.
            max_restarts=-1,
            max_task_retries=1,
        )
    yield from ds.iter_rows()


def run_inline(unit_jsons: list[str], plans: list[StagePlan]) -> Iterator[dict]:
    """The same chain in this process, without Ray (debugging, profiling)."""
    workers = [ChainUDF(p.steps, p.writer) for p in plans]
    for i, u in enumerate(unit_jsons):
        batch = {"unit": [i], "unit_json": [u]}
        for w in workers:
            batch = w(batch)
        yield {k: v[0] for k, v in batch.items()}
