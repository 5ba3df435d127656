"""frontend.noise and frontend.sisnr: the one copy of coloured noise, mixing at an SNR and the
torch SI-SNR, used by separation and generation alike."""
import numpy as np
import pytest
import torch

from frontend.noise import COLOR_SLOPES, colored_noise, loop_excerpt, mix_at_snr, scale_to_snr, snr_gain
from frontend.sisnr import pairwise_neg_si_snr, si_snr


def _slope(x: np.ndarray) -> float:
    psd = np.abs(np.fft.rfft(x)) ** 2
    f = np.arange(psd.size)
    band = (f > 10) & (f < psd.size // 2)
    return float(np.polyfit(np.log10(f[band]), np.log10(psd[band]), 1)[0])


@pytest.mark.parametrize("slope", [-1.0, 0.0, 1.0, 2.0])
def test_colored_noise_has_the_slope_unit_rms_and_is_seeded(slope):
    x = colored_noise(2**16, slope, np.random.default_rng(0))
    assert x.dtype == np.float64 and x.shape == (2**16,)
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-9)
    assert _slope(x) == pytest.approx(-slope, abs=0.1)
    assert np.array_equal(x, colored_noise(2**16, slope, np.random.default_rng(0)))
    assert set(COLOR_SLOPES) == {"white", "pink", "brown"}


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_scale_and_mix_at_snr_reach_the_snr_and_keep_the_type(kind):
    rng = np.random.default_rng(1)
    speech, noise = rng.standard_normal(4000).astype(np.float32), rng.standard_normal(4000).astype(np.float32)
    if kind == "torch":
        speech, noise = torch.from_numpy(speech), torch.from_numpy(noise)
    scaled = scale_to_snr(noise, speech, 7.5)
    mixed = mix_at_snr(speech, noise, 7.5)
    assert type(scaled) is type(noise) and type(mixed) is type(speech) and mixed.dtype == speech.dtype
    p = lambda x: float(np.mean(np.asarray(x, dtype=np.float64) ** 2))  # noqa: E731
    assert 10 * np.log10(p(speech) / p(scaled)) == pytest.approx(7.5, abs=1e-4)
    assert 10 * np.log10(p(speech) / p(np.asarray(mixed) - np.asarray(speech))) == pytest.approx(7.5, abs=1e-3)
    # silence on either side: no noise is added
    assert snr_gain(noise * 0, speech, 5.0) == 0.0 and snr_gain(noise, speech * 0, 5.0) == 0.0


def test_si_snr_values():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 2000, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2000, generator=g, dtype=torch.float64)
    # scale and offset do not matter; an orthogonal-ish error at a known level does
    assert bool((si_snr(3 * ref + 0.2, ref) > 60).all())
    ref0 = ref - ref.mean(-1, keepdim=True)
    err = noise - noise.mean(-1, keepdim=True)
    err = err - (err * ref0).sum(-1, keepdim=True) / (ref0 * ref0).sum(-1, keepdim=True) * ref0
    err = err * (ref0.norm(dim=-1, keepdim=True) / err.norm(dim=-1, keepdim=True)) * 10 ** (-10 / 20)
    assert torch.allclose(si_snr(ref0 + err, ref0), torch.full((3,), 10.0, dtype=torch.float64), atol=1e-6)
    pairwise = pairwise_neg_si_snr((ref0 + err)[None], ref0[None])  # (1, 3, 3)
    assert torch.allclose(-torch.diagonal(pairwise[0]), si_snr(ref0 + err, ref0))
    with pytest.raises(ValueError):
        pairwise_neg_si_snr(ref, ref)


def test_si_snr_is_bit_identical_to_asteroid():
    losses = pytest.importorskip("asteroid.losses")
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(2, 4, 1000, generator=g)
    est = ref + 0.5 * torch.randn(2, 4, 1000, generator=g)
    theirs = losses.pairwise_neg_sisdr(est, ref)
    assert torch.equal(pairwise_neg_si_snr(est, ref), theirs)
    assert torch.equal(si_snr(est, ref), -torch.diagonal(theirs, dim1=1, dim2=2))


def test_the_call_sites_use_the_one_copy():
    import generation.losses
    import generation.noise
    import separation.mixing

    from frontend import noise, sisnr

    assert generation.noise.mix_at_snr is noise.mix_at_snr
    assert separation.mixing.scale_to_snr is noise.scale_to_snr
    assert generation.losses.si_snr is sisnr.si_snr
    # the named colours of separation are the slopes of the shared generator
    x = separation.mixing.colored_noise(1000, "pink", np.random.default_rng(4)).numpy()
    assert np.array_equal(x, colored_noise(1000, 1.0, np.random.default_rng(4)))


def test_loop_excerpt_is_a_stretch_of_the_recording_looped_when_short():
    wav = np.arange(10, dtype=np.float64)
    part = loop_excerpt(wav, 4, np.random.default_rng(0))
    start = int(np.random.default_rng(0).integers(0, 7))
    assert np.array_equal(part, wav[start:start + 4])
    looped = loop_excerpt(wav, 25, np.random.default_rng(1))
    assert looped.shape == (25,) and np.array_equal(np.diff(looped) % 10, np.full(24, 1.0))  # 0..9, 0..9, ...
    as_tensor = loop_excerpt(torch.from_numpy(wav), 25, np.random.default_rng(1))  # the same draw on a tensor
    assert isinstance(as_tensor, torch.Tensor) and np.array_equal(as_tensor.numpy(), looped)
    with pytest.raises(ValueError, match="empty"):
        loop_excerpt(np.zeros(0), 3, np.random.default_rng(0))
