"""IndexTTS2's speaker conditioning and emotion vector, from w2v-BERT features: audiomill's own modules.

UnifiedVoice (IndexTTS2's GPT) turns an utterance's w2v-BERT features (layer 17, normalised by
the release's statistics: what ``maskgct-semantic`` computes) into

- ``condition`` ``[32, model_dim]``: a conformer encoder (``conditioning_encoder``: a 2x
  convolutional subsampling, relative-position self-attention, a convolution module), then a
  perceiver resampler of 32 latents (``perceiver_encoder``);
- ``emo_vec`` ``[model_dim]``: a second conformer (``emo_conditioning_encoder``), a perceiver of one
  latent (``emo_perceiver_encoder``, 1024 wide), then ``emovec_layer`` and ``emo_layer``.

The modules here carry the checkpoint's own names, so that exactly the keys they need are read
from ``gpt.pth`` (``torch.load(weights_only=True)``); they are built from ``config.yaml``'s ``gpt``
section. One change from the original: the convolution module zeroes the padding again after its
gated linear unit (whose bias makes the padding non-zero), so that a clip batched with longer ones
gets exactly the vectors it gets alone. For a clip alone nothing changes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

PREFIXES = ("conditioning_encoder.", "perceiver_encoder.", "emo_conditioning_encoder.", "emo_perceiver_encoder.",
            "emovec_layer.", "emo_layer.")
FEATURE_SIZE = 1024  # w2v-BERT 2.0's hidden size


# -- the conformer ------------------------------------------------------------------------------------


class _FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class _ConvModule(nn.Module):
    def __init__(self, channels: int, kernel: int = 15) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, C]``; ``keep`` ``[B, 1, T]``, true on real frames."""
        x = x.transpose(1, 2).masked_fill(~keep, 0.0)
        x = F.glu(self.pointwise_conv1(x), dim=1).masked_fill(~keep, 0.0)  # (the second fill: see the module)
        x = self.depthwise_conv(x)
        x = F.silu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        return self.pointwise_conv2(x).masked_fill(~keep, 0.0).transpose(1, 2)


class _RelativeSelfAttention(nn.Module):
    """Self-attention with a learned bias per head on content (``pos_bias_u``) and on position
    (``pos_bias_v``) against sinusoidal position embeddings of absolute positions, unshifted, as the
    checkpoint was trained."""

    def __init__(self, heads: int, size: int) -> None:
        super().__init__()
        self.heads, self.width = heads, size // heads
        self.linear_q = nn.Linear(size, size)
        self.linear_k = nn.Linear(size, size)
        self.linear_v = nn.Linear(size, size)
        self.linear_out = nn.Linear(size, size)
        self.linear_pos = nn.Linear(size, size, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.width))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.width))

    def forward(self, x: torch.Tensor, keep: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, T, H*W] -> [B, T, H, W]
            return t.view(t.shape[0], -1, self.heads, self.width)

        q = split(self.linear_q(x))
        k, v = split(self.linear_k(x)).transpose(1, 2), split(self.linear_v(x)).transpose(1, 2)
        p = split(self.linear_pos(positions)).transpose(1, 2)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        scores = (content + position) / math.sqrt(self.width)
        hidden = ~keep.unsqueeze(1)  # [B, 1, 1, T]
        weights = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1).masked_fill(hidden, 0.0)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, frames, self.heads * self.width)
        return self.linear_out(out)


class _ConformerBlock(nn.Module):
    def __init__(self, size: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = _RelativeSelfAttention(heads, size)
        self.feed_forward = _FeedForward(size, hidden)
        self.conv_module = _ConvModule(size)
        self.norm_ff = nn.LayerNorm(size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(size, eps=1e-5)
        self.norm_conv = nn.LayerNorm(size, eps=1e-5)
        self.norm_final = nn.LayerNorm(size, eps=1e-5)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), keep, positions)
        x = x + self.conv_module(self.norm_conv(x), keep)
        x = x + self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


def _sinusoids(frames: int, size: int) -> torch.Tensor:
    """``[1, frames, size]``: sine on even channels, cosine on odd, wavelengths from 2 pi to 10000 * 2 pi."""
    position = torch.arange(frames, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(torch.arange(0, size, 2, dtype=torch.float32) * -(math.log(10000.0) / size))
    table = torch.zeros(frames, size)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table.unsqueeze(0)


class _Subsampling(nn.Module):
    """``conv2d2``: a 3x3 convolution of stride 2 over (time, feature), then a projection; ``linear``: a
    projection and a layer norm. The result is scaled by sqrt(size), as the position embeddings expect."""

    def __init__(self, kind: str, features: int, size: int) -> None:
        super().__init__()
        self.kind, self.size = kind, size
        if kind == "conv2d2":
            self.conv = nn.Sequential(nn.Conv2d(1, size, 3, 2), nn.ReLU())
            self.out = nn.Sequential(nn.Linear(size * ((features - 1) // 2), size))
        elif kind == "linear":
            self.out = nn.Sequential(nn.Linear(features, size), nn.LayerNorm(size, eps=1e-5))
        else:
            raise ValueError(f"input_layer {kind!r}: audiomill builds conv2d2 and linear (IndexTTS2 uses conv2d2)")

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.kind == "conv2d2":
            x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
            batch, channels, frames, width = x.shape
            x = self.out(x.transpose(1, 2).reshape(batch, frames, channels * width))
            keep = keep[:, :, 2::2]  # a frame is real if the last input it covers is
        else:
            x = self.out(x)
        positions = _sinusoids(x.shape[1], self.size).to(x.device, x.dtype)
        return x * math.sqrt(self.size), positions, keep


class Conformer(nn.Module):
    def __init__(self, features: int, output_size: int, linear_units: int, attention_heads: int, num_blocks: int,
                 input_layer: str, **_: Any) -> None:
        super().__init__()
        self.embed = _Subsampling(input_layer, features, output_size)
        self.encoders = nn.ModuleList(_ConformerBlock(output_size, attention_heads, linear_units)
                                      for _ in range(num_blocks))
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T, features]``, ``lengths`` ``[B]`` -> ``[B, T', size]`` and ``keep`` ``[B, 1, T']``."""
        keep = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(1)
        x, positions, keep = self.embed(x, keep)
        for block in self.encoders:
            x = block(x, keep, positions)
        return self.after_norm(x), keep


# -- the perceiver resampler ----------------------------------------------------------------------------


class _CrossAttention(nn.Module):
    """Latents attend to themselves and the context together (the latents come first in the keys)."""

    def __init__(self, size: int, heads: int, width: int = 64) -> None:
        super().__init__()
        self.heads, self.width = heads, width
        self.to_q = nn.Linear(size, heads * width, bias=False)
        self.to_kv = nn.Linear(size, heads * width * 2, bias=False)
        self.to_out = nn.Linear(heads * width, size, bias=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, N, H*W] -> [B, H, N, W]
            return t.view(t.shape[0], t.shape[1], self.heads, self.width).transpose(1, 2)

        q = heads(self.to_q(latents))
        k, v = (heads(t) for t in self.to_kv(torch.cat((latents, context), dim=-2)).chunk(2, dim=-1))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.width ** -0.5
        scores = scores.masked_fill(~keep[:, None, None, :], -torch.finfo(scores.dtype).max)
        out = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2)
        return self.to_out(out.reshape(out.shape[0], out.shape[1], self.heads * self.width))


class _GatedFeedForward(nn.Sequential):
    """Linear to twice the inner width, GELU-gated, linear back (keys ``0.*`` and ``2.*``)."""

    def __init__(self, size: int, mult: float) -> None:
        inner = int(size * mult * 2 / 3)
        super().__init__(nn.Linear(size, inner * 2), _Geglu(), nn.Linear(inner, size))


class _Geglu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


class _RMSNorm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.scale = size ** 0.5
        self.gamma = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class Perceiver(nn.Module):
    def __init__(self, size: int, context: int, latents: int, heads: int, mult: float, depth: int = 2) -> None:
        super().__init__()
        self.proj_context = nn.Linear(context, size) if context != size else nn.Identity()
        self.latents = nn.Parameter(torch.zeros(latents, size))
        self.layers = nn.ModuleList(nn.ModuleList([_CrossAttention(size, heads), _GatedFeedForward(size, mult)])
                                    for _ in range(depth))
        self.norm = _RMSNorm(size)

    def forward(self, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``context`` ``[B, T, context]``, ``keep`` ``[B, T]`` -> ``[B, latents, size]``."""
        context = self.proj_context(context)
        latents = self.latents.unsqueeze(0).expand(context.shape[0], -1, -1)
        keep = torch.cat((torch.ones(keep.shape[0], latents.shape[1], dtype=torch.bool, device=keep.device), keep), 1)
        for attention, feed_forward in self.layers:
            latents = attention(latents, context, keep) + latents
            latents = feed_forward(latents) + latents
        return self.norm(latents)


# -- the two paths, from config.yaml and gpt.pth ---------------------------------------------------------


@dataclass
class ConditioningConfig:
    model_dim: int
    condition_module: dict[str, Any]
    emo_condition_module: dict[str, Any]
    condition_num_latent: int = 32
    features: int = FEATURE_SIZE  # the w2v-BERT width (1024; a test model's own)

    @classmethod
    def from_gpt(cls, gpt: dict[str, Any], features: int = FEATURE_SIZE) -> "ConditioningConfig":
        kind = gpt.get("condition_type", "perceiver")
        if kind != "conformer_perceiver":
            raise ValueError(f"condition_type {kind!r}: audiomill builds IndexTTS2's conformer_perceiver")
        for name in ("model_dim", "condition_module", "emo_condition_module"):
            if name not in gpt:
                raise ValueError(f"config.yaml's gpt section has no {name}")
        return cls(int(gpt["model_dim"]), dict(gpt["condition_module"]), dict(gpt["emo_condition_module"]),
                   int(gpt.get("condition_num_latent", 32)), features)


class Conditioning(nn.Module):
    """Both paths; :meth:`forward` gives ``condition [B, 32, model_dim]`` and ``emo_vec [B, model_dim]``."""

    def __init__(self, cfg: ConditioningConfig) -> None:
        super().__init__()
        cond, emo = cfg.condition_module, cfg.emo_condition_module
        self.conditioning_encoder = Conformer(cfg.features, **cond)
        self.perceiver_encoder = Perceiver(cfg.model_dim, cond["output_size"], cfg.condition_num_latent,
                                           cond["attention_heads"], cond["perceiver_mult"])
        self.emo_conditioning_encoder = Conformer(cfg.features, **emo)
        self.emo_perceiver_encoder = Perceiver(cfg.features, emo["output_size"], 1, emo["attention_heads"],
                                               emo["perceiver_mult"])
        self.emovec_layer = nn.Linear(cfg.features, cfg.model_dim)
        self.emo_layer = nn.Linear(cfg.model_dim, cfg.model_dim)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` ``[B, T, width]`` (normalised w2v-BERT layer 17), ``lengths`` ``[B]`` frames."""
        encoded, keep = self.conditioning_encoder(features, lengths)
        condition = self.perceiver_encoder(encoded, keep.squeeze(1))
        encoded, keep = self.emo_conditioning_encoder(features, lengths)
        emotion = self.emo_perceiver_encoder(encoded, keep.squeeze(1)).squeeze(1)
        return condition, self.emo_layer(self.emovec_layer(emotion))


def load_conditioning(folder: str, device: str = "cpu") -> Conditioning:
    """The two paths from an IndexTTS2 release folder: ``config.yaml``'s ``gpt`` section and the keys of
    ``gpt.pth`` they need (``torch.load(weights_only=True)``; a ``{"model": ...}`` wrapper is unwrapped)."""
    import yaml

    with open(os.path.join(folder, "config.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    state = torch.load(os.path.join(folder, "gpt.pth"), map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    layer = state.get("emovec_layer.weight")
    features = int(layer.shape[1]) if layer is not None else FEATURE_SIZE  # the w2v-BERT width it was trained on
    model = Conditioning(ConditioningConfig.from_gpt((config or {}).get("gpt") or {}, features))
    wanted = {key: value for key, value in state.items() if key.startswith(PREFIXES) and not key.endswith(".pe")}
    missing = sorted(set(model.state_dict()) - set(wanted))
    if missing:
        raise ValueError(f"gpt.pth lacks {len(missing)} conditioning weights, e.g. {', '.join(missing[:3])}")
    model.load_state_dict(wanted)
    return model.to(device).eval()


TINY_GPT = dict(model_dim=32, heads=2, condition_type="conformer_perceiver", condition_num_latent=32,
                condition_module=dict(output_size=16, linear_units=32, attention_heads=2, num_blocks=1,
                                      input_layer="conv2d2", perceiver_mult=2),
                emo_condition_module=dict(output_size=16, linear_units=32, attention_heads=2, num_blocks=1,
                                          input_layer="conv2d2", perceiver_mult=2))


# IndexTTS2's sizes (its release's config.yaml), for speed runs with random weights
REAL_GPT = dict(model_dim=1280, heads=20, condition_type="conformer_perceiver", condition_num_latent=32,
                condition_module=dict(output_size=512, linear_units=2048, attention_heads=8, num_blocks=6,
                                      input_layer="conv2d2", perceiver_mult=2),
                emo_condition_module=dict(output_size=512, linear_units=1024, attention_heads=4, num_blocks=4,
                                          input_layer="conv2d2", perceiver_mult=2))


def save_tiny(folder: str, features: int, seed: int = 0, gpt: dict[str, Any] | None = None) -> str:
    """Tiny random conditioning paths for ``features``-wide w2v-BERT features, saved as a release is laid
    out (``config.yaml``'s ``gpt`` section, ``gpt.pth`` ``{"model": state}``); biases, position biases,
    latents and norm scales randomised too (they start at zero or one)."""
    import yaml

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = Conditioning(ConditioningConfig.from_gpt(gpt or TINY_GPT, features))
        for name, parameter in model.named_parameters():
            if name.endswith(("bias", "pos_bias_u", "pos_bias_v", "latents", "gamma")):
                parameter.normal_(0.0, 0.3)
    os.makedirs(folder, exist_ok=True)
    torch.save({"model": model.state_dict()}, os.path.join(folder, "gpt.pth"))
    with open(os.path.join(folder, "config.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"gpt": gpt or TINY_GPT}, handle)
    return folder
