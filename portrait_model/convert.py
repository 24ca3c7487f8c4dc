"""Start from Open-Sora 1.1 STDiT2 weights: key renames, dropped text parts, folded size embeddings.

Our backbone is STDiT2-XL/2 without text cross-attention, so an Open-Sora 1.1 checkpoint
(``hpcai-tech/OpenSora-STDiT-v2-stage3``: safetensors, or a ``.pth`` read with weights_only)
loads into it as follows:

- renamed: ``blocks.i.attn.qkv`` / ``attn_temp.qkv`` -> ``qkv_proj``; everything else in the
  blocks, the patch and timestep embedders, ``t_block``, ``t_block_temp`` and the final layer's
  modulation table keep their names;
- dropped: ``y_embedder.*`` and ``blocks.i.cross_attn.*`` (no text), ``pos_embed`` and
  ``rope.freqs`` (computed, not learned);
- folded: the size, aspect-ratio, length and (without ``fps_embed``) fps embedders are MLPs of
  constants for our clips (512 px square, ``num_frames``, the training fps), so their outputs
  become ``t_spatial_offset`` / ``t_temporal_offset``; with ``fps_embed`` the fps embedder is kept;
- output: STDiT2 predicts 8 channels (noise and variance); the rows of the 4 noise channels
  of ``final_layer.linear`` are kept;
- orderings: rotary positions before the q/k norm and the x-first position table are kept as
  model config flags (``rope_before_qk_norm``, ``pos_embed_x_first``).

Then control block i is set to backbone block i (PixArt-delta copies after loading).
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch

from . import PortraitModelError
from .layers import TimestepEmbedder
from .model import RealPortraitDiT, build_model
from .presets import ModelConfig, get_preset

DROPPED_PREFIXES = ("y_embedder.", "pos_embed", "rope.", "csize_embedder.", "ar_embedder.", "fl_embedder.")


class ConvertError(PortraitModelError):
    """An Open-Sora checkpoint that cannot be loaded into the model asked for."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch checkpoint (weights only), unwrapped and unprefixed."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"no Open-Sora checkpoint at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConvertError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    for key in ("ema", "model", "state_dict", "module"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConvertError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _size_embed(state: dict, name: str, dim: int, values: list[float]) -> torch.Tensor:
    """Open-Sora's SizeEmbedder: each scalar through timestep features and an MLP, concatenated."""
    emb = TimestepEmbedder(dim)
    emb.load_state_dict({k[len(name) + 1:]: v.float() for k, v in state.items() if k.startswith(name + ".")})
    with torch.no_grad():
        return emb(torch.tensor(values, dtype=torch.float32)).flatten()


def opensora_config(state: dict, preset: str = "paper", fps_embed: bool = False, **overrides) -> ModelConfig:
    """The preset, checked against the checkpoint's shapes, with Open-Sora's orderings."""
    cfg = get_preset(preset, **overrides)
    if "x_embedder.proj.weight" not in state:
        raise ConvertError("not an Open-Sora STDiT2 checkpoint: no x_embedder.proj.weight")
    hidden, in_ch = state["x_embedder.proj.weight"].shape[:2]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    if (hidden, in_ch, depth) != (cfg.hidden, cfg.in_channels, cfg.depth):
        raise ConvertError(f"checkpoint is hidden {hidden}, {in_ch} channels, {depth} blocks; preset {preset!r} is "
                           f"hidden {cfg.hidden}, {cfg.in_channels} channels, {cfg.depth} blocks")
    qk_norm = "blocks.0.attn.q_norm.weight" in state
    if qk_norm != cfg.qk_norm:
        raise ConvertError(f"checkpoint {'has' if qk_norm else 'has no'} q/k norm, preset {preset!r} "
                           f"{'has' if cfg.qk_norm else 'has none'}")
    return replace(cfg, rope_before_qk_norm=True, pos_embed_x_first=True, fps_embed=fps_embed)


def convert_state(state: dict, cfg: ModelConfig, fps: float, size_px: int | None = None) -> dict[str, torch.Tensor]:
    """Backbone state dict of our model (no control blocks, no motion mapper) from Open-Sora's."""
    d = cfg.hidden
    size_px = size_px or 8 * cfg.latent_size
    out: dict[str, torch.Tensor] = {}
    used = set()
    for key, value in state.items():
        if key.startswith(DROPPED_PREFIXES) or ".cross_attn." in key:
            used.add(key)
            continue
        if key.startswith("fps_embedder."):
            if cfg.fps_embed:
                out[key] = value
            used.add(key)
            continue
        new = key.replace(".attn.qkv.", ".attn.qkv_proj.").replace(".attn_temp.qkv.", ".attn_temp.qkv_proj.")
        if key.startswith("final_layer.linear."):
            # Rows are ordered (patch position, output channel): keep the noise channels.
            c_out = value.shape[0] // (cfg.patch[0] * cfg.patch[1] * cfg.patch[2])
            value = value.unflatten(0, (-1, c_out))[:, : cfg.in_channels].flatten(0, 1)
        out[new] = value
        used.add(key)
    data_info = torch.cat([_size_embed(state, "csize_embedder", d // 3, [size_px, size_px]),
                           _size_embed(state, "ar_embedder", d // 3, [1.0])])
    temporal = _size_embed(state, "fl_embedder", d, [cfg.num_frames])
    if not cfg.fps_embed:
        temporal = temporal + _size_embed(state, "fps_embedder", d, [fps])
    out["t_spatial_offset"], out["t_temporal_offset"] = data_info, temporal
    return {k: v.float().contiguous() for k, v in out.items()}


def load_opensora(model: RealPortraitDiT, path: str | Path, fps: float) -> dict:
    """Load an Open-Sora 1.1 checkpoint into ``model``'s backbone, then copy blocks into the
    ControlNet. Returns a short report (source sha256, dropped key count)."""
    state = read_state_dict(path)
    backbone = convert_state(state, model.cfg, fps)
    ours = model.state_dict()
    wanted = {k for k in ours if not k.startswith(("control_blocks.", "motion_mapper."))}
    missing = sorted(wanted - set(backbone))
    unknown = sorted(set(backbone) - wanted)
    if missing or unknown:
        raise ConvertError(f"{path}: {len(missing)} backbone weights missing (e.g. {missing[:2]}), "
                           f"{len(unknown)} unknown (e.g. {unknown[:2]})")
    for k, v in backbone.items():
        if v.shape != ours[k].shape:
            raise ConvertError(f"{path}: {k} has shape {tuple(v.shape)}, the model needs {tuple(ours[k].shape)}")
    model.load_state_dict(backbone, strict=False)
    model.copy_backbone_to_control()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return {"source": str(path), "sha256": h.hexdigest(), "fps": fps,
            "dropped_keys": len(state) - sum(1 for k in state if not k.startswith(DROPPED_PREFIXES)
                                             and ".cross_attn." not in k)}


def convert_weights(src: str | Path, out: str | Path, preset: str = "paper", fps: float = 12.5,
                    fps_embed: bool = False, **overrides) -> Path:
    """Write a checkpoint of our model (model = EMA = converted weights) for ``--init-from``."""
    cfg = opensora_config(read_state_dict(src), preset, fps_embed, **overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    report = load_opensora(model, src, fps)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tmp = out.with_suffix(".tmp")
    torch.save({"model": state, "ema": state, "model_config": cfg.to_dict(), "stage": 0, "step": 0,
                "converted_from": report}, tmp)
    tmp.replace(out)
    return out
