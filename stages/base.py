"""The one contract every stage keeps, so pipeline/ can run stages on Ray without them knowing Ray.

A stage is a plain class (:class:`Stage`):

- ``__init__`` takes its own typed settings sections (:class:`Settings` models, defined next to
  the stage that reads them; pipeline/config.py composes the build config from those same
  classes) and loads nothing, so the driver can build it cheaply.
- Class-level facts, known from the settings without building the stage:
  ``resources_for(**settings)``: what one worker of the stage needs (the planner,
  pipeline/build.py: ``stage_plans``, reads only that to group consecutive stages into actor
  pools); ``weight_files(**settings)``: {setting name: path} of every weights file the chosen
  backends will read (checked and fingerprinted by pipeline/weights.py).
- ``setup()`` loads the models, once per worker.
- ``process(work) -> work`` takes one source's :class:`SourceWork` and returns it with the
  stage's results added. A failure of the input is recorded in the work
  (:meth:`SourceWork.fail`), never raised; the runner turns anything that does escape into
  the same kind of error row (:meth:`SourceWork.fail_on`).
- ``describe()`` names its backends and weights, by model (recorded in ``runs.models_json``),
  without loading any model: the driver calls it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from manifests import records, schemas
from manifests.adapters.base import SourceSpec
from manifests.records import ClipRow, ErrorRow, FrameRow, SourceRow

from . import jpeg
from .errors import StageError, WeightsMissing

__all__ = ["Resources", "Settings", "SourceWork", "Stage", "StageError", "WeightsMissing", "internal_message",
           "resolve_device"]


class Settings(BaseModel):
    """Base of every settings section: unknown keys are errors (a typo must not silently fall
    back to a default), and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Suffixes of model weights files (pipeline/weights.py fingerprints them; a latents ``weights``
# value with one of them is a path, not a Hugging Face repo id).
WEIGHT_SUFFIXES = frozenset({".safetensors", ".pth", ".onnx", ".bin", ".ckpt", ".pt"})


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs."""

    num_cpus: float = 1.0
    # > 0: the stage runs on GPU actors wherever the cluster has GPUs (its own pool); its
    # ``device`` setting only picks the torch device inside the actor.
    num_gpus: float = 0.0


class Stage:
    """Base of every stage: see the module docstring for the contract."""

    name = "stage"
    resources = Resources()

    @classmethod
    def resources_for(cls, **settings) -> Resources:
        """What one worker needs with these settings (the constructor's keyword arguments)."""
        return cls.resources

    @classmethod
    def weight_files(cls, **settings) -> dict[str, str]:
        """{setting name: path} of the weights files these settings make the stage read ('' when
        the chosen backend needs one and none is set)."""
        return {}

    def setup(self) -> None:
        """Load models (once per worker)."""

    def describe(self) -> dict:
        """{model name: backend, weights, random_weights, ...} for each model the stage uses."""
        return {}

    def process(self, work: SourceWork) -> SourceWork:
        raise NotImplementedError


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def internal_message(exc: BaseException) -> str:
    """The one message format of an unexpected exception (a bug, or the machine failing)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"internal error: {type(exc).__name__}: {first}"


# The CPUs this worker reserved, where a runner says so (pipeline/ray_runner.py: each Ray
# actor, and an inline build as one 1-CPU actor). OpenCV and onnxruntime otherwise start a
# thread per core of the node in every process: a 1-CPU actor on a 64-core node would start 64
# and use cores reserved by others.
CPU_THREADS_ENV = "PORTRAIT_CPU_THREADS"


def use_cpu_threads(threads: int) -> None:
    """This worker may use ``threads`` CPU threads: OpenCV from now on, and the onnxruntime
    sessions made after (``onnx_session_options``)."""
    import cv2

    os.environ[CPU_THREADS_ENV] = str(threads)
    cv2.setNumThreads(threads)


@contextlib.contextmanager
def environ_held(values: dict[str, str]):
    """``values`` in ``os.environ`` for the duration of a ``with`` block, then the variables
    as they were (set, or absent)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def cpu_threads_held(threads: int):
    """``use_cpu_threads`` for the duration of a ``with`` block (an inline build in a process
    that goes on after it), then the settings from before."""
    import cv2

    before = cv2.getNumThreads()
    try:
        with environ_held({CPU_THREADS_ENV: str(threads)}):
            use_cpu_threads(threads)
            yield
    finally:
        cv2.setNumThreads(before)


def cpu_threads() -> int | None:
    """The threads a library may use in this worker; None: its own default (no build's worker)."""
    value = os.environ.get(CPU_THREADS_ENV)
    return max(1, int(value)) if value else None


def onnx_session_options():
    """onnxruntime session options holding a CPU session to this worker's threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    threads = cpu_threads()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


# Decoded crops a work keeps for the stages after the one that decoded them (a 512-px crop is
# 0.8 MB): beyond this, a crop is decoded again where it is needed, so a long video cannot
# fill the worker's memory.
_CROP_CACHE_BYTES = 768 * 2**20


@dataclass
class SourceWork:
    """One source as it goes through the stages of a build: its rows so far as typed records
    (manifests/records.py: frames' array columns as NumPy arrays), plus what only lives inside
    one actor: the spec and local media path (first operator) and decoded crops.

    Inside an actor the stages share the records, unconverted. Between operators a unit's
    works travel as one Arrow table per kind (pipeline/results.py: ``pack_works``); decoded
    crops do not travel (the JPEG bytes are the crop), so every stage sees exactly the stored
    pixels, whichever pool layout ran it."""

    source: SourceRow
    clips: list[ClipRow] = field(default_factory=list)
    frames: list[FrameRow] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    frame_attrs: dict[str, dict] = field(default_factory=dict)  # array column -> attributes (schemas.with_array_attrs)
    spec: SourceSpec | None = None
    media_path: str | None = None  # where the media are read: a local copy of a remote file, or spec.path
    # Set by the runner: where report() goes (the build's progress bar).
    progress: Callable[[float, float | None, str], None] | None = field(default=None, repr=False)
    _crops: dict = field(default_factory=dict, repr=False)
    _crop_bytes: int = field(default=0, repr=False)

    @classmethod
    def start(cls, spec: SourceSpec, run_id: str, media_path: str | None = None) -> SourceWork:
        source = SourceRow(
            source_id=spec.source_id, dataset=spec.dataset, path=spec.path, rel_path=spec.rel_path,
            media_type=spec.media_type, identity=spec.identity, split=spec.split, labels=dict(spec.labels),
            video_id=spec.video_id, status=schemas.PENDING, reasons=[], n_clips=0, n_kept=0, run_id=run_id,
        )
        return cls(source, spec=spec, media_path=media_path or spec.path)

    @property
    def source_id(self) -> str:
        return self.source.source_id

    @property
    def run_id(self) -> str:
        return self.source.run_id

    @property
    def failed(self) -> bool:
        return self.source.status == schemas.ERROR

    def report(self, done: float, total: float | None = None, unit: str = "s") -> None:
        """How far a stage has got through this source (seconds of video, or frames): shown
        on the build's progress bar while a long source is worked on. Cheap: call it often."""
        if self.progress is not None:
            self.progress(done, total, unit)

    # -- errors as data: the one place error rows are made --------------------------------
    def fail(self, stage: str, message: str, kind: str | None = None) -> SourceWork:
        """The source failed in ``stage``: an error row, status 'error', and its clips and
        frames dropped, so nothing half-computed is ever stored as kept. ``kind``: 'infra'
        when the machine, not the input, failed (retried by the next build); None: 'data'."""
        s = self.source
        self.errors.append(ErrorRow(source_id=s.source_id, path=s.path, dataset=s.dataset, stage=stage,
                                    message=message, run_id=s.run_id, kind=kind))
        s.status, s.reasons, s.n_clips, s.n_kept = schemas.ERROR, sorted({e.stage for e in self.errors}), 0, 0
        self.clips, self.frames = [], []
        self._crops, self._crop_bytes = {}, 0
        return self

    def fail_on(self, stage: str, exc: BaseException) -> SourceWork:
        """An exception escaped ``stage``: a bug in it, or the machine ran out of memory."""
        return self.fail(stage, internal_message(exc), kind=schemas.INFRA if isinstance(exc, MemoryError) else None)

    # -- decoded crops, shared by the stages of one actor ---------------------------------
    def crop(self, row: FrameRow) -> np.ndarray:
        """A frame row's crop as RGB, JPEG-decoded at most once while memory allows."""
        key = (row.clip_id, row.view, row.frame_index)
        img = self._crops.get(key)
        if img is None:
            img = jpeg.decode_jpeg(row.jpeg)  # looked up per call: tests count the decodes
            if self._crop_bytes + img.nbytes <= _CROP_CACHE_BYTES:
                self._crops[key] = img
                self._crop_bytes += img.nbytes
        return img

    def frames_by_clip(self) -> dict[str, list[FrameRow]]:
        """The frame rows of each clip, by view then frame_index (a clip's frames first, in time
        order, then an image's augmented views)."""
        by_clip: dict[str, list[FrameRow]] = {}
        for row in self.frames:
            by_clip.setdefault(row.clip_id, []).append(row)
        for rows in by_clip.values():
            rows.sort(key=lambda r: (r.view, r.frame_index))
        return by_clip

    def release_frames(self) -> None:
        """The frames are written: drop them and their decoded crops (the rows stay)."""
        self.frames, self._crops, self._crop_bytes = [], {}, 0

    # -- to the shard writer: the one place a source's frames become Arrow ------------------
    def frames_table(self) -> pa.Table:
        return records.to_table(self.frames, FrameRow, self.frame_attrs)
