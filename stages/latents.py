"""VAE latents of the crops (SD1.5 AutoencoderKL through diffusers), offline only.

Stored per frame: the posterior mean times the VAE's scaling factor (minus its shift factor
first, for VAEs that have one), as (4, H/8, W/8) float16. The mean, not a sample, so the
stored value is deterministic; the trainer may add its own noise.

Weights (``weights``) may be:
- a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), or a full
  pipeline folder holding such a ``vae/`` subfolder;
- a single ``.safetensors`` file, with ``config_dir``: a folder holding the diffusers
  ``config.json`` or an LDM ``.yaml`` (``v1-inference.yaml``), because diffusers would
  otherwise look the config up on the Hub;
- a Hugging Face repo id, resolved only from the local cache (never downloaded).
Only safetensors are read (no pickle). Random weights only with ``allow_random_weights``
(SD1.5 architecture, or the ``config_dir`` config), and ``describe()`` then says so.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from manifests.shards import sha256_of

from .base import WEIGHT_SUFFIXES, Resources, Settings, WeightsMissing, resolve_device

STAGE = "latents"
log = logging.getLogger(__name__)

# The Stable Diffusion 1.5 VAE architecture (diffusers names); used for random weights only.
SD15_VAE_CONFIG = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
_SETTING = "features.latents.weights"
_CONFIG_SETTING = "features.latents.config_dir"
_DTYPES = ("float16", "bfloat16", "float32")


class LatentsConfig(Settings):
    """The ``features.latents:`` section of the build config."""

    backend: Literal["auto", "none", "diffusers"] = Field(
        "auto", description="auto: diffusers when weights are given, else none"
    )
    weights: str | None = Field(
        None, description="SD1.5 VAE: diffusers folder, .safetensors file, or a repo id in the local HF cache"
    )
    config_dir: str | None = Field(
        None, description="config for a single .safetensors file (folder with config.json, or LDM .yaml)"
    )
    hf_cache_dir: str | None = None
    device: str = "auto"
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    batch_size: int = Field(8, ge=1)
    allow_random_weights: bool = Field(
        False, description="random VAE weights (tests, benchmarks); recorded in the catalog"
    )


class LatentStage:
    name = STAGE

    def __init__(
        self,
        backend: str = "none",
        weights: str | None = None,
        config_dir: str | None = None,
        device: str = "auto",
        dtype: str = "float16",
        allow_random_weights: bool = False,
        batch_size: int = 8,
        hf_cache_dir: str | None = None,
    ):
        if backend not in ("none", "diffusers"):
            raise ValueError(f"features.latents.backend must be 'none' or 'diffusers', got {backend!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"features.latents.dtype must be one of {_DTYPES}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"features.latents.batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.weights = None if weights in (None, "") else str(weights)
        self.config_dir = None if config_dir in (None, "") else str(config_dir)
        self.device = device
        self.dtype = dtype
        self.allow_random_weights = allow_random_weights
        self.batch_size = batch_size
        self.hf_cache_dir = hf_cache_dir
        self.vae = None
        self._files: dict[str, str] = {}  # weights file -> sha256
        self._source = None  # what was loaded, for describe()
        self._compute_dtype = None
        self._device = None
        # A GPU stage wherever the cluster has GPUs; ``device`` picks the torch device inside
        # its actor (read there, not here: the driver may have no GPU).
        self.resources = Resources(num_cpus=1.0, num_gpus=1.0 if backend == "diffusers" else 0.0)

    # ---- from the build config -----------------------------------------------------------
    @staticmethod
    def chosen_backend(settings: LatentsConfig) -> str:
        """'auto': diffusers when weights are given, else none."""
        if settings.backend == "auto":
            return "diffusers" if settings.weights else "none"
        return settings.backend

    @classmethod
    def from_settings(cls, settings: LatentsConfig) -> LatentStage:
        return cls(backend=cls.chosen_backend(settings), weights=settings.weights, config_dir=settings.config_dir,
                   device=settings.device, dtype=settings.dtype, allow_random_weights=settings.allow_random_weights,
                   batch_size=settings.batch_size, hf_cache_dir=settings.hf_cache_dir)

    @classmethod
    def resources_for(cls, settings: LatentsConfig) -> Resources:
        return Resources(num_cpus=1.0, num_gpus=1.0 if cls.chosen_backend(settings) == "diffusers" else 0.0)

    @staticmethod
    def weight_files(settings: LatentsConfig) -> dict[str, str]:
        """The weights and config paths given (a repo id of the local HF cache is not a path)."""
        out = {}
        w = settings.weights
        if w and (w.startswith(("/", ".", "~")) or Path(w).suffix in WEIGHT_SUFFIXES or Path(w).exists()):
            out[_SETTING] = w
        if settings.config_dir:
            out[_CONFIG_SETTING] = settings.config_dir
        return out

    # ---- loading -------------------------------------------------------------------------
    def setup(self) -> None:
        if self.backend == "none" or self.vae is not None:
            return
        import torch

        self._device = resolve_device(self.device)
        kind, path = self._locate()
        if kind == "random":
            vae = self._random_vae()
        elif kind == "folder":
            vae = self._load_folder(path)
        else:
            vae = self._load_single_file(path)
        # Upcast where the VAE says fp16 is unsafe, and always on CPU (no fast fp16 kernels).
        want = getattr(torch, self.dtype)
        if self._device == "cpu" or (want == torch.float16 and vae.config.get("force_upcast", False)):
            want = torch.float32
        self._compute_dtype = want
        vae = vae.to(self._device)
        if want != torch.float32:  # loaded in float32; cast only when asked (diffusers warns otherwise)
            vae = vae.to(dtype=want)
        self.vae = vae.eval()

    def _random_vae(self):
        from diffusers import AutoencoderKL

        if not self.allow_random_weights:
            raise _weights_not_set()
        import torch

        config = dict(SD15_VAE_CONFIG)
        if self.config_dir is not None:
            config = AutoencoderKL.load_config(self._config_folder())
        torch.manual_seed(0)
        self._source = "random"
        log.warning("latents: RANDOM VAE weights (explicitly requested); latents are meaningless")
        return AutoencoderKL.from_config(config)

    def _config_folder(self) -> str:
        p = Path(self.config_dir)
        if not (p / "config.json").is_file():
            raise WeightsMissing(f"{_CONFIG_SETTING}: no config.json in {p}")
        return str(p)

    def _locate(self) -> tuple[str, Path | None]:
        """What setup() will load, checked without loading anything (describe() runs in the
        driver): ('random', None), ('folder', a diffusers VAE folder) or ('single', a
        .safetensors file whose config ``config_dir`` gives). WeightsMissing: one clear line."""
        if self.weights is None:
            if not self.allow_random_weights:
                raise _weights_not_set()
            if self.config_dir is not None:
                self._config_folder()
            return "random", None
        weights = self.weights
        path = Path(weights).expanduser()
        if path.is_dir():
            return "folder", self._vae_folder(path)
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise WeightsMissing(f"{_SETTING}: file not found: {path}")
            self._single_file_config()
            return "single", path
        if path.suffix in (".ckpt", ".bin", ".pt", ".pth"):
            raise WeightsMissing(
                f"{_SETTING}: {path.name} is a pickle checkpoint; convert it to .safetensors"
            )
        if "/" in weights and not path.exists() and not weights.startswith(("/", ".", "~")):
            return "folder", self._vae_folder(self._from_hf_cache(weights))
        raise WeightsMissing(
            f"{_SETTING}: not found: {weights} (expected a folder, a .safetensors file or a cached repo id)"
        )

    def _from_hf_cache(self, repo_id: str) -> Path:
        import huggingface_hub as hub

        try:  # the local cache only: never a download
            return Path(hub.snapshot_download(repo_id, cache_dir=self.hf_cache_dir, local_files_only=True))
        except Exception:  # the hub raises several types for "not cached"; all mean the same here
            raise WeightsMissing(
                f"{_SETTING}: {repo_id!r} is neither an existing path nor a repo id in the local "
                "Hugging Face cache (downloads are disabled)"
            ) from None

    @staticmethod
    def _vae_folder(folder: Path) -> Path:
        """The diffusers VAE folder (a whole pipeline folder's ``vae/``), checked."""
        if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
            folder = folder / "vae"  # a whole pipeline folder
        if not (folder / "config.json").is_file():
            raise WeightsMissing(f"{_SETTING}: {folder} has no diffusers config.json")
        if not _folder_weights(folder):
            raise WeightsMissing(f"{_SETTING}: {folder} has no .safetensors weights (pickle files are not read)")
        return folder

    def _single_file_config(self) -> dict:
        """Keyword arguments telling diffusers the config of a single .safetensors file, checked."""
        if self.config_dir is None:
            raise WeightsMissing(
                f"{_CONFIG_SETTING} is required with a single .safetensors file (a folder with the "
                "diffusers config.json, or an LDM .yaml), since the Hub cannot be asked"
            )
        cfg = Path(self.config_dir)
        if cfg.suffix in (".yaml", ".yml") and cfg.is_file():
            return {"original_config": str(cfg)}
        return {"config": self._config_folder()}

    def _vae_config(self, kind: str, path: Path | None) -> dict:
        """The VAE's diffusers config as the files say, read without loading the model (an LDM
        .yaml gives only its scale factor)."""
        if kind == "folder":
            return json.loads((path / "config.json").read_text())
        if self.config_dir is None:
            return dict(SD15_VAE_CONFIG)
        cfg = Path(self.config_dir)
        if kind == "single" and cfg.suffix in (".yaml", ".yml") and cfg.is_file():
            import yaml

            params = ((yaml.safe_load(cfg.read_text()) or {}).get("model") or {}).get("params") or {}
            return {"scaling_factor": params["scale_factor"]} if "scale_factor" in params else {}
        return json.loads((Path(self._config_folder()) / "config.json").read_text())

    def _load_folder(self, folder: Path):
        from diffusers import AutoencoderKL

        self._files = {str(f): sha256_of(f) for f in _folder_weights(folder)}
        self._source = str(folder)
        return AutoencoderKL.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)

    def _load_single_file(self, path: Path):
        from diffusers import AutoencoderKL

        kwargs = self._single_file_config()
        self._files = {str(path): sha256_of(path)}
        self._source = str(path)
        return AutoencoderKL.from_single_file(str(path), local_files_only=True, **kwargs)

    # ---- processing ----------------------------------------------------------------------
    @property
    def scaling_factor(self) -> float | None:
        return None if self.vae is None else float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        shift = None if self.vae is None else self.vae.config.get("shift_factor")
        return 0.0 if shift is None else float(shift)

    def encode(self, crops: list[np.ndarray]) -> list[np.ndarray | None]:
        """RGB uint8 crops (H, W, 3), H and W multiples of 8 -> (4, H/8, W/8) float16 each.

        With backend 'none' every latent is None (``describe()`` says why).
        """
        if self.backend == "none":
            return [None] * len(crops)
        if not crops:
            return []
        self.setup()
        import torch

        shape = crops[0].shape
        for c in crops:
            if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3 or c.shape != shape:
                raise ValueError(f"latents: expected same-size RGB uint8 crops, got {c.shape} {c.dtype}")
        if shape[0] % 8 or shape[1] % 8:
            raise ValueError(f"latents: crop size {shape[:2]} is not a multiple of 8")
        out: list[np.ndarray] = []
        for i in range(0, len(crops), self.batch_size):
            batch = np.stack(crops[i : i + self.batch_size])
            x = torch.from_numpy(batch).to(self._device).permute(0, 3, 1, 2)
            x = x.to(self._compute_dtype) / 127.5 - 1.0
            with torch.inference_mode():
                mean = self.vae.encode(x).latent_dist.mean
            z = (mean.float() - self.shift_factor) * self.scaling_factor
            out.extend(z.cpu().numpy().astype(np.float16))
        return out

    def decode(self, latents) -> list[np.ndarray]:
        """Stored latents (4, h, w) -> RGB uint8 images (8h, 8w, 3), for previews."""
        if self.backend == "none":
            raise ValueError("latents: backend is 'none', nothing to decode")
        self.setup()
        import torch

        z_all = np.stack([np.asarray(z, dtype=np.float32) for z in latents])
        images: list[np.ndarray] = []
        for i in range(0, len(z_all), self.batch_size):
            z = torch.from_numpy(z_all[i : i + self.batch_size]).to(self._device)
            z = z / self.scaling_factor + self.shift_factor
            with torch.inference_mode():
                x = self.vae.decode(z.to(self._compute_dtype)).sample.float()
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
            images.extend(x.cpu().numpy())
        return images

    def describe(self) -> dict:
        if self.backend == "none":
            return {
                "stage": STAGE,
                "backend": "none",
                "reason": f"no VAE weights configured ({_SETTING}); latents left empty",
                "random_weights": False,
            }
        if self.vae is not None:  # loaded (in a worker): what was loaded
            return {
                "stage": STAGE,
                "backend": "diffusers",
                "weights": self._source,
                "sha256": dict(self._files),
                "scaling_factor": self.scaling_factor,
                "shift_factor": self.shift_factor,
                "stored": "posterior_mean",
                "dtype": "float16",
                "compute_dtype": str(self._compute_dtype).replace("torch.", ""),
                "device": self._device,
                "random_weights": self._source == "random",
            }
        # The driver loads no model: what the settings and the files' configs say (the weights'
        # sha256 are recorded beside, pipeline/weights.py; the compute dtype is decided where
        # the device is known, in the worker).
        kind, path = self._locate()
        config = self._vae_config(kind, path)
        shift = config.get("shift_factor")
        return {
            "stage": STAGE,
            "backend": "diffusers",
            "weights": "random" if kind == "random" else str(path),
            "scaling_factor": None if config.get("scaling_factor") is None else float(config["scaling_factor"]),
            "shift_factor": 0.0 if shift is None else float(shift),
            "stored": "posterior_mean",
            "dtype": "float16",
            "compute_dtype_setting": self.dtype,
            "device": self.device,
            "random_weights": kind == "random",
        }


def _folder_weights(folder: Path) -> list[Path]:
    """The weights from_pretrained reads; other variants (e.g. .fp16.safetensors) only if it is absent."""
    main = folder / "diffusion_pytorch_model.safetensors"
    return [main] if main.is_file() else sorted(folder.glob("*.safetensors"))


def _weights_not_set() -> WeightsMissing:
    return WeightsMissing(
        f"{_SETTING} is not set: give a VAE folder, .safetensors file or cached repo id "
        "(or set features.latents.backend: none, or allow_random_weights for tests)"
    )
