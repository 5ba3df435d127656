"""Sampling policies for WaveNet outputs, driven by explicit uniform random numbers.

Every policy takes its randomness as uniforms in (0, 1) drawn by the caller, so the reference
loop, the fused torch loop and the compiled kernel (:mod:`generation.kernel`, which implements
the same inverse-CDF rules in C) make the same choices from the same numbers.
Temperature 0 means greedy: the most likely code / the mean of the most likely component.
"""
from __future__ import annotations

import torch

from frontend import mulaw_decode

LOG_SCALE_MIN = -7.0  # PixelCNN++ clamp on logistic log-scales (arXiv 1701.05517)
UNIFORM_EPS = 1e-5


def draw_uniforms(batch: int, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(batch, n_samples, 2)`` uniforms in ``[eps, 1 - eps]`` (two per sample and item)."""
    u = torch.rand(batch, n_samples, 2, generator=generator, dtype=torch.float64)
    return u.clamp(UNIFORM_EPS, 1.0 - UNIFORM_EPS).float()


def _inverse_cdf(logits: torch.Tensor, temperature: float, uniform: torch.Tensor) -> torch.Tensor:
    """Index of the category whose cumulative probability first exceeds ``uniform``: ``(B,)``."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    weights = torch.exp((logits - logits.amax(dim=-1, keepdim=True)) / temperature)
    cdf = weights.cumsum(dim=-1)
    target = uniform.to(cdf.dtype).unsqueeze(-1) * cdf[..., -1:]
    index = (cdf <= target).sum(dim=-1)
    return index.clamp(max=logits.shape[-1] - 1)


def sample_mulaw(logits: torch.Tensor, temperature: float, uniform: torch.Tensor) -> torch.Tensor:
    """``logits (B, Q)`` -> codes ``(B,)`` (int64)."""
    return _inverse_cdf(logits, temperature, uniform)


def sample_logistic_mixture(params: torch.Tensor, temperature: float, u_component: torch.Tensor,
                            u_value: torch.Tensor) -> torch.Tensor:
    """``params (B, 3M)`` = (mixture logits, means, log-scales) -> values ``(B,)`` in [-1, 1]."""
    m = params.shape[-1] // 3
    logit_probs, means, log_scales = params[..., :m], params[..., m:2 * m], params[..., 2 * m:]
    k = _inverse_cdf(logit_probs, temperature, u_component).unsqueeze(-1)
    mean = means.gather(-1, k).squeeze(-1)
    if temperature <= 0:
        return mean.clamp(-1.0, 1.0)
    scale = torch.exp(log_scales.gather(-1, k).squeeze(-1).clamp(min=LOG_SCALE_MIN))
    u = u_value.to(params.dtype)
    return (mean + temperature * scale * (torch.log(u) - torch.log1p(-u))).clamp(-1.0, 1.0)


def sample_output(output: str, raw: torch.Tensor, temperature: float, uniforms: torch.Tensor,
                  quantization_channels: int = 256):
    """One step's raw output ``(B, C)`` -> ``(value (B,) float waveform, code (B,) or None)``.

    ``uniforms (B, 2)``. ``output`` is the WaveNet config's output type.
    """
    if output == "mulaw":
        code = sample_mulaw(raw, temperature, uniforms[:, 0])
        return mulaw_decode(code, quantization_channels).to(raw.dtype), code
    if output == "logistic_mixture":
        return sample_logistic_mixture(raw, temperature, uniforms[:, 0], uniforms[:, 1]), None
    if output == "regression":
        return raw[:, 0].clamp(-1.0, 1.0), None
    raise ValueError(f"unknown output type {output!r}")
