"""The multi-head MulCat separator and the baselines: shapes of every head and block, chunking,
the count selectors, checkpoints through the engine, and an overfit run that must separate."""
import math

import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from separation.baselines import ConvTasNetBaseline, DPRNNBaseline
from separation.losses import separation_loss
from separation.model import (CPU_CONFIG, PAPER_CONFIG, MulCatSeparator, SeparationOutput, count_by_power,
                              merge_chunks, split_chunks)
from separation.task import si_snr_improvement

TINY = dict(max_speakers=3, n_filters=16, kernel_size=8, stride=4, decoder_frame_length=8, hidden_size=8,
            chunk_size=10, n_blocks=2)
TINY_DPRNN = dict(max_speakers=3, asteroid_options=dict(n_filters=16, kernel_size=8, stride=4, bn_chan=16,
                                                       hid_size=8, chunk_size=10, n_repeats=1))
TINY_CONVTASNET = dict(max_speakers=3, asteroid_options=dict(n_filters=16, kernel_size=8, stride=4, bn_chan=8,
                                                            hid_chan=8, skip_chan=8, n_blocks=2, n_repeats=1))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("no_speech", [False, True])
def test_every_head_and_block_has_its_shape(no_speech):
    torch.manual_seed(0)
    model = MulCatSeparator(dict(TINY, count_no_speech=no_speech)).train()
    mix = torch.randn(2, 999)  # not a multiple of the stride
    out = model(mix)
    assert isinstance(out, SeparationOutput) and len(out.blocks) == TINY["n_blocks"]
    n_classes = 4 if no_speech else 3
    for block in out.blocks:
        assert sorted(block.est_sources) == [1, 2, 3]
        for c, est in block.est_sources.items():
            assert est.shape == (2, c, 999)
        assert block.count_logits.shape == (2, n_classes)
    assert out.est_sources is out.blocks[1].est_sources
    # eval: the last block only; a subset of heads
    out = model.eval()(mix, heads=[2])
    assert len(out.blocks) == 1 and list(out.est_sources) == [2]
    assert torch.allclose(out.est_sources[2], model.train()(mix).blocks[1].est_sources[2], atol=1e-6)
    with pytest.raises(ValueError, match="no head for 4"):
        model(mix, heads=[4])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(mix[0])


def test_count_pooling_ignores_padding_beyond_lengths():
    torch.manual_seed(1)
    model = MulCatSeparator(dict(TINY, n_blocks=0)).eval()  # pointwise: no global statistics
    short = torch.randn(1, 600)
    padded = torch.nn.functional.pad(short, (0, 400))
    logits_short = model(short).count_logits
    assert torch.allclose(model(padded, lengths=torch.tensor([600])).count_logits, logits_short, atol=1e-6)
    assert not torch.allclose(model(padded).count_logits, logits_short, atol=1e-4)


def test_chunks_split_and_merge_back():
    x = torch.randn(2, 37, 5)
    chunks = split_chunks(x, 10)
    assert chunks.shape[2:] == (10, 5)
    assert torch.equal(chunks[:, 1, :5], chunks[:, 0, 5:])  # 50 % overlap
    assert torch.allclose(merge_chunks(chunks, 37), x, atol=1e-6)


def test_separate_and_count_interfaces():
    torch.manual_seed(2)
    model = MulCatSeparator(TINY)
    mix = torch.randn(3, 800)
    counts = model.count(mix)
    assert len(counts) == 3 and all(1 <= k <= 3 for k in counts)
    probs = model.count_probabilities(mix)
    assert probs.shape == (3, 4) and torch.allclose(probs.sum(-1), torch.ones(3)) and probs[:, 0].eq(0).all()
    assert counts == probs.argmax(-1).tolist()
    sources = model.separate(mix)
    assert [s.shape for s in sources] == [(k, 800) for k in counts]
    # a given count uses that head: same as decoding it from forward
    given = model.separate(mix, [1, 3, 2])
    assert [s.shape[0] for s in given] == [1, 3, 2]
    full = model.eval()(mix)
    assert torch.allclose(given[1], full.est_sources[3][1], atol=1e-6)
    assert model.separate(mix[0], 2)[0].shape == (2, 800)
    with pytest.raises(ValueError):
        model.separate(mix, 4)


def test_power_selector_counts_loud_channels():
    t = torch.arange(1000) / 8000
    loud = torch.sin(2 * math.pi * 200 * t)
    est = torch.stack([torch.stack([loud, 0.5 * loud, 0.001 * loud]), torch.stack([loud, 0 * loud, 0 * loud])])
    # peak-normalised mean powers: 0.5, 0.125, 5e-7 and 0.5, 0, 0
    assert count_by_power(est, 1e-3).tolist() == [2, 1]
    assert count_by_power(torch.zeros(1, 3, 100)).tolist() == [1]
    torch.manual_seed(3)
    model = MulCatSeparator(TINY)
    model.count_method = "power"
    mix = torch.randn(2, 800)
    expected = count_by_power(model.eval()(mix).est_sources[3]).tolist()
    assert model.count(mix) == expected


def test_baselines_have_the_interface_and_keep_the_loudest_outputs():
    torch.manual_seed(4)
    mix = torch.randn(2, 800)
    for model in (DPRNNBaseline(TINY_DPRNN), ConvTasNetBaseline(TINY_CONVTASNET)):
        out = model(mix)
        assert list(out.est_sources) == [3] and out.est_sources[3].shape == (2, 3, 800)
        assert out.count_logits is None
        est = out.est_sources[3]
        counts = model.count(mix)
        assert counts == count_by_power(est).tolist()
        two = model.separate(mix, 2)
        power = est.pow(2).mean(-1)
        for b in range(2):
            keep = sorted(power[b].topk(2).indices.tolist())
            assert torch.allclose(two[b], est[b, keep], atol=1e-6)


def test_paper_config_has_svoice_size_and_cpu_config_is_smaller():
    paper = MulCatSeparator(PAPER_CONFIG)
    trunk = sum(p.numel() for n, p in paper.named_parameters() if n.startswith(("encoder", "trunk")))
    assert 7.3e6 < trunk < 7.7e6  # SVoice: 7.5 M
    cpu = MulCatSeparator(CPU_CONFIG)
    assert sum(p.numel() for p in cpu.parameters()) < 0.25 * sum(p.numel() for p in paper.parameters())


@pytest.mark.parametrize("name,config", [("svoice_multihead", TINY), ("dprnn_tasnet", TINY_DPRNN),
                                         ("conv_tasnet", TINY_CONVTASNET)])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, name, config):
    torch.manual_seed(5)
    model = build_model(name, config).eval()
    path = save_checkpoint(tmp_path / "m.pt", task="separation", model_name=name, model_config=model.get_config(),
                           sample_rate=8000, model=model, step=3)
    ckpt = load_checkpoint(path)
    assert ckpt["model_config"] == model.get_config()
    loaded = model_from_checkpoint(ckpt)
    assert type(loaded) is type(model)
    mix = torch.randn(2, 700)
    a, b = model(mix), loaded(mix)
    for c in a.est_sources:
        assert torch.equal(a.est_sources[c], b.est_sources[c])
    assert [s.shape for s in model.separate(mix)] == [s.shape for s in loaded.separate(mix)]


def _harmonic_voice(f0, n, g, sr=8000):
    """A synthetic "voice": 5 harmonics with vibrato and a slow amplitude envelope."""
    t = torch.arange(n) / sr
    f = f0 * (1 + 0.05 * torch.sin(2 * math.pi * (1 + 3 * torch.rand(1, generator=g)) * t))
    phase = 2 * math.pi * torch.cumsum(f, 0) / sr
    x = sum(0.6 ** h * torch.sin(h * phase + 6.28 * torch.rand(1, generator=g)) for h in range(1, 6))
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * (2 + 2 * torch.rand(1, generator=g)) * t + 6.28 * torch.rand(1, generator=g))
    return x * env


@pytest.mark.slow
def test_tiny_model_overfits_two_talker_mixtures():
    """A handful of 2-talker mixtures: training must reach SI-SNRi >= 15 dB (SVoice-style loss)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n, length = 4, 2000
    sources = torch.stack([torch.stack([_harmonic_voice(110 + 40 * i, length, g),
                                        _harmonic_voice(260 + 50 * i, length, g)]) for i in range(n)])
    sources = 0.4 * sources / sources.abs().amax(-1, keepdim=True)
    mix = sources.sum(1)
    model = MulCatSeparator(dict(max_speakers=2, n_filters=32, kernel_size=16, stride=8, decoder_frame_length=16,
                                 hidden_size=32, chunk_size=50, n_blocks=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    n_src = torch.full((n,), 2)
    improvement = -math.inf
    for step in range(300):
        model.train()
        loss, _ = separation_loss(model(mix, heads=[2]), sources, n_src, mix)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step % 10 == 9:
            est = torch.stack(model.separate(mix, 2))
            improvement = float(si_snr_improvement(est, sources, mix).mean())
            if improvement >= 16:
                break
    assert improvement >= 15.0
    assert model.count(mix) == [2] * n  # the count head learned the (only) count


@pytest.mark.parametrize("model", [MulCatSeparator(TINY), DPRNNBaseline(TINY_DPRNN), ConvTasNetBaseline(TINY_CONVTASNET)],
                         ids=["svoice_multihead", "dprnn_tasnet", "conv_tasnet"])
def test_inputs_shorter_than_the_encoder_kernel(model):
    for length in (1, 5, 9):
        (est,) = model.separate(torch.randn(length), 2)
        assert est.shape == (2, length) and torch.isfinite(est).all()
        assert model(torch.randn(2, length)).est_sources[3].shape == (2, 3, length)
