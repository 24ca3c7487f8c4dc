"""Diffusion: 1000-step linear schedule, noise-prediction loss with a frame mask, DDIM sampler.

Conditional frames (``x_mask`` False) are given clean (no noise), the model modulates them
with timestep 0, and they are left out of the loss, as Open-Sora's frame mask does.
Guidance: sampling mixes the conditional and the fully unconditional prediction, so training
drops both conditions together (zeroed) for a share of samples (``p_both``), besides dropping
each alone. Samplers: our DDIM (any N <= 1000 steps) and diffusers' DDIM / DPM-Solver++
schedulers built on the same betas (``scheduler_sample``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch


class GaussianDiffusion:
    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_steps = num_steps
        self.beta_start, self.beta_end = beta_start, beta_end
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
        """Exactly ``steps`` timesteps, evenly spread (floor of i * 1000 / steps), descending."""
        if not 1 <= steps <= self.num_steps:
            raise ValueError(f"sampling steps must be in 1..{self.num_steps}, got {steps}")
        return [i * self.num_steps // steps for i in range(steps)][::-1]

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
            ab_prev = (
                self._ab(torch.full_like(t, timesteps[i + 1]), x) if i + 1 < len(timesteps) else torch.ones_like(ab)
            )
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


SCHEDULERS = ("ddim", "dpm++")


def make_scheduler(name: str, diffusion: GaussianDiffusion):
    """A diffusers scheduler on our training betas (linear 1e-4..0.02, 1000 steps, epsilon)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    betas = dict(num_train_timesteps=diffusion.num_steps, beta_start=diffusion.beta_start,
                 beta_end=diffusion.beta_end, beta_schedule="linear", prediction_type="epsilon")
    if name == "ddim":
        return DDIMScheduler(**betas, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    if name == "dpm++":
        return DPMSolverMultistepScheduler(**betas, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")


@torch.no_grad()
def scheduler_sample(
    scheduler_name: str,
    diffusion: GaussianDiffusion,
    model: Callable,
    shape: tuple[int, ...],
    reference: torch.Tensor,
    motion: torch.Tensor,
    cond_latents: torch.Tensor | None = None,
    x_mask: torch.Tensor | None = None,
    steps: int = 25,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Sampling with a diffusers scheduler; frames with ``x_mask`` False are held at ``cond_latents``."""
    sched = make_scheduler(scheduler_name, diffusion)
    sched.set_timesteps(steps, device=device)
    b, _, nt = shape[:3]
    x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device) * sched.init_noise_sigma
    if x_mask is None:
        x_mask = torch.ones(b, nt, dtype=torch.bool, device=device)
    keep = x_mask[:, None, :, None, None]
    if cond_latents is not None:
        x = torch.where(keep, x, cond_latents)
    for step in sched.timesteps:
        t = torch.full((b,), int(step), dtype=torch.long, device=device)
        eps = GaussianDiffusion._guided_eps(model, sched.scale_model_input(x, step), t, reference, motion, x_mask,
                                            guidance)
        x = sched.step(eps, step, x).prev_sample
        if cond_latents is not None:
            x = torch.where(keep, x, cond_latents)
    return x


def masked_mse(pred: torch.Tensor, target: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE (B, T), averaged over mask=True frames per sample, then over samples."""
    err = (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))
    m = x_mask.float()
    per_sample = (err * m).sum(1) / m.sum(1).clamp(min=1)
    return per_sample.mean()


def drop_conditions(
    reference: torch.Tensor, motion: torch.Tensor, p_reference: float, p_motion: float, p_both: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero, per sample and exclusively: both conditions (``p_both``: the unconditional branch
    guidance samples), the reference alone (``p_reference``) or the motion alone (``p_motion``)."""
    if min(p_reference, p_motion, p_both) < 0 or p_reference + p_motion + p_both > 1:
        raise ValueError(f"condition drop probabilities must be >= 0 and sum to <= 1, got "
                         f"{p_reference}, {p_motion}, {p_both}")
    b = reference.shape[0]
    u = torch.rand(b, generator=generator).to(reference.device)
    drop_ref = (u < p_both) | ((u >= p_both) & (u < p_both + p_reference))
    drop_mot = (u < p_both) | ((u >= p_both + p_reference) & (u < p_both + p_reference + p_motion))
    keep_ref = (~drop_ref).to(reference.dtype).view(b, *([1] * (reference.dim() - 1)))
    keep_mot = (~drop_mot).to(motion.dtype).view(b, *([1] * (motion.dim() - 1)))
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
