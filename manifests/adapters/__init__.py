"""Dataset adapters, by the name users give on the command line (``--dataset NAME=ROOT``)."""
from __future__ import annotations

from .base import Box, ClipSpec, DatasetAdapter, MetadataError, SourceSpec, media_type_of, stable_id
from .celeba import CelebAAdapter
from .celebvhq import CelebVHQAdapter
from .ffhq import FFHQAdapter
from .folder import FolderAdapter
from .hdtf import HDTFAdapter
from .mead import MEADAdapter
from .talkinghead1kh import TalkingHead1KHAdapter
from .vfhq import VFHQAdapter
from .vggface2 import VGGFace2Adapter
from .voxceleb2 import VoxCeleb2Adapter

ADAPTERS: dict[str, type] = {
    "ffhq": FFHQAdapter,
    "celeba": CelebAAdapter,
    "vggface2": VGGFace2Adapter,
    "celebvhq": CelebVHQAdapter,
    "hdtf": HDTFAdapter,
    "talkinghead1kh": TalkingHead1KHAdapter,
    "mead": MEADAdapter,
    "vfhq": VFHQAdapter,
    "voxceleb2": VoxCeleb2Adapter,
    "folder": FolderAdapter,
}


def make_adapter(name: str, root: str, **options) -> DatasetAdapter:
    try:
        cls = ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown dataset adapter {name!r} (known: {known})") from None
    return cls(root, **options)


__all__ = [
    "ADAPTERS", "Box", "CelebAAdapter", "CelebVHQAdapter", "ClipSpec", "DatasetAdapter", "FFHQAdapter",
    "FolderAdapter", "HDTFAdapter", "MEADAdapter", "MetadataError", "SourceSpec", "TalkingHead1KHAdapter",
    "VFHQAdapter", "VGGFace2Adapter", "VoxCeleb2Adapter", "make_adapter", "media_type_of", "stable_id",
]
