"""The CPU-budget study (bench.budget, `python -m bench.separation --parts budget`) on a toy budget."""
from __future__ import annotations

import json
import math

import pytest

from bench import budget
from bench.separation import main as bench_main
from tests.speech_fixture import cached_mixtures, cached_tiny_corpus

CORPUS = dict(n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))
SETTINGS = dict(speakers=[1, 2, 3], n_mixtures={"tr": 2, "cv": 2, "tt": 2}, mode="min", gains="wsj0",
                noise="none", seed=11)
TINY = {"encoder": {"type": "stft", "n_fft": 64, "hop_length": 16},
        "trunk": {"type": "blstm", "hidden_size": 8, "n_layers": 1}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    corpus = cached_tiny_corpus(tmp_path_factory, **CORPUS)
    mixtures = cached_mixtures(tmp_path_factory, corpus, **SETTINGS)
    return str(corpus), str(mixtures / "manifest_cv.jsonl")


@pytest.mark.slow
def test_candidate_trains_for_its_cpu_budget_and_is_evaluated_on_schedule(data):
    speech, valid = data
    points = budget.train_candidate("tiny", TINY, speech, valid, budget_min=0.06, eval_every_min=0.02,
                                    counts=(1, 2, 3), segment=0.5)
    assert [p["cpu_min"] for p in points][0] == 0.0 and len(points) == 4  # at 0, 1, 2 and 3 intervals
    assert all(b["cpu_min"] >= a["cpu_min"] + 0.02 - 1e-6 for a, b in zip(points, points[1:]))
    assert points[-1]["cpu_min"] >= 0.06 and points[-1]["steps"] > points[1]["steps"] > 0
    for p in points:
        assert 0.0 <= p["count_acc"] <= 1.0 and math.isfinite(p["si_snri_2"]) and math.isfinite(p["si_snri_all"])
    md = budget.table(points)
    assert md.count("\n") == 1 + len(points) and "| tiny |" in md


@pytest.mark.slow
def test_bench_separation_budget_part_writes_table_json_and_plot(data, tmp_path, capsys):
    """The real blstm_stft candidate in its subprocess, for about one step's worth of CPU."""
    speech, valid = data
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    assert bench_main(["--parts", "budget", "--budget-speech", speech, "--budget-valid", valid,
                       "--budget-minutes", "0.02", "--budget-eval-every", "0.02",
                       "--budget-candidates", "blstm_stft", "--threads", "1", "--out", str(out),
                       "--budget-plot", str(png)]) == 0
    result = json.loads(out.read_text())["budget"]
    assert [r["candidate"] for r in result["rows"]] == ["blstm_stft", "blstm_stft"]
    assert png.stat().st_size > 10_000
    assert "| blstm_stft |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_main(["--parts", "budget", "--budget-speech", speech, "--budget-valid", valid,
                    "--budget-candidates", "nope"])
