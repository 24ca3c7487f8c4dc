"""Small models saved in the real checkpoint formats, for tests (no weights are downloaded)."""
from __future__ import annotations

# Four blocks downsample 3 times: a 512 crop gives a 4x64x64 latent, as with SD1.5.
SMALL_VAE = dict(
    block_out_channels=(8, 8, 8, 8),
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=4,
    sample_size=512,
    scaling_factor=0.18215,
)


def save_small_vae(folder, seed: int = 1):
    """A small AutoencoderKL in diffusers format (config.json + safetensors) at ``folder``."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    diffusers.AutoencoderKL(**SMALL_VAE).eval().save_pretrained(folder)
    return folder
