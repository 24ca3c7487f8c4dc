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

import logging
from pathlib import Path

import numpy as np

from manifests.shards import sha256_of

from .base import Resources, WeightsMissing, resolve_device

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

    # ---- loading -------------------------------------------------------------------------
    def setup(self) -> None:
        if self.backend == "none" or self.vae is not None:
            return
        import torch

        self._device = resolve_device(self.device)
        if self.weights is None:
            vae = self._random_vae()
        else:
            vae = self._load_weights(self.weights)
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
            raise WeightsMissing(
                f"{_SETTING} is not set: give a VAE folder, .safetensors file or cached repo id "
                "(or set features.latents.backend: none, or allow_random_weights for tests)"
            )
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

    def _load_weights(self, weights: str):
        path = Path(weights).expanduser()
        if path.is_dir():
            return self._load_folder(path)
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise WeightsMissing(f"{_SETTING}: file not found: {path}")
            return self._load_single_file(path)
        if path.suffix in (".ckpt", ".bin", ".pt", ".pth"):
            raise WeightsMissing(
                f"{_SETTING}: {path.name} is a pickle checkpoint; convert it to .safetensors"
            )
        if "/" in weights and not path.exists() and not weights.startswith(("/", ".", "~")):
            return self._load_folder(self._from_hf_cache(weights))
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

    def _load_folder(self, folder: Path):
        from diffusers import AutoencoderKL

        if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
            folder = folder / "vae"  # a whole pipeline folder
        if not (folder / "config.json").is_file():
            raise WeightsMissing(f"{_SETTING}: {folder} has no diffusers config.json")
        # The file from_pretrained reads; other variants (e.g. .fp16.safetensors) only if it is absent.
        main = folder / "diffusion_pytorch_model.safetensors"
        files = [main] if main.is_file() else sorted(folder.glob("*.safetensors"))
        if not files:
            raise WeightsMissing(f"{_SETTING}: {folder} has no .safetensors weights (pickle files are not read)")
        self._files = {str(f): sha256_of(f) for f in files}
        self._source = str(folder)
        return AutoencoderKL.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)

    def _load_single_file(self, path: Path):
        from diffusers import AutoencoderKL

        if self.config_dir is None:
            raise WeightsMissing(
                f"{_CONFIG_SETTING} is required with a single .safetensors file (a folder with the "
                "diffusers config.json, or an LDM .yaml), since the Hub cannot be asked"
            )
        cfg = Path(self.config_dir)
        if cfg.suffix in (".yaml", ".yml") and cfg.is_file():
            kwargs = {"original_config": str(cfg)}
        else:
            kwargs = {"config": self._config_folder()}
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
        self.setup()
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
