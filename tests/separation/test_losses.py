"""PIT on negative SI-SNR, mixed counts, 10 talkers, multi-scale weights and the count loss,
checked against asteroid's PITLossWrapper and brute force."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr, singlesrc_neg_sisdr

from separation.losses import SeparationLossConfig, pit_neg_sisdr, reorder_sources, separation_loss
from separation.model import BlockOutput, SeparationOutput


def _noisy_permuted(refs, perm, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return refs[:, perm] + noise * torch.randn(refs[:, perm].shape, generator=g)


def _brute_force(est, refs):
    """min over permutations of the mean single-source neg SI-SDR, per item."""
    n = refs.shape[1]
    best = []
    for b in range(refs.shape[0]):
        losses = [torch.stack([singlesrc_neg_sisdr(est[b:b + 1, p[i]], refs[b:b + 1, i])[0] for i in range(n)]).mean()
                  for p in itertools.permutations(range(n))]
        best.append(min(losses))
    return torch.stack(best)


@pytest.mark.parametrize("n_src", [2, 3, 4])
def test_pit_matches_asteroid_wrapper_and_brute_force(n_src):
    torch.manual_seed(n_src)
    refs = torch.randn(3, n_src, 800)
    est = torch.randn(3, n_src, 800) + 0.5 * refs
    loss, _ = pit_neg_sisdr(est, refs)
    wrapper = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
    assert torch.allclose(loss.mean(), wrapper(est, refs), atol=1e-5)
    assert torch.allclose(loss, _brute_force(est, refs), atol=1e-4)


def test_pit_is_invariant_to_permuting_references():
    torch.manual_seed(1)
    refs = torch.randn(2, 3, 1000)
    est = refs + 0.3 * torch.randn(2, 3, 1000)
    base, _ = pit_neg_sisdr(est, refs)
    for perm in itertools.permutations(range(3)):
        loss, index = pit_neg_sisdr(est, refs[:, list(perm)])
        assert torch.allclose(loss, base, atol=1e-5)
        # the returned order aligns the estimates with the permuted references
        assert torch.equal(index[0], torch.tensor(perm))


def test_ten_talkers_recover_the_permutation():
    torch.manual_seed(2)
    refs = torch.randn(2, 10, 1600)
    perm = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]
    est = _noisy_permuted(refs, perm, noise=0.2)
    loss, index = pit_neg_sisdr(est, refs)
    # est[:, j] holds refs[:, perm[j]]: reference i is matched with estimate perm.index(i)
    expected = torch.tensor([perm.index(i) for i in range(10)])
    assert torch.equal(index[0], expected) and torch.equal(index[1], expected)
    aligned = reorder_sources(est, index)
    direct = torch.stack([singlesrc_neg_sisdr(aligned[:, i], refs[:, i]) for i in range(10)], 1).mean(1)
    assert torch.allclose(loss, direct, atol=1e-5)
    assert loss.max() < -10  # 0.2 noise on unit-variance signals: about 14 dB


def test_more_estimates_than_references_pick_the_best_subset():
    torch.manual_seed(3)
    refs = torch.randn(1, 2, 1000)
    est = torch.stack([torch.randn(1000), refs[0, 1] + 0.01 * torch.randn(1000), torch.randn(1000),
                       refs[0, 0] + 0.01 * torch.randn(1000)])[None]
    loss, index = pit_neg_sisdr(est, refs)
    assert index[0].tolist() == [3, 1]
    assert loss.item() < -30
    with pytest.raises(ValueError):
        pit_neg_sisdr(est[:, :1], refs)


def _output(blocks):
    return SeparationOutput(blocks=[BlockOutput(est_sources=e, count_logits=c) for e, c in blocks])


def test_mixed_counts_and_multi_scale_weights():
    torch.manual_seed(4)
    t = 900
    refs = torch.zeros(3, 3, t)
    n_src = torch.tensor([2, 3, 2])
    for b, k in enumerate(n_src.tolist()):
        refs[b, :k] = torch.randn(k, t)
    mix = refs.sum(1)
    blocks = []
    for i in range(3):  # later blocks are better
        noise = 1.0 / (i + 1)
        est = {2: refs[:, [1, 0]] + noise * torch.randn(3, 2, t), 3: refs[:, [2, 0, 1]] + noise * torch.randn(3, 3, t)}
        logits = torch.randn(3, 5)
        blocks.append((est, logits))
    cfg = SeparationLossConfig(count_weight=0.05)
    loss, logs = separation_loss(_output(blocks), refs, n_src, mix, config=cfg, count_offset=1)
    expected = 0.0
    wrapper = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
    for i, (est, logits) in enumerate(blocks):
        per_item = [wrapper(est[k][b:b + 1], refs[b:b + 1, :k]) for b, k in enumerate(n_src.tolist())]
        block = torch.stack(per_item).mean() + 0.05 * F.cross_entropy(logits, n_src - 1)
        expected = expected + (i + 1) / 3 * block
    assert torch.allclose(loss, expected, atol=1e-4)
    assert logs["neg_sisnr"] == pytest.approx(float(torch.stack(
        [wrapper(blocks[2][0][k][b:b + 1], refs[b:b + 1, :k]) for b, k in enumerate(n_src.tolist())]).mean()), abs=1e-4)
    # single scale: only the last block, weight 1
    loss_last, _ = separation_loss(_output(blocks), refs, n_src, mix,
                                   config=SeparationLossConfig(count_weight=0.05, multi_scale=False))
    block = torch.stack([wrapper(blocks[2][0][k][b:b + 1], refs[b:b + 1, :k])
                         for b, k in enumerate(n_src.tolist())]).mean() + 0.05 * F.cross_entropy(blocks[2][1], n_src - 1)
    assert torch.allclose(loss_last, block, atol=1e-4)


def test_max_count_head_penalises_loud_unmatched_outputs():
    torch.manual_seed(5)
    t = 800
    refs = torch.zeros(1, 3, t)
    refs[0, :2] = torch.randn(2, t)
    mix = refs.sum(1)
    quiet = torch.stack([refs[0, 0], refs[0, 1], 1e-5 * torch.randn(t)])[None]
    loud = torch.stack([refs[0, 0], refs[0, 1], torch.randn(t)])[None]
    cfg = SeparationLossConfig(inactive_weight=0.1, inactive_floor_db=60.0)
    loss_quiet, _ = separation_loss(_output([({3: quiet}, None)]), refs, torch.tensor([2]), mix, config=cfg)
    loss_loud, _ = separation_loss(_output([({3: loud}, None)]), refs, torch.tensor([2]), mix, config=cfg)
    pit, _ = pit_neg_sisdr(quiet, refs[:, :2])
    rel_db_quiet = 10 * torch.log10(quiet[0, 2].pow(2).mean() / mix.pow(2).mean())
    assert torch.allclose(loss_quiet, pit.mean() + 0.1 * F.relu(rel_db_quiet + 60), atol=1e-4)
    rel_db = 10 * torch.log10(loud[0, 2].pow(2).mean() / mix.pow(2).mean())
    assert torch.allclose(loss_loud - loss_quiet, 0.1 * (rel_db + 60) - 0.1 * F.relu(rel_db_quiet + 60), atol=1e-3)


def test_padding_beyond_lengths_is_ignored():
    torch.manual_seed(6)
    refs = torch.randn(2, 2, 1000)
    refs[1, :, 600:] = 0
    lengths = torch.tensor([1000, 600])
    est = refs + 0.1 * torch.randn(2, 2, 1000)
    garbage = est.clone()
    garbage[1, :, 600:] = 100 * torch.randn(2, 400)
    est[1, :, 600:] = 0
    out_b = _output([({2: garbage}, None)])
    loss_a, _ = separation_loss(_output([({2: est}, None)]), refs, torch.tensor([2, 2]), refs.sum(1), lengths)
    loss_b, _ = separation_loss(out_b, refs, torch.tensor([2, 2]), refs.sum(1), lengths)
    assert torch.allclose(loss_a, loss_b, atol=1e-5)


@pytest.mark.parametrize("n_est,n_ref", [(2, 2), (3, 3), (4, 4), (10, 10), (5, 2), (5, 4)])
def test_pit_is_bit_identical_to_asteroid(n_est, n_ref):
    """Our PIT (frontend.sisnr + best_permutation, no asteroid import) gives asteroid 0.7's loss,
    assignment and gradient to the last bit: the training loss did not change."""
    torch.manual_seed(n_est * 10 + n_ref)
    refs = torch.randn(4, n_ref, 700)
    est = (torch.randn(4, n_est, 700) + 0.4 * refs.repeat(1, n_est // n_ref + 1, 1)[:, :n_est]).requires_grad_()
    loss, index = pit_neg_sisdr(est, refs)
    # asteroid's way (what separation.losses did before): pad the references, then find_best_perm
    est_ref = est.detach().clone().requires_grad_()
    padded = torch.cat([refs, refs[:, :1].expand(-1, n_est - n_ref, -1)], dim=1)
    pairwise = pairwise_neg_sisdr(est_ref, padded)[:, :, :n_ref]
    if n_est == n_ref:
        ref_loss, ref_index = PITLossWrapper.find_best_perm(pairwise)
    else:
        ref_loss, ref_index = PITLossWrapper.find_best_perm_hungarian(pairwise)
    assert torch.equal(loss, ref_loss) and torch.equal(index, ref_index)
    loss.sum().backward()
    ref_loss.sum().backward()
    assert torch.equal(est.grad, est_ref.grad)

