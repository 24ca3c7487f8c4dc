"""Open-Sora 1.1 STDiT2 weights into our backbone: a tiny checkpoint in Open-Sora's key layout,
a reference STDiT2 forward written from its documented semantics, and the converted model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from portrait_model.convert import ConvertError, convert_weights, load_opensora, opensora_config, read_state_dict
from portrait_model.model import build_model
from portrait_model.presets import get_preset
from portrait_model.train import TrainConfig, load_checkpoint, model_from_checkpoint, train

torch.set_num_threads(1)
PRESET = "tiny-opensora"
CAPTION = 32  # T5 width, shrunk


def opensora_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the names and shapes of Open-Sora 1.1's STDiT2 (qk_norm, pred_sigma)."""
    cfg = get_preset(PRESET)
    d, c, hd = cfg.hidden, cfg.in_channels, cfg.head_dim
    p = math.prod(cfg.patch)
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "x_embedder.proj.weight": (d, c, *cfg.patch), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "t_block.1.weight": (6 * d, d), "t_block.1.bias": (6 * d,),
        "t_block_temp.1.weight": (3 * d, d), "t_block_temp.1.bias": (3 * d,),
        "y_embedder.y_proj.fc1.weight": (d, CAPTION), "y_embedder.y_proj.fc1.bias": (d,),
        "y_embedder.y_proj.fc2.weight": (d, d), "y_embedder.y_proj.fc2.bias": (d,),
        "y_embedder.y_embedding": (120, CAPTION),
        "rope.freqs": (hd // 2,),
        "final_layer.linear.weight": (p * 2 * c, d), "final_layer.linear.bias": (p * 2 * c,),
        "final_layer.scale_shift_table": (2, d),
    }
    for name, width in (("csize_embedder", d // 3), ("ar_embedder", d // 3), ("fl_embedder", d), ("fps_embedder", d)):
        shapes |= {f"{name}.mlp.0.weight": (width, 256), f"{name}.mlp.0.bias": (width,),
                   f"{name}.mlp.2.weight": (width, width), f"{name}.mlp.2.bias": (width,)}
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        for attn in ("attn", "attn_temp"):
            shapes |= {b + f"{attn}.qkv.weight": (3 * d, d), b + f"{attn}.qkv.bias": (3 * d,),
                       b + f"{attn}.q_norm.weight": (hd,), b + f"{attn}.k_norm.weight": (hd,),
                       b + f"{attn}.proj.weight": (d, d), b + f"{attn}.proj.bias": (d,)}
        shapes |= {b + "cross_attn.q_linear.weight": (d, d), b + "cross_attn.q_linear.bias": (d,),
                   b + "cross_attn.kv_linear.weight": (2 * d, d), b + "cross_attn.kv_linear.bias": (2 * d,),
                   b + "cross_attn.proj.weight": (d, d), b + "cross_attn.proj.bias": (d,),
                   b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                   b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,),
                   b + "scale_shift_table": (6, d), b + "scale_shift_table_temporal": (3, d)}
    state = {k: torch.randn(v, generator=g) * (0.3 if len(v) > 1 else 0.1) for k, v in shapes.items()}
    for k in state:
        if k.endswith("norm.weight"):
            state[k] = 1 + state[k]
    return state


# ---- a reference STDiT2 forward, in Open-Sora's own layout (B, T*S, C) and names ------------------
def _timestep_features(values: torch.Tensor, dim: int = 256) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp_embed(state, name, values: torch.Tensor) -> torch.Tensor:
    """SizeEmbedder / TimestepEmbedder: (B, k) scalars -> (B, k * width)."""
    b = values.shape[0]
    h = _timestep_features(values.reshape(-1))
    h = F.linear(F.silu(F.linear(h, state[f"{name}.mlp.0.weight"], state[f"{name}.mlp.0.bias"])),
                 state[f"{name}.mlp.2.weight"], state[f"{name}.mlp.2.bias"])
    return h.reshape(b, -1)


def _pos_embed(dim, h, w, scale, base_size):
    """PositionEmbedding2D: the first half of the channels encodes the column (x) coordinate."""
    inv = 1.0 / 10000 ** (torch.arange(0, dim // 2, 2).float() / (dim // 2))
    gx = (torch.arange(w).float() / scale * base_size / w)[None, :].expand(h, w).reshape(-1)
    gy = (torch.arange(h).float() / scale * base_size / h)[:, None].expand(h, w).reshape(-1)

    def emb(pos):
        out = pos[:, None] * inv[None]
        return torch.cat([out.sin(), out.cos()], dim=-1)

    return torch.cat([emb(gx), emb(gy)], dim=-1)


def _rope(x):
    n, hd = x.shape[-2], x.shape[-1]
    freqs = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    ang = (torch.arange(n).float()[:, None] * freqs[None]).repeat_interleave(2, -1)
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
    return x * ang.cos() + rotated * ang.sin()


def _attention(state, prefix, x, heads, rope):
    b, n, d = x.shape
    qkv = F.linear(x, state[prefix + "qkv.weight"], state[prefix + "qkv.bias"])
    q, k, v = qkv.view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    if rope:  # Open-Sora 1.1 rotates before the q/k RMSNorm
        q, k = _rope(q), _rope(k)
    rms = lambda t, w: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w  # noqa: E731
    q, k = rms(q, state[prefix + "q_norm.weight"]), rms(k, state[prefix + "k_norm.weight"])
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
    return F.linear(out, state[prefix + "proj.weight"], state[prefix + "proj.bias"])


def stdit2_forward(state, x, timestep, x_mask, fps, size_px):
    """Open-Sora 1.1 STDiT2 (cross-attention left out, as the converter drops it): (B, 8, T, H, W)."""
    cfg = get_preset(PRESET)
    d, heads = cfg.hidden, cfg.heads
    b, c, t, h, w = x.shape
    hp, wp = h // 2, w // 2
    s = hp * wp
    ln = lambda z: F.layer_norm(z, (d,), eps=1e-6)  # noqa: E731
    mod = lambda z, shift, scale: z * (1 + scale) + shift  # noqa: E731
    tok = F.conv3d(x, state["x_embedder.proj.weight"], state["x_embedder.proj.bias"], stride=cfg.patch)
    tok = tok.flatten(2).transpose(1, 2)  # B, (T S), C
    pos = _pos_embed(d, hp, wp, scale=size_px / size_px, base_size=round(s**0.5))
    tok = (tok.view(b, t, s, d) + pos).view(b, t * s, d)
    data_info = torch.cat([_mlp_embed(state, "csize_embedder", torch.tensor([[size_px, size_px]] * b)),
                           _mlp_embed(state, "ar_embedder", torch.tensor([[1.0]] * b))], dim=1)
    fl = _mlp_embed(state, "fl_embedder", torch.tensor([[t]] * b)) + _mlp_embed(state, "fps_embedder", fps[:, None])
    t_emb = _mlp_embed(state, "t_embedder", timestep[:, None])
    t0_emb = _mlp_embed(state, "t_embedder", torch.zeros(b, 1))
    blk = lambda z, name: F.linear(F.silu(z), state[f"{name}.1.weight"], state[f"{name}.1.bias"])  # noqa: E731
    t_spc, t_tmp = blk(t_emb + data_info, "t_block"), blk(t_emb + fl, "t_block_temp")
    t0_spc, t0_tmp = blk(t0_emb + data_info, "t_block"), blk(t0_emb + fl, "t_block_temp")

    def select(a, z):
        return torch.where(x_mask[:, :, None, None], a.view(b, t, s, d), z.view(b, t, s, d)).view(b, t * s, d)

    for i in range(cfg.depth):
        p = f"blocks.{i}."
        m = (state[p + "scale_shift_table"][None] + t_spc.view(b, 6, d)).chunk(6, 1)
        m0 = (state[p + "scale_shift_table"][None] + t0_spc.view(b, 6, d)).chunk(6, 1)
        mt = (state[p + "scale_shift_table_temporal"][None] + t_tmp.view(b, 3, d)).chunk(3, 1)
        mt0 = (state[p + "scale_shift_table_temporal"][None] + t0_tmp.view(b, 3, d)).chunk(3, 1)
        xm = select(mod(ln(tok), m[0], m[1]), mod(ln(tok), m0[0], m0[1]))
        xs = _attention(state, p + "attn.", xm.view(b * t, s, d), heads, False).view(b, t * s, d)
        tok = tok + select(m[2] * xs, m0[2] * xs)
        xm = select(mod(ln(tok), mt[0], mt[1]), mod(ln(tok), mt0[0], mt0[1]))
        xt = xm.view(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)
        xt = _attention(state, p + "attn_temp.", xt, heads, True).view(b, s, t, d).transpose(1, 2).reshape(b, t * s, d)
        tok = tok + select(mt[2] * xt, mt0[2] * xt)
        xm = select(mod(ln(tok), m[3], m[4]), mod(ln(tok), m0[3], m0[4]))
        h1 = F.gelu(F.linear(xm, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"]), approximate="tanh")
        xm = F.linear(h1, state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
        tok = tok + select(m[5] * xm, m0[5] * xm)
    # Final layer: the plain timestep for noised frames, t0 + size info for conditional ones.
    table = state["final_layer.scale_shift_table"][None]
    sh, sc = (table + t_emb[:, None]).chunk(2, 1)
    sh0, sc0 = (table + (t0_emb + data_info)[:, None]).chunk(2, 1)
    out = select(mod(ln(tok), sh, sc), mod(ln(tok), sh0, sc0))
    out = F.linear(out, state["final_layer.linear.weight"], state["final_layer.linear.bias"])
    out = out.view(b, t, hp, wp, 1, 2, 2, 2 * c).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, 2 * c, t, h, w)


def _inputs(seed=0):
    cfg = get_preset(PRESET)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, cfg.num_frames, cfg.latent_size, cfg.latent_size, generator=g)
    t = torch.tensor([37, 612])
    mask = torch.ones(2, cfg.num_frames, dtype=torch.bool)
    mask[0, 0] = mask[1, -1] = False
    return x, t, mask


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny Open-Sora checkpoint as safetensors and as a wrapped, DDP-prefixed .pth."""
    root = tmp_path_factory.mktemp("opensora")
    state = opensora_state()
    save_file(state, str(root / "model.safetensors"))
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "step": 5}, root / "epoch0-global_step5.pth")
    return state, root / "model.safetensors", root / "epoch0-global_step5.pth"


@pytest.mark.parametrize("fps_embed", [False, True])
def test_converted_backbone_matches_the_reference_stdit2_forward(checkpoints, fps_embed):
    state, safetensors_path, _ = checkpoints
    cfg = opensora_config(read_state_dict(safetensors_path), PRESET, fps_embed=fps_embed)
    model = build_model(cfg).eval()
    load_opensora(model, safetensors_path, fps=12.5)
    x, t, mask = _inputs()
    fps = torch.tensor([12.5, 12.5])
    size_px = 8 * cfg.latent_size
    with torch.no_grad():
        want = stdit2_forward(state, x, t, mask, fps, size_px)[:, :4]
        got = model(x, t, None, torch.zeros(2, 3, cfg.num_frames, 8, 8), mask, use_control=False,
                    fps=fps if fps_embed else None)
    assert want.abs().mean() > 0.1  # not a trivially zero output
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_controlnet_equals_backbone_blocks_after_loading(checkpoints):
    _, _, pth = checkpoints
    model = build_model(opensora_config(read_state_dict(pth), PRESET))
    load_opensora(model, pth, fps=12.5)
    assert len(model.control_blocks) == get_preset(PRESET).control_depth
    for i, cb in enumerate(model.control_blocks):
        ours, base = cb.copied.state_dict(), model.blocks[i].state_dict()
        assert ours.keys() == base.keys() and all(torch.equal(ours[k], base[k]) for k in ours)
    torch.testing.assert_close(model.blocks[0].attn.qkv_proj.weight, read_state_dict(pth)["blocks.0.attn.qkv.weight"])


def test_wrong_width_or_foreign_file_is_one_line(checkpoints, tmp_path):
    state, path, _ = checkpoints
    with pytest.raises(ConvertError, match="hidden 96.*preset 'tiny' is hidden 64"):
        opensora_config(state, "tiny")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConvertError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pth")


def test_converted_checkpoint_starts_a_training_run(checkpoints, fixtures_dir, tmp_path):
    from model_shards import make_test_build

    _, path, _ = checkpoints
    converted = convert_weights(path, tmp_path / "converted.pt", preset=PRESET, fps=15.0)
    ckpt = load_checkpoint(converted)
    assert ckpt["model_config"]["rope_before_qk_norm"] and ckpt["model_config"]["pos_embed_x_first"]
    build = make_test_build(tmp_path / "build", n_frames=6, n_clips=1, with_image=False, with_excluded=False)
    run = train(TrainConfig(data=str(build), run_dir=str(tmp_path / "run"), preset=PRESET, stage=2, frames=4,
                            steps=1, batch_size=1, latent_size=16, init_from=str(converted), quiet=True))
    assert run.step == 1 and run.model.cfg.rope_before_qk_norm
    also = train(TrainConfig(data=str(build), run_dir=str(tmp_path / "run2"), preset=PRESET, stage=1, steps=1,
                             batch_size=1, latent_size=16, init_from_opensora=str(path), quiet=True))
    start = model_from_checkpoint(converted)
    assert torch.equal(start.t_temporal_offset, also.model.t_temporal_offset)  # fps 15 folded as the data's


def test_convert_and_export_commands(checkpoints, tmp_path, capsys):
    from pipeline.cli import main as portrait

    _, path, _ = checkpoints
    out = tmp_path / "converted.pt"
    assert portrait(["convert-weights", "--opensora", str(path), "--out", str(out), "--preset", PRESET,
                     "--fps", "15"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert portrait(["export-ema", "--checkpoint", str(out), "--out", str(tmp_path / "ema.pt")]) == 0
    ema = load_checkpoint(tmp_path / "ema.pt")["ema"]
    assert ema["blocks.0.attn.qkv_proj.weight"].dtype == torch.bfloat16
    assert portrait(["convert-weights", "--opensora", str(tmp_path / "none.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Open-Sora checkpoint" in err[0]
