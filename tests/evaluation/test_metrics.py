"""Metrics against mir_eval (bss_eval), a float64 SI-SNR written from its definition, pesq, pystoi."""
import warnings

import mir_eval
import numpy as np
import pytest
import torch

from evaluation import (MAX_DB, MetricError, bss_eval, match_length, pairwise_bss_eval, pairwise_si_snr,
                        pesq_scores, si_snr, si_snr_improvement, stoi_scores)
from tests.evaluation.conftest import distorted_estimates, filtered_noise


def reference_si_snr(ref, est) -> float:
    """SI-SNR straight from the definition (Le Roux et al. 2019), float64, no shortcuts."""
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    ref = ref - ref.mean()
    est = est - est.mean()
    target = (np.dot(est, ref) / np.dot(ref, ref)) * ref
    noise = est - target
    return 10 * np.log10(np.sum(target**2) / np.sum(noise**2))


def mir_eval_sources(ref, est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mir_eval.separation.bss_eval_sources(ref, est)


def fixture_cases(speech_items):
    """(refs, est) pairs: espeak speech and filtered noise, 2-3 sources, 1 s at 8 kHz."""
    cases = []
    for i, item in enumerate(speech_items[:2]):
        refs = item["sources"].numpy().astype(np.float64)[:, :8000]
        cases.append((refs, distorted_estimates(refs, seed=i)[0]))
    for n_src, seed in ((2, 10), (3, 11)):
        refs = filtered_noise(n_src, 8000, seed)
        cases.append((refs, distorted_estimates(refs, seed=seed, leak=0.25, noise=0.1)[0]))
    return cases


@pytest.fixture(scope="module")
def cases_with_mir_eval(speech_items):
    return [(refs, est, mir_eval_sources(refs, est)) for refs, est in fixture_cases(speech_items)]


@pytest.mark.slow
def test_bss_eval_equals_mir_eval(cases_with_mir_eval):
    for refs, est, (sdr, sir, sar, perm) in cases_with_mir_eval:
        assert -5 < sdr.min() and sdr.max() < 30, f"fixture SDR outside the realistic range: {sdr}"
        ours = bss_eval(refs, est)
        np.testing.assert_allclose(ours["sdr"], sdr, atol=1e-4, rtol=0)
        np.testing.assert_allclose(ours["sir"], sir, atol=1e-4, rtol=0)
        np.testing.assert_allclose(ours["sar"], sar, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(ours["perm"], perm)


@pytest.mark.slow
def test_bss_eval_improvements_use_the_mixture_as_estimate(cases_with_mir_eval):
    refs, est, _ = cases_with_mir_eval[0]
    mix = refs.sum(0)
    ours = bss_eval(refs, est, mix=mix)
    sdr_mix, sir_mix, _, _ = mir_eval_sources(refs, np.stack([mix] * len(refs)))
    np.testing.assert_allclose(ours["sdr_mix"], sdr_mix, atol=1e-4)
    np.testing.assert_allclose(ours["sir_mix"], sir_mix, atol=1e-4)
    np.testing.assert_allclose(ours["sdri"], ours["sdr"] - sdr_mix, atol=1e-4)
    np.testing.assert_allclose(ours["siri"], ours["sir"] - sir_mix, atol=1e-4)
    # a clean mixture has no artifacts: its SAR is the documented cap
    np.testing.assert_allclose(ours["sar_mix"], MAX_DB)


@pytest.mark.slow
def test_pairwise_bss_eval_columns_do_not_depend_on_other_estimates():
    refs = filtered_noise(3, 4000, 3)
    est, _ = distorted_estimates(refs, seed=3)
    full = pairwise_bss_eval(refs, est)
    part = pairwise_bss_eval(refs, est[1:2])
    for a, b in zip(full, part):
        np.testing.assert_allclose(a[:, 1:2], b, atol=1e-9)
    # more estimates than references: the Hungarian match keeps the best min(C, K) pairs
    extra = np.concatenate([est, np.random.default_rng(0).standard_normal((1, 4000))])
    res = bss_eval(refs, extra)
    sdr, _, _, perm = mir_eval_sources(refs, est)
    np.testing.assert_array_equal(res["perm"], perm)
    np.testing.assert_allclose(res["sdr"], sdr, atol=1e-4)


@pytest.mark.slow
def test_si_snr_matches_definition(cases_with_mir_eval):
    for refs, est, _ in cases_with_mir_eval:
        matrix = pairwise_si_snr(refs, est)
        expected = np.array([[reference_si_snr(r, e) for e in est] for r in refs])
        np.testing.assert_allclose(matrix, expected, atol=1e-6, rtol=0)
        np.testing.assert_allclose(si_snr(refs, est[:len(refs)]), np.diag(expected), atol=1e-6, rtol=0)
    ref = refs[0]
    est1 = 0.3 * ref + 0.01 * np.random.default_rng(0).standard_normal(ref.shape)
    assert si_snr(ref, est1) == pytest.approx(reference_si_snr(ref, est1), abs=1e-6)
    # scale and offset invariance
    assert si_snr(ref, 7.0 * est1 + 0.2) == pytest.approx(si_snr(ref, est1), abs=1e-9)


def test_si_snr_improvement_is_difference_to_mixture(speech_items):
    item = speech_items[1]
    refs = item["sources"].numpy()
    mix = item["mix"].numpy()
    est, order = distorted_estimates(refs.astype(np.float64), seed=5)
    est = est[np.argsort(order)]  # back in reference order
    expected = [reference_si_snr(r, e) - reference_si_snr(r, mix) for r, e in zip(refs, est)]
    np.testing.assert_allclose(si_snr_improvement(refs, est, mix), expected, atol=1e-6)


def test_near_perfect_and_perfect_estimates():
    ref = filtered_noise(1, 8000, 7)[0]
    tiny = ref + 1e-4 * np.random.default_rng(1).standard_normal(8000) * ref.std()
    assert si_snr(ref, tiny) == pytest.approx(reference_si_snr(ref, tiny), abs=1e-6)  # about 80 dB
    assert si_snr(ref, ref) == MAX_DB
    assert si_snr(ref, 3 * ref) == MAX_DB
    refs = filtered_noise(2, 8000, 8)
    res = bss_eval(refs, refs[::-1].copy())
    np.testing.assert_array_equal(res["perm"], [1, 0])
    assert np.all(res["sdr"] > 90) and np.all(res["sdr"] <= MAX_DB)


def test_silent_reference_and_silent_estimate_are_defined():
    refs = filtered_noise(3, 4000, 9)
    est, _ = distorted_estimates(refs, seed=9, filt=False)
    refs_silent = refs.copy()
    refs_silent[1] = 0.0
    snr = pairwise_si_snr(refs_silent, est)
    assert np.isnan(snr[1]).all() and np.isfinite(snr[[0, 2]]).all()
    res = bss_eval(refs_silent, est)
    assert np.isnan(res["sdr"][1]) and np.isnan(res["sir"][1])
    # the other references score exactly as if the silent one were not there
    live = bss_eval(refs[[0, 2]], est)
    mir = mir_eval_sources(refs[[0, 2]], est[[int(k) for k in live["perm"]]])
    np.testing.assert_allclose(res["sdr"][[0, 2]], mir[0], atol=1e-4)
    np.testing.assert_allclose(res["sir"][[0, 2]], mir[1], atol=1e-4)
    # a silent estimate recovers nothing
    est_silent = est.copy()
    est_silent[0] = 0.0
    assert (pairwise_si_snr(refs, est_silent)[:, 0] == -MAX_DB).all()
    sdr, sir, sar = pairwise_bss_eval(refs, est_silent)
    assert (sdr[:, 0] == -MAX_DB).all() and (sir[:, 0] == -MAX_DB).all() and (sar[:, 0] == -MAX_DB).all()
    assert np.isfinite(sdr[:, 1:]).all()


def test_short_and_unequal_inputs_give_clear_errors():
    refs = filtered_noise(2, 400, 1)
    with pytest.raises(MetricError, match="too short: 400 samples, need at least 512"):
        bss_eval(refs, refs)
    with pytest.raises(ValueError, match="differ in length"):
        pairwise_si_snr(refs, refs[:, :300])
    with pytest.raises(MetricError, match="NaN"):
        pairwise_si_snr(refs, np.full_like(refs, np.nan))
    # the runner's length rule: pad with zeros or truncate
    est = torch.ones(2, 300)
    assert match_length(est, 400).shape == (2, 400) and match_length(est, 400)[:, 300:].abs().sum() == 0
    assert match_length(np.ones((2, 500)), 400).shape == (2, 400)


def test_pesq_and_stoi_equal_the_libraries(speech_items):
    from pesq import pesq
    from pystoi import stoi

    item = speech_items[0]
    ref = item["sources"][0].numpy().astype(np.float64)
    est = ref + 0.3 * item["sources"][1].numpy()
    ours = pesq_scores(ref, est, 8000)
    assert set(ours) == {"pesq_nb"}
    assert ours["pesq_nb"] == pytest.approx(pesq(8000, ref, est, "nb"), abs=1e-9)
    st = stoi_scores(ref, est, 8000)
    assert st["stoi"] == pytest.approx(stoi(ref, est, 8000), abs=1e-9)
    assert st["estoi"] == pytest.approx(stoi(ref, est, 8000, extended=True), abs=1e-9)
    assert 0.5 < st["stoi"] < 1.0


def test_perceptual_edge_cases_are_nan(speech_items):
    from pesq import pesq

    ref = speech_items[0]["sources"][0].numpy()
    silent = np.zeros_like(ref)
    assert np.isnan(pesq_scores(silent, ref, 8000)["pesq_nb"])
    assert np.isnan(pesq_scores(ref, silent, 8000)["pesq_nb"])
    assert np.isnan(pesq_scores(ref[:1000], ref[:1000], 8000)["pesq_nb"])  # 0.125 s < 0.25 s
    assert np.isnan(stoi_scores(silent, ref, 8000)["stoi"])
    assert np.isnan(stoi_scores(ref[:3000], ref[:3000], 8000)["stoi"])  # fewer than 30 frames
    with pytest.raises(ValueError, match="equal length"):
        stoi_scores(ref, ref[:-10], 8000)
    # 16 kHz gives the wide-band score
    import torchaudio.functional as AF
    ref16 = AF.resample(torch.from_numpy(ref), 8000, 16000).numpy()
    deg16 = ref16 + 0.01 * np.random.default_rng(0).standard_normal(ref16.shape)
    wb = pesq_scores(ref16, deg16, 16000)
    assert set(wb) == {"pesq_wb"} and wb["pesq_wb"] == pytest.approx(pesq(16000, ref16, deg16, "wb"), abs=1e-9)
