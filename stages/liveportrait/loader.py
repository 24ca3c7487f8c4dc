"""Load LivePortrait's released F, M and W checkpoints into our modules, by key and shape.

Files (as released under ``pretrained_weights/liveportrait/base_models/``):
``appearance_feature_extractor.pth``, ``motion_extractor.pth``, ``warping_module.pth``: plain
state dicts, read with ``torch.load(weights_only=True)`` and loaded with ``strict=True``. The
folder given may be that ``base_models`` folder itself or any parent of it down that path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from manifests.shards import sha256_of

from ..base import WeightsMissing
from .appearance_feature_extractor import AppearanceFeatureExtractor
from .motion_extractor import MotionExtractor
from .warping_module import WarpingNetwork

SETTING = "features.position_map.weights_dir"
FILES = {
    "appearance_feature_extractor": "appearance_feature_extractor.pth",
    "motion_extractor": "motion_extractor.pth",
    "warping_module": "warping_module.pth",
}
_SUBFOLDERS = ("", "base_models", "liveportrait/base_models", "pretrained_weights/liveportrait/base_models")


class IncompatibleWeights(WeightsMissing):
    """A checkpoint is there but is not LivePortrait's (wrong keys or shapes, not a state dict)."""


@dataclass
class LivePortraitModels:
    appearance_feature_extractor: AppearanceFeatureExtractor
    motion_extractor: MotionExtractor
    warping_module: WarpingNetwork
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 (empty for random weights)
    random_weights: bool = False

    def to(self, device) -> LivePortraitModels:
        for m in self.modules():
            m.to(device)
        return self

    def modules(self) -> list[nn.Module]:
        return [self.appearance_feature_extractor, self.motion_extractor, self.warping_module]


def build_modules() -> dict[str, nn.Module]:
    """The three networks at LivePortrait's released configuration (``models.yaml``)."""
    return {
        "appearance_feature_extractor": AppearanceFeatureExtractor(),
        "motion_extractor": MotionExtractor(num_kp=21, num_bins=66),
        "warping_module": WarpingNetwork(num_kp=21),
    }


def find_weights_folder(weights_dir: str | Path | None) -> Path:
    if weights_dir in (None, ""):
        raise WeightsMissing(
            f"{SETTING} is not set: give the folder holding LivePortrait's {', '.join(FILES.values())} "
            "(or use features.position_map.backend: mesh)"
        )
    root = Path(weights_dir).expanduser()
    for sub in _SUBFOLDERS:
        folder = root / sub
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    missing = [name for name in FILES.values() if not (root / name).is_file()]
    raise WeightsMissing(f"{SETTING}={root}: missing {', '.join(missing)} (LivePortrait base_models)")


def load_liveportrait(weights_dir: str | Path | None, device: str = "cpu") -> LivePortraitModels:
    folder = find_weights_folder(weights_dir)
    modules = build_modules()
    files = {}
    for name, module in modules.items():
        path = folder / FILES[name]
        state = _read_state_dict(path)
        _check_matches(module, state, path)
        module.load_state_dict(state, strict=True)
        module.eval()
        files[str(path)] = sha256_of(path)
    models = LivePortraitModels(**modules, files=files)
    return models.to(device)


def random_liveportrait(seed: int = 0, device: str = "cpu") -> LivePortraitModels:
    """Randomly initialised networks (tests, dry runs only): the maps are meaningless."""
    torch.manual_seed(seed)
    models = LivePortraitModels(**build_modules(), random_weights=True)
    for m in models.modules():
        m.eval()
    return models.to(device)


def _read_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file ...
        raise IncompatibleWeights(f"{SETTING}: cannot read {path} as a state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleWeights(f"{SETTING}: {path} is not a plain state dict of tensors")
    return state


def _check_matches(module: nn.Module, state: dict, path: Path) -> None:
    """One line naming what differs, instead of load_state_dict's multi-line report."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k!r} {tuple(state[k].shape)} vs {tuple(want[k].shape)})")
    raise IncompatibleWeights(f"{SETTING}: {path.name} does not match LivePortrait's {path.stem}: " + "; ".join(parts))



