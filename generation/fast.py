"""Autoregressive generation loops for a causal :class:`generation.wavenet.WaveNet`.

Three loops, slowest to fastest, that make the same choices from the same uniforms
(:func:`generation.sampling.draw_uniforms`):

- :func:`generate_naive`: recomputes ``forward`` over the last receptive field for every sample
  (O(receptive field) per sample; the baseline of Paine et al. 2016, arXiv 1611.09482).
- :func:`generate_reference`: :meth:`WaveNet.step` with the module code and ring buffers
  (O(layers) per sample); the readable reference, exact against ``forward``.
- :class:`FastGenerator`: the same computation with fused weights - per layer one product for
  all dilated-conv taps (``(B, k R) @ (k R, 2G)``) and one for residual + skip
  (``(B, G) @ (G, R + S)``), conditioning precomputed for the whole utterance (in chunks), ring
  buffers preallocated - run by the C kernel of :mod:`generation.kernel` when it builds, else by
  a pure-torch loop under ``torch.inference_mode``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from frontend import mulaw_decode, mulaw_encode
from generation import kernel as _kernel
from generation.sampling import draw_uniforms, sample_output

if TYPE_CHECKING:  # WaveNet.generate imports this module: the model is only a type here
    from generation.wavenet import WaveNet

_CHUNK_FLOATS = 1 << 22  # bound on the precomputed conditioning held at once (16 MiB float32)


def _check_causal(model: WaveNet) -> None:
    if not model.config.causal:
        raise ValueError("autoregressive generation needs a causal WaveNet (config.causal=True)")


def _prime_inputs(model: WaveNet, seed: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Inputs stepped before sampling starts: ``[0, seed...]`` -> ``(B, 1 + S)``."""
    zero = torch.zeros(batch, 1)
    if seed is None:
        return zero
    if seed.dim() != 2 or seed.shape[0] != batch:
        raise ValueError(f"seed must be (B={batch}, S), got {tuple(seed.shape)}")
    return torch.cat([zero, seed.float().cpu()], dim=1)


@torch.inference_mode()
def generate_reference(model: WaveNet, n_samples: int, local_cond=None, global_cond=None,
                       temperature: float = 1.0, batch_size: int = 1, seed=None, generator=None,
                       uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Sample with :meth:`WaveNet.step` -> ``(B, n_samples)``; see :meth:`WaveNet.generate`."""
    _check_causal(model)
    c = model.config
    dtype = next(model.parameters()).dtype
    inputs = _prime_inputs(model, seed, batch_size).to(dtype)
    n_prime = inputs.shape[1] - 1
    total = n_prime + n_samples
    state = model.init_state(batch_size, local_cond, global_cond, n_samples=total)
    if uniforms is None:
        uniforms = draw_uniforms(batch_size, n_samples, generator)
    for t in range(n_prime):  # teacher-force the seed
        model.step(inputs[:, t], state)
    x = inputs[:, -1]
    out = torch.empty(batch_size, n_samples, dtype=dtype)
    for t in range(n_samples):
        raw = model.step(x, state)
        x, _ = sample_output(c.output, raw, temperature, uniforms[:, t], c.quantization_channels)
        out[:, t] = x
    return out.float()


@torch.inference_mode()
def generate_naive(model: WaveNet, n_samples: int, temperature: float = 1.0, batch_size: int = 1,
                   generator=None, uniforms: torch.Tensor | None = None, seed=None) -> torch.Tensor:
    """Unconditioned sampling by re-running ``forward`` over the receptive field for each sample.

    ``seed (B, S)`` is continued as in :meth:`WaveNet.generate` (with ``S >= receptive field``
    every sample costs a full-window forward, the steady state the benchmark measures).
    """
    _check_causal(model)
    c = model.config
    rf = model.receptive_field
    if uniforms is None:
        uniforms = draw_uniforms(batch_size, n_samples, generator)
    dtype = next(model.parameters()).dtype
    # inputs: the leading zero, the seed, then every generated sample; forward zero-pads the start
    primed = _prime_inputs(model, seed, batch_size).to(dtype)
    n0 = primed.shape[1]
    inputs = torch.cat([primed, torch.zeros(batch_size, n_samples, dtype=dtype)], dim=1)
    for t in range(n_samples):
        end = n0 + t
        raw = model(inputs[:, max(0, end - rf):end])[:, :, -1]
        x, _ = sample_output(c.output, raw, temperature, uniforms[:, t], c.quantization_channels)
        inputs[:, end] = x
    return inputs[:, n0:].float()


class FastGenerator:
    """Fused-weight generation for one (causal) model; see the module docstring.

    Args:
        model: the WaveNet (weights are copied to float32 once; rebuild after training more).
        use_kernel: True/False to force the C kernel / the torch loop; None = kernel if it builds.
        n_threads: threads for the kernel (batch items are split across them); default torch's.
    """

    def __init__(self, model: WaveNet, use_kernel: bool | None = None, n_threads: int | None = None):
        _check_causal(model)
        self.model = model
        c = self.config = model.config
        self.n_threads = n_threads or torch.get_num_threads()
        self.kernel = _kernel.load_kernel() if use_kernel in (None, True) else None
        if use_kernel and self.kernel is None:
            raise RuntimeError("the WaveNet C kernel could not be built (no C compiler?)")
        with torch.no_grad():
            layers = model.layers
            f32 = dict(dtype=torch.float32, copy=True)
            # dilated conv weight (2G, R, k) -> (k, R, 2G): tap i (oldest first) x input -> output
            self.w_conv = torch.stack([l.dilated.weight.permute(2, 1, 0) for l in layers]).to(**f32).contiguous()
            self.b_conv = torch.stack([l.dilated.bias for l in layers]).to(**f32)  # (L, 2G)
            self.w_rs = torch.stack([torch.cat([l.residual.weight[:, :, 0], l.skip.weight[:, :, 0]]).t()
                                     for l in layers]).to(**f32).contiguous()  # (L, G, R + S)
            self.b_rs = torch.stack([torch.cat([l.residual.bias, l.skip.bias]) for l in layers]).to(**f32).contiguous()
            self.w_h1 = model.head1.weight[:, :, 0].t().to(**f32).contiguous()  # (S, S)
            self.b_h1 = model.head1.bias.to(**f32).contiguous()
            self.w_h2 = model.head2.weight[:, :, 0].t().to(**f32).contiguous()  # (S, C)
            self.b_h2 = model.head2.bias.to(**f32).contiguous()
            if c.output == "mulaw":
                self.in_table = model.input_embedding.weight.to(**f32).contiguous()  # (Q, R)
                self.in_w = self.in_b = None
                self.decode_table = mulaw_decode(torch.arange(c.quantization_channels), c.quantization_channels)
            else:
                self.in_table = None
                self.in_w = model.input_conv.weight[:, 0, 0].to(**f32).contiguous()
                self.in_b = model.input_conv.bias.to(**f32).contiguous()
                self.decode_table = torch.zeros(1)
            if c.local_channels:
                # all layers' local projections stacked: (L * 2G, Cl)
                self.w_local = torch.cat([l.local_proj.weight[:, :, 0] for l in layers]).to(**f32)
            if c.global_channels:
                self.w_global = torch.cat([l.global_proj.weight[:, :, 0] for l in layers]).to(**f32)
        self.dilations = [l.dilation for l in layers]
        self.sizes = [l.buffer_size for l in layers]
        self.offsets = [0]
        for size in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)
        self.buf_rows = sum(self.sizes)

    # -- conditioning ------------------------------------------------------------------------------
    @torch.no_grad()
    def _bias(self, global_cond, batch: int) -> torch.Tensor:
        """Per item and layer: conv bias + global conditioning -> ``(B, L, 2G)``."""
        bias = self.b_conv.unsqueeze(0).expand(batch, -1, -1)
        emb = self.model.embed_global(global_cond, batch)
        if emb is not None:
            bias = bias + (emb[:, :, 0].float() @ self.w_global.t()).view(batch, len(self.sizes), -1)
        return bias.contiguous()

    @torch.no_grad()
    def _local(self, local_up: torch.Tensor | None, start: int, n: int) -> torch.Tensor | None:
        """Local conditioning for samples ``start .. start+n`` -> ``(B, n, L, 2G)``."""
        if local_up is None:
            return None
        b = local_up.shape[0]
        part = local_up[:, :, start:start + n].float().transpose(1, 2)  # (B, n, Cl)
        return (part @ self.w_local.t()).view(b, n, len(self.sizes), -1).contiguous()

    # -- state -------------------------------------------------------------------------------------
    def init_state(self, batch: int) -> dict:
        return {"buffers": torch.zeros(batch, self.buf_rows, self.config.residual_channels),
                "position": 0, "prev": self._input_values(torch.zeros(batch))}

    def _input_values(self, values: torch.Tensor) -> torch.Tensor:
        """Waveform values -> what the kernel stores as the previous input (code or value)."""
        if self.config.output == "mulaw":
            return mulaw_encode(values.float(), self.config.quantization_channels).float()
        return values.float()

    # -- the loops ---------------------------------------------------------------------------------
    def run(self, state: dict, n: int, bias: torch.Tensor, local: torch.Tensor | None,
            temperature: float, uniforms: torch.Tensor, forced: torch.Tensor | None = None,
            return_raw: bool = False):
        """Advance ``state`` by ``n`` samples -> ``(values (B, n), raw (B, n, C) or None)``.

        ``forced (B, n)`` (kernel input encoding, see ``_input_values``) replaces the sampled
        inputs - teacher forcing, used to prime seeds and in tests.
        """
        if self.kernel is not None:
            return self._run_kernel(state, n, bias, local, temperature, uniforms, forced, return_raw)
        return self._run_torch(state, n, bias, local, temperature, uniforms, forced, return_raw)

    def _run_kernel(self, state, n, bias, local, temperature, uniforms, forced, return_raw):
        c = self.config
        batch = state["prev"].shape[0]
        keep = []  # keep tensors alive while the kernel runs

        def ptr(t):
            if t is None:
                return None
            t = t.contiguous()
            keep.append(t)
            return t.data_ptr()

        out_values = torch.empty(batch, n)
        out_raw = torch.empty(batch, n, c.output_channels) if return_raw else None
        dil = torch.tensor(self.dilations, dtype=torch.int32)
        off = torch.tensor(self.offsets, dtype=torch.int64)
        job = _kernel.Job(
            B=batch, L=len(self.sizes), R=c.residual_channels, G=c.gate_channels, S=c.skip_channels,
            C=c.output_channels, K=c.kernel_size, Q=c.quantization_channels,
            dil=ptr(dil), buf_off=ptr(off), buf_rows=self.buf_rows,
            wc=ptr(self.w_conv), bias=ptr(bias.float()), local=ptr(local), wrs=ptr(self.w_rs),
            brs=ptr(self.b_rs), wh1=ptr(self.w_h1), bh1=ptr(self.b_h1), wh2=ptr(self.w_h2), bh2=ptr(self.b_h2),
            input_kind=0 if self.in_table is not None else 1, in_table=ptr(self.in_table),
            in_w=ptr(self.in_w), in_b=ptr(self.in_b),
            output_kind={"mulaw": 0, "logistic_mixture": 1, "regression": 2}[c.output],
            decode_table=ptr(self.decode_table), buffers=ptr(state["buffers"]), position=state["position"],
            prev=ptr(state["prev"]), n=n, temperature=float(temperature), uniforms=ptr(uniforms.float()),
            forced=ptr(None if forced is None else forced.float()), out_values=ptr(out_values),
            out_raw=ptr(out_raw), b_start=0, b_end=batch)
        for name in ("buffers", "prev"):
            if not state[name].is_contiguous() or state[name].dtype != torch.float32:
                raise ValueError(f"state[{name!r}] must be contiguous float32")
        self.kernel(job, min(self.n_threads, batch))
        state["position"] += n
        return out_values, out_raw

    def _run_torch(self, state, n, bias, local, temperature, uniforms, forced, return_raw):
        c = self.config
        r, g = c.residual_channels, c.gate_channels
        buffers, prev = state["buffers"], state["prev"]
        batch = prev.shape[0]
        rings = [buffers[:, o:o + size] for o, size in zip(self.offsets, self.sizes)]  # views
        out_values = torch.empty(batch, n)
        out_raw = torch.empty(batch, n, c.output_channels) if return_raw else None
        k = c.kernel_size
        w_conv = self.w_conv.view(len(self.sizes), k * r, 2 * g)
        for t in range(n):
            pos = state["position"] + t
            if self.in_table is not None:
                x = self.in_table[prev.long()]
            else:
                x = torch.addcmul(self.in_b, prev.unsqueeze(1), self.in_w)
            skip = None
            for l, (ring, size, d) in enumerate(zip(rings, self.sizes, self.dilations)):
                ring[:, pos % size] = x
                idx = [(pos - (k - 1 - i) * d) % size for i in range(k)]
                taps = ring[:, idx].reshape(batch, k * r)
                pre_bias = bias[:, l] if local is None else bias[:, l] + local[:, t, l]
                pre = torch.addmm(pre_bias, taps, w_conv[l])
                z = torch.tanh(pre[:, :g]) * torch.sigmoid(pre[:, g:])
                rs = torch.addmm(self.b_rs[l], z, self.w_rs[l])
                x = x + rs[:, :r]
                skip = rs[:, r:] if skip is None else skip + rs[:, r:]
            h = torch.relu(torch.addmm(self.b_h1, torch.relu(skip), self.w_h1))
            raw = torch.addmm(self.b_h2, h, self.w_h2)
            if out_raw is not None:
                out_raw[:, t] = raw
            value, code = sample_output(c.output, raw, temperature, uniforms[:, t], c.quantization_channels)
            out_values[:, t] = value
            if forced is not None:
                prev = forced[:, t].float()
            else:
                prev = code.float() if code is not None else value
        state["prev"].copy_(prev)
        state["position"] += n
        return out_values, out_raw

    # -- public ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, n_samples: int, local_cond=None, global_cond=None, temperature: float = 1.0,
                 batch_size: int = 1, seed=None, generator=None, uniforms=None, progress: bool = False) -> torch.Tensor:
        """Sample ``(B, n_samples)``; arguments as :meth:`WaveNet.generate` (``progress``: tqdm bar)."""
        c = self.config
        model = self.model
        inputs = _prime_inputs(model, seed, batch_size)  # (B, 1 + S)
        n_prime = inputs.shape[1] - 1
        total = n_prime + n_samples
        local_up = model.upsample_local(local_cond, total, batch_size) if c.local_channels else None
        if local_up is None and local_cond is not None:
            raise ValueError("this WaveNet has no local conditioning (local_channels=0)")
        bias = self._bias(global_cond, batch_size)
        if uniforms is None:
            uniforms = draw_uniforms(batch_size, n_samples, generator)
        state = self.init_state(batch_size)
        chunk = max(64, _CHUNK_FLOATS // max(1, batch_size * len(self.sizes) * 2 * c.gate_channels))
        if n_prime:
            # Teacher-force the seed: inputs [0, s_0 .. s_{S-2}] are fed, then s_{S-1} is "prev".
            forced = self._input_values(inputs[:, 1:])
            dummy = torch.full((batch_size, n_prime, 2), 0.5)
            for start in range(0, n_prime, chunk):
                n = min(chunk, n_prime - start)
                self.run(state, n, bias, self._local(local_up, start, n), 0.0, dummy[:, start:start + n],
                         forced=forced[:, start:start + n])
        out = torch.empty(batch_size, n_samples)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_samples, desc="generate", unit="sample", unit_scale=True, leave=False)
        for start in range(0, n_samples, chunk):
            n = min(chunk, n_samples - start)
            values, _ = self.run(state, n, bias, self._local(local_up, n_prime + start, n), temperature,
                                 uniforms[:, start:start + n].contiguous())
            out[:, start:start + n] = values
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
        return out

