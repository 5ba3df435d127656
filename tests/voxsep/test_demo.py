"""`voxsep demo`: bundled examples, mixtures of 2..5 talkers, report numbers computed in the run."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import save_checkpoint
from evaluation.counting import count_aware_si_snri
from frontend import load_audio
from separation.model import MulCatSeparator, MulCatSeparatorConfig
from voxsep.cli import main
from voxsep.demo import EXAMPLES, build_demo_mixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = MulCatSeparatorConfig(max_speakers=5, n_filters=16, kernel_size=16, stride=8,
                                   decoder_frame_length=16, hidden_size=8, chunk_size=20, n_blocks=1,
                                   sample_rate=8000)
    model = MulCatSeparator(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, task="separation", model_name="svoice_multihead", model_config=model.get_config(),
                    sample_rate=8000, model=model, step=7)
    return path


def test_bundled_examples_are_unseen_test_voices():
    rows = [json.loads(line) for line in (EXAMPLES / "examples.jsonl").read_text().splitlines()]
    assert len({r["speaker"] for r in rows}) >= 10
    assert {r["split"] for r in rows} == {"test"}
    assert {r["engine"] for r in rows} == {"espeak", "flite", "festival"}
    for r in rows:
        wav, sr = load_audio(EXAMPLES / r["path"])
        assert sr == 8000 and wav.numel() / sr > 1.0 and wav.abs().max() > 0.1


def test_bundled_real_voices_are_validation_speakers_with_licences():
    rows = [json.loads(line) for line in (EXAMPLES / "real" / "examples.jsonl").read_text().splitlines()]
    assert len({r["speaker"] for r in rows}) == 12 and {r["corpus"] for r in rows} == {
        "speechocean762", "librispeech-train-clean-100"}
    licence = (EXAMPLES / "real" / "README.md").read_text()
    assert "CC BY 4.0" in licence and "speechocean762" in licence
    for r in rows:
        wav, sr = load_audio(EXAMPLES / "real" / r["path"])
        assert sr == 8000 and wav.numel() / sr > 1.0


def test_estimates_are_scaled_to_their_share_of_the_mixture():
    from frontend.levels import scale_to_mixture

    torch.manual_seed(0)
    refs = torch.randn(3, 4000) * torch.tensor([[0.5], [0.2], [0.05]])
    mix = refs.sum(0)
    est = refs * torch.tensor([[7.0], [-0.1], [30.0]])  # arbitrary scales and a flipped sign
    torch.testing.assert_close(scale_to_mixture(est, mix), refs, atol=1e-5, rtol=0)


def test_demo_mixtures_have_distinct_voices_and_sum():
    mixtures = build_demo_mixtures([2, 5], per_count=2, sample_rate=8000, seed=3)
    assert [m[2].shape[0] for m in mixtures] == [2, 2, 5, 5]
    for name, mix, sources, speakers in mixtures:
        assert len(set(speakers)) == len(speakers)
        torch.testing.assert_close(sources.sum(0), mix, atol=1e-6, rtol=0)
        assert float(mix.abs().max()) <= 0.9 + 1e-6


@pytest.mark.slow
def test_demo_writes_a_report_whose_numbers_come_from_the_run(tmp_path, checkpoint, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--model", str(checkpoint), "--counts", "2,3"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.md") in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["true_count"] for r in results] == [2, 3, 2, 3]
    assert [r["name"].split("_")[0] for r in results] == ["real", "real", "synthetic", "synthetic"]
    page = (out / "report.html").read_text()
    report = (out / "report.md").read_text()
    assert (out / "report.html").exists()
    for r in results:
        folder = out / r["name"]
        assert (folder / "spectrograms.png").stat().st_size > 10_000
        mix, _ = load_audio(folder / "mix.wav")
        refs = torch.stack([load_audio(folder / f"ref{i + 1}.wav")[0] for i in range(r["true_count"])])
        ests = [load_audio(folder / f"s{i + 1}.wav")[0] for i in range(r["est_count"])]
        assert len(list(folder.glob("s*.wav"))) == r["est_count"]
        est = torch.stack(ests) if ests else torch.zeros(0, mix.numel())
        # recomputed from the written 16-bit files: equal up to quantisation
        score = count_aware_si_snri(refs.numpy(), est.numpy(), mix.numpy())
        assert abs(score.mean_si_snri - r["si_snri_est"]) < 0.05
        # a player for the mixture, every reference and every estimate
        for i in range(r["true_count"]):
            assert f"src='{r['name']}/ref{i + 1}.wav'" in page
        for i in range(r["est_count"]):
            assert f"src='{r['name']}/s{i + 1}.wav'" in page
        # estimates keep their share of the mixture's level: the least-squares fit of the mixture
        # (the residual is orthogonal to every estimate) unless all were scaled down against clipping
        if ests and float(est.abs().max()) < 0.89:
            residual = mix - est.sum(0)
            cosines = (est @ residual) / (est.norm(dim=1) * mix.norm() + 1e-12)
            assert float(cosines.abs().max()) < 1e-3
        assert abs(sum(r["probabilities"]) - 1) < 1e-3 and r["est_count"] == int(np.argmax(r["probabilities"]))
        row = re.search(rf"\| \[{r['name']}\].*", report).group(0)
        assert f"| {r['true_count']} | {r['est_count']} | {r['si_snri_est']:.1f} |" in row


def test_demo_without_a_model_is_one_line(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voxsep: error:") and "\n" not in err and "no-such-model" in err
    assert not (tmp_path / "d").exists()
