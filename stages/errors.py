"""The errors of stages (``stages.base`` re-exports them: import them from either).

They sit below every other module of ``stages/`` (``base`` and ``jpeg`` both raise
:class:`StageError`), so no stage module has to import another one inside a function.
"""
from __future__ import annotations

from manifests.errors import PortraitError


class StageError(PortraitError):
    """A failure of one input in one stage: recorded in ``errors``, the build goes on."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class WeightsMissing(PortraitError):
    """A heavyweight backend was chosen but its weights are not on disk: a configuration error."""
