"""Diffusion: 1000-step linear schedule, noise-prediction loss with a frame mask, DDIM sampler.

Conditional frames (``x_mask`` False) are given clean (no noise), the model modulates them
with timestep 0, and they are left out of the loss, as Open-Sora's frame mask does.
Guidance: training drops the reference and/or the motion condition (zeroed) with a small
probability; sampling mixes the conditional and the fully unconditional prediction.
"""
from __future__ import annotations

from typing import Callable

import torch


class GaussianDiffusion:
    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_steps = num_steps
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod.to(t.device)[t.long()].to(torch.float32)
        return ab.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self._ab(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def noisy_input(self, x0, t, noise, x_mask):
        """Noised latents; conditional frames (mask False) stay clean."""
        keep = x_mask[:, None, :, None, None]
        return torch.where(keep, self.q_sample(x0, t, noise), x0)

    def training_loss(
        self,
        model: Callable,
        x0: torch.Tensor,
        reference: torch.Tensor,
        motion: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared noise error over the noised frames of each sample, averaged over the batch."""
        b, _, nt = x0.shape[:3]
        dev = x0.device
        if x_mask is None:
            x_mask = torch.ones(b, nt, dtype=torch.bool, device=dev)
        if t is None:
            t = torch.randint(0, self.num_steps, (b,), generator=generator, device="cpu").to(dev)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device="cpu", dtype=torch.float32).to(dev, x0.dtype)
        pred = model(self.noisy_input(x0, t, noise, x_mask), t, reference, motion, x_mask)
        return masked_mse(pred, noise, x_mask)

    def ddim_timesteps(self, steps: int) -> list[int]:
        stride = self.num_steps // steps
        return list(range(0, self.num_steps, stride))[::-1]

    @torch.no_grad()
    def ddim_sample(
        self,
        model: Callable,
        shape: tuple[int, ...],
        reference: torch.Tensor,
        motion: torch.Tensor,
        cond_latents: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        steps: int = 50,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Deterministic DDIM (eta 0). Frames with ``x_mask`` False are held at ``cond_latents``."""
        b, _, nt = shape[:3]
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        if x_mask is None:
            x_mask = torch.ones(b, nt, dtype=torch.bool, device=device)
        keep = x_mask[:, None, :, None, None]
        if cond_latents is not None:
            x = torch.where(keep, x, cond_latents)
        timesteps = self.ddim_timesteps(steps)
        for i, step in enumerate(timesteps):
            t = torch.full((b,), step, dtype=torch.long, device=device)
            eps = self._guided_eps(model, x, t, reference, motion, x_mask, guidance)
            ab = self._ab(t, x)
            ab_prev = self._ab(torch.full_like(t, timesteps[i + 1]), x) if i + 1 < len(timesteps) else torch.ones_like(ab)
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
            if cond_latents is not None:
                x = torch.where(keep, x, cond_latents)
        return x

    @staticmethod
    def _guided_eps(model, x, t, reference, motion, x_mask, guidance):
        if guidance == 1.0:
            return model(x, t, reference, motion, x_mask).float()
        both = model(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([reference, torch.zeros_like(reference)]),
            torch.cat([motion, torch.zeros_like(motion)]), torch.cat([x_mask, x_mask]),
        ).float()
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE (B, T), averaged over mask=True frames per sample, then over samples."""
    err = (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))
    m = x_mask.float()
    per_sample = (err * m).sum(1) / m.sum(1).clamp(min=1)
    return per_sample.mean()


def drop_conditions(
    reference: torch.Tensor, motion: torch.Tensor, p_reference: float, p_motion: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero each sample's reference / motion condition with the given probabilities."""
    b = reference.shape[0]
    u = torch.rand(2, b, generator=generator).to(reference.device)
    keep_ref = (u[0] >= p_reference).to(reference.dtype).view(b, *([1] * (reference.dim() - 1)))
    keep_mot = (u[1] >= p_motion).to(motion.dtype).view(b, *([1] * (motion.dim() - 1)))
    return reference * keep_ref, motion * keep_mot


def conditional_frame_mask(
    batch: int, frames: int, p_condition: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, T) bool, True = noised. With probability ``p_condition`` a sample gets a clean first
    frame, a clean last frame, or both (equally likely); otherwise every frame is noised."""
    mask = torch.ones(batch, frames, dtype=torch.bool)
    if frames < 2 or p_condition <= 0:
        return mask
    u = torch.rand(batch, generator=generator)
    kind = torch.randint(0, 3, (batch,), generator=generator)
    chosen = u < p_condition
    mask[:, 0] = ~(chosen & (kind != 1))  # head or head+tail
    mask[:, -1] = ~(chosen & (kind != 0))  # tail or head+tail
    return mask
