"""Map plain stages onto Ray Data: each model stage becomes an actor pool sized by its resources.

Stages know nothing of Ray. Here the stages of each operator (grouped by the resources they
declare: pipeline/build.py, ``stage_plans``) are wrapped in a callable class (Ray builds one
per actor, so models load once per worker), given those CPUs/GPUs, and chained into one
streaming Dataset of *units* (a video, or a group of images: one row, one call per operator).
The last operator writes the unit's frames as shards on OUT (pipeline/writer.py) and yields one
small result row per unit; the driver only commits those.
An exception that escapes a stage becomes an error row for that source, never a failed build.
Media on an object store are fetched one source at a time to a local temporary file.
"""
from __future__ import annotations

import logging
import math
import os
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from manifests.adapters.base import SourceSpec
from manifests.errors import PortraitError, first_line
from manifests.schemas import INFRA
from stages.base import SourceWork, cpu_threads_held, environ_held, use_cpu_threads

from . import progress
from .results import PARTS, UnitResult, pack_works, unit_specs, unpack_works
from .writer import ShardWriter, WriterSettings

log = logging.getLogger(__name__)


class StageStartError(PortraitError):
    """A stage's models could not be loaded in a worker (its ``setup()`` failed)."""


# "stages.base.WeightsMissing: ..." as a traceback's last line names an error of ours.
_OUR_ERROR = re.compile(r"^(?:pipeline|stages|manifests|portrait_model)(?:\.\w+)+: (.+)$")

# Quiet the C++ logging of mediapipe/TFLite in workers (must be set before they import it).
WORKER_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
_STORE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass
class StagePlan:
    """One Ray operator: the stages its actors run, in order, and the resources of one actor.

    Consecutive stages that need the same kind of device share an operator (one actor runs
    them one after the other on a source, holding its decoded crops), so a CPU-only build has
    a single pool that scales with the CPUs and nothing is serialised between its stages; GPU
    stages get their own pool, one actor per GPU.
    """

    name: str
    steps: list[tuple[str, Callable, dict]]  # (stage name, factory, constructor kwargs)
    num_cpus: float
    num_gpus: float
    max_workers: int
    run_id: str = ""
    # Set by the build on the last operator: its actors write the shards.
    writer: WriterSettings | None = None
    # Set by the build: where its actors report progress inside long sources (progress.py).
    progress: object = None


class ChainUDF:
    """Per actor: builds the plan's stages once; per unit: runs them on each of its sources.

    The first operator turns each source spec (the unit's JSON) into a :class:`SourceWork`
    (fetching remote media to a local file for the time its stages read them); later operators
    unpack the works the previous one sent (one Arrow table per kind: pipeline/results.py).
    An exception escaping a stage costs that source (an error row, ``SourceWork.fail_on``),
    never the build; a failed source skips the stages after.
    With a ``writer`` (the last operator) the unit's frames are written here and only its
    metadata leaves; otherwise the unit's works go on to the next operator.
    ``hide_gpus``: an actor that reserved no GPU must not take one a GPU actor holds.
    """

    def __init__(self, steps: list[tuple[str, Callable, dict]], run_id: str, writer: WriterSettings | None = None,
                 hide_gpus: bool = False, progress=None, num_cpus: float | None = None):
        os.environ.update(WORKER_ENV)
        if hide_gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if num_cpus is not None:
            # A Ray actor uses the CPUs it reserved (run_inline holds its process to one).
            use_cpu_threads(max(1, math.ceil(num_cpus)))
        self.run_id, self.writer, self.board = run_id, writer, progress
        self.remote_board = hasattr(getattr(progress, "report", None), "remote")  # a Ray actor handle
        self.stages = [factory(**kwargs) for _, factory, kwargs in steps]
        for stage in self.stages:
            try:
                stage.setup()
            except PortraitError:
                raise
            except Exception as e:  # a model that will not load (a corrupt or foreign weights file)
                log.error("%s could not start:\n%s", stage.name, traceback.format_exc())
                raise StageStartError(f"stage {stage.name} could not start: {type(e).__name__}: {first_line(e)} "
                                      "(check its settings and weights files)") from None

    def __call__(self, batch: dict) -> dict:
        outs = []
        for i in range(len(batch["unit"])):
            unit = int(batch["unit"][i])
            if "unit_json" in batch:
                works = (self._start(s) for s in unit_specs(batch["unit_json"][i]))
            else:
                works = (self._through(w) for w in unpack_works({k: batch[k][i] for k in PARTS}))
            outs.append(self._write(unit, works) if self.writer else {"unit": unit, **pack_works(list(works))})
        return {k: [o[k] for o in outs] for k in outs[0]} if outs else {}

    def _start(self, spec: SourceSpec) -> SourceWork:
        from manifests.storage import fetched

        work = SourceWork.start(spec, self.run_id)
        try:
            with fetched(spec.path) as local:
                work.media_path = local
                return self._through(work)
        except OSError as e:  # the store, not the input, failed (stages' errors never get here)
            log.error("cannot fetch %s: %s", spec.path, e)
            return work.fail("fetch", f"cannot fetch the media: {e}", kind=INFRA)

    def _through(self, work: SourceWork) -> SourceWork:
        if self.board is not None:
            name = work.source.rel_path.rsplit("/", 1)[-1]
            work.progress = progress.reporter(self.board, work.source_id, name, self.remote_board)
        for stage in self.stages:
            if work.failed:
                break
            try:
                work = stage.process(work)
            except Exception as e:
                log.error("%s failed on %s:\n%s", stage.name, work.source.path, traceback.format_exc())
                work.fail_on(stage.name, e)
        if self.board is not None:
            progress.finished(self.board, work.source_id, self.remote_board)
            work.progress = None
        return work

    def _write(self, unit: int, works: Iterator[SourceWork]) -> dict:
        """Each source's frames go to the writer as soon as its stages are done, and leave the
        work: a unit of many sources holds at most one shard's frames in memory."""
        writer = ShardWriter(self.writer, unit)
        done: list[SourceWork] = []
        try:
            for w in works:
                done.append(w)
                writer.add(w.source_id, w.frames_table())
                w.release_frames()
            shards, failure = writer.finish(), ""
        except OSError as e:  # the build stops on it: the rest of the unit is not worth working on
            shards, failure = [], writer.failure(e)
        return {"unit": unit, **UnitResult.of(done, shards, failure).to_row()}


def init_ray(address: str | None, num_cpus: int | None) -> dict:
    """Connect to a cluster (address or RAY_ADDRESS) or start a local instance; returns resources."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
        if address:
            # Workers on other nodes reach the same object store (credentials stay with each node).
            store = {k: os.environ[k] for k in _STORE_ENV if os.environ.get(k)}
            ray.init(address=address, runtime_env={"env_vars": {**WORKER_ENV, **store}}, **kwargs)
        else:
            # "local": a new instance of our own, never a cluster someone `ray start`ed here.
            # Its processes inherit this process's environment as it is when they start, so
            # WORKER_ENV is set for that moment only, and no runtime_env: Ray then hands the
            # build the workers it pre-started (a job-wide runtime_env makes it start others
            # and discard those: ~1.2 s of every local build on 2 CPUs, bench/bench_curate.py).
            # This process gets its own environment back.
            with environ_held(WORKER_ENV):
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the build draws its own bar (sources and clips)
    # A block whose worker died for good (a poison input crashing the process) is dropped, not
    # fatal: the driver accounts for its sources as errors.
    ctx.max_errored_blocks = -1
    ctx.print_on_execution_start = False
    return ray.cluster_resources()


def progress_board(on_ray: bool):
    """A board for the build's workers to report progress on, and how the driver reads it."""
    if not on_ray:
        board = progress.ProgressBoard()
        return board, board.snapshot
    import ray

    board = ray.remote(num_cpus=0)(progress.ProgressBoard).remote()
    return board, lambda: ray.get(board.snapshot.remote(), timeout=10)


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
            fn_constructor_kwargs={"steps": p.steps, "run_id": p.run_id, "writer": p.writer,
                                   "hide_gpus": p.num_gpus == 0, "progress": p.progress, "num_cpus": p.num_cpus},
            batch_size=1,  # one unit per call: stages batch frames inside a source
            batch_format="numpy",
            num_cpus=p.num_cpus,
            num_gpus=p.num_gpus,
            # Every actor is started at once (asynchronously: a cluster short of resources does
            # not block the start), and each holds one unit at a time: a unit is a whole video,
            # so units queued behind a busy actor would leave others idle at the end.
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, p.max_workers),
                                               initial_size=max(1, min(p.max_workers, len(unit_jsons))),
                                               max_tasks_in_flight_per_actor=1),
            # A crashed actor always comes back (as Ray Data expects: an actor dead for good
            # stays counted in the pool and a pool of dead actors waits forever), while the
            # source it held is tried at most twice: a poison input costs two restarts and
            # becomes a lost source (errors.kind = 'infra'), never an endless loop.
            max_restarts=-1,
            max_task_retries=1,
        )
    try:
        yield from ds.iter_rows()
    except Exception as e:
        # A stage that cannot start fails every actor of its pool: one line, as in the driver.
        cause = _portrait_cause(e)
        if cause is None:
            raise
        raise cause from None


def _portrait_cause(e: BaseException) -> PortraitError | None:
    """The project's own error behind an exception Ray wraps: the object where Ray kept it (a
    task's error), else its line in the text (an actor whose creation failed keeps only that)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, PortraitError) and type(e).__module__.split(".")[0] != "ray":
            return e
        for line in str(e).splitlines():
            found = _OUR_ERROR.match(line.strip())
            if found:
                return StageStartError(found.group(1))
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None


def run_inline(unit_jsons: list[str], plans: list[StagePlan]) -> Iterator[dict]:
    """The same chain in this process, without Ray (debugging, profiling), as one 1-CPU actor
    runs it: OpenCV's and onnxruntime's pools of a thread per core cost more CPU than they save
    on a frame's small images (bench/bench_commits.py: 1.5 CPU s of 38 on the fixtures, and
    no slower), and the profile is then the Ray workers'."""
    with cpu_threads_held(1):
        workers = [ChainUDF(p.steps, p.run_id, p.writer, progress=p.progress) for p in plans]
        for i, u in enumerate(unit_jsons):
            batch = {"unit": [i], "unit_json": [u]}
            for w in workers:
                batch = w(batch)
            yield {k: v[0] for k, v in batch.items()}
