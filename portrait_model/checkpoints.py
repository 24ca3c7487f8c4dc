"""Checkpoints: what they hold, reading them (weights only), background writing with history,
and the EMA-only export for sampling.

A training checkpoint holds model, EMA, optimizer, step, EMA step, stage, RNG states, reader
position, model config, train config and the clips' fps. ``CheckpointWriter`` snapshots it to
CPU and writes it in a thread as ``checkpoint-<step>.pt`` (keeping the last few), then points
``checkpoint-last.pt`` at it; a failed write surfaces as one line at the next save or at the end.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import torch

from . import PortraitModelError
from .model import RealPortraitDiT, build_model
from .presets import ModelConfig

CHECKPOINT = "checkpoint-last.pt"


class CheckpointError(PortraitModelError):
    """A checkpoint that cannot be used as asked."""


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None


def model_from_checkpoint(
    path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"
) -> RealPortraitDiT:
    """The model of a training checkpoint or of an EMA-only export (``export_ema``)."""
    ckpt = load_checkpoint(path)
    key = "ema" if use_ema else "model"
    if key not in ckpt:
        raise CheckpointError(f"{path} holds no {key!r} weights (an EMA-only export has only 'ema')")
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict({k: v.float() for k, v in ckpt[key].items()})
    return model.to(device).eval()


def export_ema(checkpoint: str | Path, out: str | Path, dtype: str = "bfloat16") -> Path:
    """An EMA-only file for sampling: EMA weights (bf16 by default), model config, stage, step, fps."""
    ckpt = load_checkpoint(checkpoint)
    if "ema" not in ckpt:
        raise CheckpointError(f"{checkpoint} holds no EMA weights")
    cast = getattr(torch, dtype)
    payload = {"ema": {k: v.to(cast) if v.is_floating_point() else v for k, v in ckpt["ema"].items()}}
    payload.update({k: ckpt[k] for k in ("model_config", "stage", "step", "train_config", "train_fps") if k in ckpt})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(out, payload)
    return out


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _cpu_copy(state):
    """A snapshot that training may not change while it is written (tensors cloned to CPU)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(v) for v in state)
    return state


class CheckpointWriter:
    """Writes checkpoints in a background thread (training goes on), one at a time.

    Each save writes ``checkpoint-<step>.pt`` (kept: the last ``keep``), then points
    ``checkpoint-last.pt`` at it (a hard link, or a copy where links are not allowed).
    A failed write is raised at the next save or at ``close``: a run never ends as a success
    with its last checkpoint missing."""

    def __init__(self, run_dir: Path, keep: int):
        self.run_dir, self.keep = run_dir, max(1, keep)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, step: int, payload: dict) -> Path:
        self.wait()
        path = self.run_dir / f"checkpoint-{step:08d}.pt"
        self._thread = threading.Thread(target=self._write, args=(path, payload), daemon=True)
        self._thread.start()
        return self.run_dir / CHECKPOINT

    def _write(self, path: Path, payload: dict) -> None:
        try:
            _save(path, payload)
            last = self.run_dir / CHECKPOINT
            tmp = last.with_name(last.name + ".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)
            os.replace(tmp, last)
            for old in sorted(self.run_dir.glob("checkpoint-[0-9]*.pt"))[: -self.keep]:
                old.unlink(missing_ok=True)
        except BaseException as e:  # noqa: BLE001 - re-raised in the training thread
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint in {self.run_dir} failed: {str(err).splitlines()[0]}")

    close = wait
