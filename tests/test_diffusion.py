"""Diffusion: schedule, masked noise-prediction loss, DDIM, guidance, condition dropping."""
from __future__ import annotations

import pytest
import torch

from portrait_model.diffusion import (
    GaussianDiffusion,
    conditional_frame_mask,
    drop_conditions,
    masked_mse,
    scheduler_sample,
)

torch.set_num_threads(1)


def test_schedule_has_1000_steps_and_decreasing_signal():
    d = GaussianDiffusion()
    ab = d.alphas_cumprod
    assert len(ab) == 1000 and d.num_steps == 1000
    assert torch.all(ab[1:] < ab[:-1]) and 0.99 < ab[0] < 1 and ab[-1] < 1e-3
    x0 = torch.ones(4000, 1, 1, 1, 1)
    noise = torch.randn(4000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    xt = d.q_sample(x0, torch.full((4000,), 500), noise)
    assert abs(xt.mean().item() - ab[500].sqrt().item()) < 0.05
    assert abs(xt.std().item() - (1 - ab[500]).sqrt().item()) < 0.05


def test_conditional_frames_stay_clean_and_are_left_out_of_the_loss():
    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 5, 6, 6, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([999, 400])
    mask = torch.tensor([[False, True, True, True, False], [True] * 5])
    xt = d.noisy_input(x0, t, noise, mask)
    assert torch.equal(xt[0, :, 0], x0[0, :, 0]) and torch.equal(xt[0, :, 4], x0[0, :, 4])
    assert not torch.allclose(xt[0, :, 1], x0[0, :, 1])

    seen = {}

    def model(x, steps, ref, motion, x_mask):
        seen["x"], seen["mask"] = x, x_mask
        out = noise.clone()
        out[:, :, 0] += 100.0  # wrong only on frame 0
        return out

    ref, maps = torch.zeros(2, 4, 6, 6), torch.zeros(2, 3, 5, 8, 8)
    loss = d.training_loss(model, x0, ref, maps, mask, t=t, noise=noise)
    assert torch.equal(seen["mask"], mask) and torch.equal(seen["x"], xt)
    # Sample 0's frame 0 is conditional: its error does not count; sample 1's does.
    assert abs(loss.item() - (100.0**2 / 5) / 2) < 1e-2
    all_noised = d.training_loss(model, x0, ref, maps, torch.ones_like(mask), t=t, noise=noise)
    assert abs(all_noised.item() - 100.0**2 / 5) < 1e-2


def test_masked_mse_averages_over_noised_frames_only():
    pred = torch.zeros(1, 1, 4, 1, 1)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 4, 1, 1)
    mask = torch.tensor([[True, False, True, False]])
    assert masked_mse(pred, target, mask).item() == (1 + 9) / 2


def oracle(d: GaussianDiffusion, x0: torch.Tensor):
    """The exact noise predictor for a known clean sample."""
    def model(x, t, ref, motion, x_mask):
        ab = d.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return model


def test_ddim_takes_50_steps_and_recovers_the_clean_sample_from_an_exact_model():
    d = GaussianDiffusion()
    steps = d.ddim_timesteps(50)
    assert len(steps) == 50 and steps[0] == 980 and steps[-1] == 0
    x0 = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    calls = []

    def counted(*args):
        calls.append(1)
        return oracle(d, x0)(*args)

    out = d.ddim_sample(counted, x0.shape, torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 3, 8, 8),
                        generator=torch.Generator().manual_seed(2))
    assert len(calls) == 50
    torch.testing.assert_close(out, x0, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("n", [1, 7, 30, 50, 333, 999, 1000])
def test_ddim_returns_exactly_n_distinct_descending_steps(n):
    steps = GaussianDiffusion().ddim_timesteps(n)
    assert len(steps) == n == len(set(steps))
    assert steps == sorted(steps, reverse=True) and steps[-1] == 0 and steps[0] <= 999


def test_ddim_refuses_more_steps_than_the_schedule():
    with pytest.raises(ValueError, match="1..1000"):
        GaussianDiffusion().ddim_timesteps(1001)


@pytest.mark.parametrize("name,steps", [("ddim", 30), ("dpm++", 20)])
def test_diffusers_schedulers_recover_the_clean_sample_and_hold_conditional_frames(name, steps):
    d = GaussianDiffusion()
    x0 = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    calls = []

    def counted(*args):
        calls.append(1)
        return oracle(d, x0)(*args)

    mask = torch.tensor([[False, True, True]])
    out = scheduler_sample(name, d, counted, x0.shape, torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 3, 8, 8),
                           cond_latents=x0, x_mask=mask, steps=steps, generator=torch.Generator().manual_seed(2))
    assert len(calls) == steps
    assert torch.equal(out[:, :, 0], x0[:, :, 0])
    torch.testing.assert_close(out, x0, atol=2e-3, rtol=2e-3)


def test_ddim_holds_conditional_frames_and_passes_the_mask():
    d = GaussianDiffusion()
    cond = torch.randn(1, 4, 3, 4, 4)
    mask = torch.tensor([[False, True, True]])
    masks = []

    def model(x, t, ref, motion, x_mask):
        masks.append(x_mask.clone())
        assert torch.equal(x[:, :, 0], cond[:, :, 0])
        return torch.zeros_like(x)

    out = d.ddim_sample(model, cond.shape, torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 3, 8, 8),
                        cond_latents=cond, x_mask=mask, steps=10)
    assert torch.equal(out[:, :, 0], cond[:, :, 0])
    assert all(torch.equal(m, mask) for m in masks)


def test_guidance_mixes_conditional_and_unconditional_predictions():
    d = GaussianDiffusion()

    def model(x, t, ref, motion, x_mask):
        # "conditional" = reference present: predicts 1; unconditional (zeroed) predicts 0.
        return (ref.abs().flatten(1).sum(1) > 0).float().view(-1, 1, 1, 1, 1).expand_as(x)

    x = torch.zeros(1, 4, 2, 4, 4)
    eps = d._guided_eps(model, x, torch.tensor([10]), torch.ones(1, 4, 4, 4), torch.ones(1, 3, 2, 8, 8),
                        torch.ones(1, 2, dtype=torch.bool), guidance=3.0)
    assert torch.allclose(eps, torch.full_like(x, 3.0))


def test_condition_dropping_and_frame_masks():
    ref, maps = torch.ones(64, 4, 2, 2), torch.ones(64, 3, 1, 4, 4)
    r, m = drop_conditions(ref, maps, 1.0, 0.0)
    assert r.abs().sum() == 0 and torch.equal(m, maps)
    # Joint dropping: the unconditional branch guidance uses gets its share of samples, and
    # the three kinds of drop never overlap.
    ref, maps = torch.ones(4000, 4, 2, 2), torch.ones(4000, 3, 1, 4, 4)
    r, m = drop_conditions(ref, maps, 0.05, 0.05, 0.1, generator=torch.Generator().manual_seed(0))
    no_ref, no_mot = r.flatten(1).sum(1) == 0, m.flatten(1).sum(1) == 0
    for share, want in [((no_ref & no_mot), 0.1), ((no_ref & ~no_mot), 0.05), ((~no_ref & no_mot), 0.05)]:
        assert abs(share.float().mean().item() - want) < 0.015
    with pytest.raises(ValueError, match="sum to <= 1"):
        drop_conditions(ref, maps, 0.5, 0.4, 0.2)

    assert conditional_frame_mask(8, 16, 0.0).all()
    mask = conditional_frame_mask(300, 16, 1.0, torch.Generator().manual_seed(0))
    assert mask[:, 1:-1].all()
    ends = (~mask[:, 0]).long() + 2 * (~mask[:, -1]).long()  # 1 head, 2 tail, 3 both
    assert set(ends.tolist()) == {1, 2, 3}
