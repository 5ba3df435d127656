"""Counting-aware scoring on hand-built cases: right count, too few, too many, none."""
import numpy as np
import pytest

from evaluation import MAX_DB, confusion_matrix, count_accuracy, count_aware_si_snri, pairwise_si_snr
from tests.evaluation.conftest import filtered_noise


@pytest.fixture()
def case():
    refs = filtered_noise(3, 4000, 21)
    mix = refs.sum(0)
    noise = np.random.default_rng(2).standard_normal(refs.shape) * 0.1 * refs.std()
    return refs, mix, refs + noise  # est i = ref i + noise (about 20 dB)


def test_right_count_is_pit_on_si_snr(case):
    refs, mix, est = case
    order = [2, 0, 1]
    score = count_aware_si_snri(refs, est[order], mix)
    np.testing.assert_array_equal(score.perm, [1, 2, 0])  # est index for each reference
    expected = np.array([pairwise_si_snr(refs[c], est[c])[0, 0] - pairwise_si_snr(refs[c], mix)[0, 0]
                         for c in range(3)])
    np.testing.assert_allclose(score.si_snri, expected, atol=1e-9)
    assert score.mean_si_snri == pytest.approx(expected.mean())
    assert (score.missed, score.false_talkers, score.n_est) == (0, 0, 3)


def test_too_few_estimates_score_missed_talkers_as_the_mixture(case):
    refs, mix, est = case
    score = count_aware_si_snri(refs, est[[2, 0]], mix)  # talker 1 has no estimate
    np.testing.assert_array_equal(score.perm, [1, -1, 0])
    assert score.si_snri[1] == 0.0
    assert score.si_snr[1] == pytest.approx(pairwise_si_snr(refs[1], mix)[0, 0])
    for c, k in ((0, 1), (2, 0)):
        assert score.si_snri[c] == pytest.approx(pairwise_si_snr(refs[c], est[[2, 0]][k])[0, 0]
                                                 - pairwise_si_snr(refs[c], mix)[0, 0])
    assert score.mean_si_snri == pytest.approx((score.si_snri[0] + score.si_snri[2]) / 3)
    assert (score.missed, score.false_talkers) == (1, 0)


def test_too_many_estimates_are_false_talkers(case):
    refs, mix, est = case
    extra = np.random.default_rng(5).standard_normal((1, refs.shape[1]))
    score = count_aware_si_snri(refs, np.concatenate([extra, est]), mix)
    np.testing.assert_array_equal(score.perm, [1, 2, 3])
    right = count_aware_si_snri(refs, est, mix)
    np.testing.assert_allclose(score.si_snri, right.si_snri)  # the extra one does not change the score
    assert (score.missed, score.false_talkers, score.n_est) == (0, 1, 4)


def test_no_estimate_and_perfect_estimates(case):
    refs, mix, _ = case
    none = count_aware_si_snri(refs, np.zeros((0, refs.shape[1])), mix)
    np.testing.assert_array_equal(none.si_snri, 0.0)
    assert (none.missed, none.false_talkers) == (3, 0)
    perfect = count_aware_si_snri(refs, refs, mix)
    np.testing.assert_allclose(perfect.si_snr, MAX_DB)


def test_confusion_matrix_and_accuracy():
    true = [2, 2, 3, 3, 3, 4]
    est = [2, 3, 3, 3, 2, 5]
    matrix, labels = confusion_matrix(true, est)
    assert labels == [2, 3, 4, 5]
    np.testing.assert_array_equal(matrix, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert count_accuracy(true, est) == pytest.approx(3 / 6)
    matrix, labels = confusion_matrix(true, est, labels=[1, 2, 3])
    assert matrix.sum() == 5 and labels == [1, 2, 3]
    with pytest.raises(ValueError):
        confusion_matrix([1, 2], [1])
