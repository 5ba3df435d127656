"""Fast generation: fused torch loop and C kernel vs forward; sampling policies; determinism;
cached vs naive; a small WaveNet learns a periodic waveform and regenerates it from a seed."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frontend import mulaw_decode, mulaw_encode
from generation.fast import FastGenerator, generate_naive, generate_reference
from generation.kernel import load_kernel
from generation.losses import mulaw_cross_entropy
from generation.sampling import draw_uniforms, sample_logistic_mixture, sample_mulaw
from generation.wavenet import WaveNet, WaveNetConfig, shift_right
from tests.generation.test_wavenet import COND_MODES, conditioning, small_config

OUTPUTS = ["mulaw", "logistic_mixture", "regression"]
ROOT = Path(__file__).resolve().parents[2]


def test_kernel_builds_here():
    # the machine running the tests has a C compiler; the kernel must build and load
    assert load_kernel() is not None


@pytest.mark.parametrize("use_kernel", [False, True])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_fused_paths_equal_forward(use_kernel, kernel_size):
    """Teacher-forced through the fused loops, the raw outputs equal forward(shift_right(x))."""
    for output in OUTPUTS:
        for cond in COND_MODES:
            torch.manual_seed(len(output) * 7 + len(cond))
            config = small_config(kernel_size, output, cond)
            model = WaveNet(config).eval()
            gen = FastGenerator(model, use_kernel=use_kernel)
            batch, n = 3 if cond != "local+speaker" else 2, 70
            x = torch.rand(batch, n) * 2 - 1
            local, glob = conditioning(config, batch, n, dtype=torch.float32)
            with torch.no_grad():
                ref = model(shift_right(x), local, glob).transpose(1, 2)  # (B, n, C)
                up = model.upsample_local(local, n, batch) if local is not None else None
            state = gen.init_state(batch)
            _, raw = gen.run(state, n, gen._bias(glob, batch), gen._local(up, 0, n), 0.0,
                             torch.full((batch, n, 2), 0.5), forced=gen._input_values(x), return_raw=True)
            err = (raw - ref).abs().max().item()
            assert err < 2e-5, f"{output}/{cond}: fused loop differs from forward by {err}"


@pytest.mark.parametrize("output", OUTPUTS)
def test_reference_torch_and_kernel_generate_the_same(output):
    torch.manual_seed(3)
    config = small_config(3, output, "local+speaker")
    model = WaveNet(config).eval()
    n, batch = 120, 2
    local, glob = conditioning(config, batch, n, dtype=torch.float32)
    for temperature in (0.0, 1.0):
        u = draw_uniforms(batch, n, torch.Generator().manual_seed(5))
        ref = generate_reference(model, n, local, glob, temperature, batch, uniforms=u)
        fused = FastGenerator(model, use_kernel=False).generate(n, local, glob, temperature, batch, uniforms=u)
        kernel = FastGenerator(model, use_kernel=True).generate(n, local, glob, temperature, batch, uniforms=u)
        tol = 0.0 if output == "mulaw" else 1e-4  # codes must match exactly; values within float error
        assert (ref - fused).abs().max().item() <= tol
        assert (ref - kernel).abs().max().item() <= tol
        assert ref.abs().max() <= 1.0


def test_mulaw_temperature_zero_is_deterministic_and_one_is_not():
    torch.manual_seed(0)
    model = WaveNet(small_config(2, "mulaw", "speaker_id")).eval()
    glob = torch.tensor([1, 2])
    for method in ("reference", "fast"):
        a = model.generate(200, global_cond=glob, temperature=0.0, generator=torch.Generator().manual_seed(1),
                           method=method)
        b = model.generate(200, global_cond=glob, temperature=0.0, generator=torch.Generator().manual_seed(2),
                           method=method)
        assert torch.equal(a, b)
        # greedy: every sample is the argmax code of the model given the samples before it
        logits = model(shift_right(a), global_cond=glob)
        assert torch.equal(mulaw_encode(a, 32), logits.argmax(1))
        c = model.generate(200, global_cond=glob, temperature=1.0, generator=torch.Generator().manual_seed(1),
                           method=method)
        d = model.generate(200, global_cond=glob, temperature=1.0, generator=torch.Generator().manual_seed(2),
                           method=method)
        assert not torch.equal(c, d)
        e = model.generate(200, global_cond=glob, temperature=1.0, generator=torch.Generator().manual_seed(1),
                           method=method)
        assert torch.equal(c, e)


def test_cached_equals_naive():
    torch.manual_seed(0)
    model = WaveNet(small_config(2, "mulaw")).double().eval()
    u = draw_uniforms(2, 80, torch.Generator().manual_seed(0))
    naive = generate_naive(model, 80, 1.0, 2, uniforms=u)
    cached = generate_reference(model, 80, temperature=1.0, batch_size=2, uniforms=u)
    assert torch.equal(naive, cached)
    assert len(set(naive[0].tolist())) > 10  # really sampled, not stuck on one code
    seed = torch.rand(2, 40, dtype=torch.float64) - 0.5  # longer than the receptive field (31)
    naive = generate_naive(model, 30, 1.0, 2, uniforms=u[:, :30], seed=seed)
    assert torch.equal(naive, generate_reference(model, 30, temperature=1.0, batch_size=2, seed=seed, uniforms=u[:, :30]))


def test_sample_mulaw_matches_softmax_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 8) * 1.5
    n = 40000
    u = torch.rand(n)
    codes = sample_mulaw(logits.expand(n, -1), 1.0, u)
    freq = torch.bincount(codes, minlength=8).double() / n
    p = torch.softmax(logits[0].double(), 0)
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n)
    # temperature 0.5 sharpens exactly as softmax(logits / 0.5)
    freq_half = torch.bincount(sample_mulaw(logits.expand(n, -1), 0.5, u), minlength=8).double() / n
    assert (freq_half - torch.softmax(logits[0].double() / 0.5, 0)).abs().max() < 4 * math.sqrt(0.25 / n)
    assert sample_mulaw(logits, 0.0, torch.tensor([0.3])).item() == logits.argmax().item()


def test_sample_logistic_mixture_moments():
    params = torch.tensor([[math.log(0.25), math.log(0.75), -0.5, 0.4, math.log(0.05), math.log(0.02)]])
    n = 50000
    g = torch.Generator().manual_seed(0)
    u1, u2 = torch.rand(n, generator=g), torch.rand(n, generator=g).clamp(1e-6, 1 - 1e-6)
    x = sample_logistic_mixture(params.expand(n, -1), 1.0, u1, u2)
    assert abs(x.mean().item() - (0.25 * -0.5 + 0.75 * 0.4)) < 0.01
    near_first = ((x + 0.5).abs() < 0.3).float().mean().item()
    assert abs(near_first - 0.25) < 0.01
    # logistic variance s^2 pi^2 / 3 around the second component
    second = x[(x - 0.4).abs() < 0.3]
    assert abs(second.var().item() - 0.02 ** 2 * math.pi ** 2 / 3) < 2e-4
    assert sample_logistic_mixture(params, 0.0, torch.tensor([0.1]), torch.tensor([0.9])).item() == pytest.approx(0.4)


def test_learns_periodic_waveform_and_generates_it_exactly():
    """A small mu-law WaveNet fits one period-25 waveform, then continues it from a seed."""
    torch.manual_seed(0)
    period = 25
    t = torch.arange(2000, dtype=torch.float64)
    wave = (0.6 * torch.sin(2 * math.pi * t / period) + 0.3 * torch.sin(4 * math.pi * t / period + 1.0)).float()
    wave = mulaw_decode(mulaw_encode(wave, 64), 64)  # representable exactly
    config = WaveNetConfig(layers_per_cycle=5, n_cycles=1, kernel_size=2, residual_channels=16, gate_channels=16,
                           skip_channels=32, output="mulaw", quantization_channels=64)
    model = WaveNet(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    crops = 8
    for step in range(150):
        starts = torch.randint(0, 2000 - 100, (crops,))
        x = torch.stack([wave[s:s + 100] for s in starts.tolist()])
        loss = mulaw_cross_entropy(model(shift_right(x))[:, :, model.receptive_field:], x[:, model.receptive_field:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    seed = wave[None, 300:300 + 2 * period]
    target = wave[None, 300 + 2 * period:300 + 2 * period + 200]
    for method in ("reference", "fast"):
        out = model.generate(200, seed=seed, temperature=0.0, method=method)
        assert torch.equal(out, target), f"{method}: {(out != target).sum().item()} samples differ"


def test_without_compiler_the_torch_loop_is_used(monkeypatch):
    import generation.kernel as kernel

    monkeypatch.setattr(kernel, "load_kernel", lambda: None)
    torch.manual_seed(0)
    model = WaveNet(small_config(2, "mulaw")).eval()
    gen = FastGenerator(model)
    assert gen.kernel is None
    u = draw_uniforms(1, 50, torch.Generator().manual_seed(0))
    assert torch.equal(gen.generate(50, uniforms=u), generate_reference(model, 50, uniforms=u))
    with pytest.raises(RuntimeError, match="could not be built"):
        FastGenerator(model, use_kernel=True)


@pytest.mark.slow
def test_loading_the_kernel_does_not_flush_denormals():
    """-ffast-math only compiles the kernel: linking with it would add crtfastmath.o, which sets
    flush-to-zero/denormals-are-zero for the whole process when the library loads (it did)."""
    code = ("import numpy as np, torch\n"
            "from generation.kernel import load_kernel\n"
            "assert load_kernel() is not None\n"
            "values = [float((np.array([1e-310]) * np.array([1.0]))[0]),\n"
            "          float((torch.tensor([1e-310], dtype=torch.float64) * 1.0)[0]),\n"
            "          float(np.float32(1e-40) * np.float32(1.0)), float((torch.tensor([1e-40]) * 1.0)[0])]\n"
            "print(values)\n"
            "assert all(v != 0.0 for v in values), values\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)


def test_kernel_cache_key_covers_source_compiler_flags_and_cpu(monkeypatch):
    import generation.kernel as kernel

    base = kernel.cache_key("cc")
    assert base == kernel.cache_key("cc") and len(base) == 16
    keys = {base}
    for attr, value in (("SOURCE", kernel.SOURCE + "\n"), ("COMPILE_FLAGS", ("-O2",)), ("ARCH_FLAGS", ((),)),
                        ("LINK_FLAGS", ("-shared",)), ("compiler_id", lambda cc: "clang 99"),
                        ("cpu_id", lambda: "aarch64 | other CPU | flags 0")):
        with monkeypatch.context() as m:
            m.setattr(kernel, attr, value)
            keys.add(kernel.cache_key("cc"))
    assert len(keys) == 7
    assert "-ffast-math" in kernel.COMPILE_FLAGS and "-ffast-math" not in kernel.LINK_FLAGS
