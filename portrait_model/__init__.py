"""RealPortrait-style video DiT: model, diffusion, shard reader, trainer and sampler.

Reads the build only through ``manifests`` (catalog, schemas, tensors); never imports
``pipeline`` or ``stages``. Heavy modules are imported lazily by their users.
"""

from manifests.errors import PortraitError


class PortraitModelError(PortraitError):
    """A problem with the trainer's or sampler's input (printed as one line)."""
