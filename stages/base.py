"""What every stage declares, so pipeline/ can map it onto Ray without the stage knowing Ray.

A stage is a plain class: ``__init__`` takes its settings as plain values (no config objects
from pipeline/), ``setup()`` loads models once per worker, ``describe()`` says which backend
and weights it uses (recorded in ``runs.models_json``), and its processing method works on one
item (or one batch of ``resources.batch_size`` items).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class StageError(Exception):
    """A failure of one input in one stage: recorded in ``errors``, the build goes on."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class WeightsMissing(Exception):
    """A heavyweight backend was chosen but its weights are not on disk: a configuration error."""


class Stage(Protocol):
    name: str
    resources: Resources

    def setup(self) -> None: ...

    def describe(self) -> dict: ...
