"""The evaluation runner and `voxsep evaluate`: outputs, values, resuming, workers, estimate folders."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation import (CallableSystem, MetricOptions, OracleMaskSystem, count_aware_si_snri, evaluate,
                        evaluate_systems, oracle_mask_separate)
from frontend import save_audio
from voxsep.cli import main as cli_main


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def irm(item):
    return oracle_mask_separate(torch.as_tensor(item["mix"]), torch.as_tensor(item["sources"]), 8000, "irm")


class Miscounter:
    """IRM separation that drops the last talker of 3-talker mixtures (count 2 instead of 3)."""

    def __init__(self, items, fail_after=None):
        self.by_mix = {float(it["mix"].abs().sum()): it for it in items}
        self.calls = 0
        self.fail_after = fail_after

    def _item(self, mix):
        return self.by_mix[float(mix.abs().sum())]

    def separate(self, mix):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("model crashed")
        self.calls += 1
        item = self._item(mix)
        est = irm(item)
        return est[:2] if item["n_src"] == 3 else est

    def separate_with_count(self, mix, k):
        return irm(self._item(mix))[:k]

    def count_probs(self, mix):
        return torch.tensor([0.0, 0.0, 0.7, 0.3])  # P(0..3 talkers)


@pytest.mark.slow
def test_runner_writes_every_output_with_the_documented_values(speech_items, tmp_path):
    model = Miscounter(speech_items)
    systems = [OracleMaskSystem("ibm"), OracleMaskSystem("irm"),
               CallableSystem("miscounter", model.separate, model.separate_with_count, model.count_probs)]
    res = evaluate_systems(speech_items, systems, tmp_path, progress=False, n_examples=1)
    rows = {name: read_rows(tmp_path / "rows" / f"{name.replace(' ', '_')}.csv")
            for name in ("oracle IBM", "oracle IRM", "miscounter")}
    assert all(len(r) == 4 for r in rows.values())
    for item, row, irm_row in zip(speech_items, rows["miscounter"], rows["oracle IRM"]):
        refs, mix = item["sources"].numpy(), item["mix"].numpy()
        assert row["id"] == item["id"]
        true = count_aware_si_snri(refs, irm(item).numpy(), mix)
        est = count_aware_si_snri(refs, irm(item).numpy()[:2], mix)
        assert float(row["si_snri"]) == pytest.approx(true.mean_si_snri, abs=1e-5)
        assert float(row["si_snri_est"]) == pytest.approx(est.mean_si_snri, abs=1e-5)
        assert float(row["si_snri"]) == pytest.approx(float(irm_row["si_snri"]), abs=1e-6)
        assert int(row["n_est"]) == 2 and int(row["missed"]) == item["n_src"] - 2
        assert float(row["count_prob_true"]) == pytest.approx(0.7 if item["n_src"] == 2 else 0.3)
        for col in ("sdri", "siri", "pesq_nb", "stoi", "estoi", "rtf"):
            assert np.isfinite(float(row[col])), col
        if item["n_src"] == 3:  # the missed talker scores 0 dB: the mean drops by a third or more
            assert float(row["si_snri_est"]) < float(row["si_snri"]) * 0.8
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"] == [2, 3]
    mis = summary["results"]["miscounter"]
    assert mis["by_count"]["2"]["count_acc"] == 1.0 and mis["by_count"]["3"]["count_acc"] == 0.0
    assert mis["all"]["count_acc"] == 0.5
    assert mis["by_count"]["3"]["si_snri"] == pytest.approx(
        np.mean([float(r["si_snri"]) for r in rows["miscounter"] if r["n_src"] == "3"]), abs=1e-5)
    assert summary["confusion"]["miscounter"] == {"labels": [2, 3], "matrix": [[2, 0], [2, 0]]}
    ibm = summary["results"]["oracle IBM"]["all"]
    assert ibm["count_acc"] == 1.0 and ibm["si_snri"] > 8  # the oracle ceiling is high
    report = (tmp_path / "report.md").read_text()
    for text in ("## 2 talkers (2 mixtures)", "## 3 talkers (2 mixtures)", "## All counts (4 mixtures)",
                 "| oracle IBM |", "| miscounter |", "SI-SNRi est. count", "PESQ-NB", "Hungarian"):
        assert text in report
    plots = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "plots").rglob("*.png"))
    assert plots == ["plots/confusion_miscounter.png",
                     "plots/examples/mix000_2spk__miscounter.png",
                     "plots/examples/mix000_2spk__oracle_IBM.png",
                     "plots/examples/mix000_2spk__oracle_IRM.png",
                     "plots/si_snri_by_count.png", "plots/si_snri_est_by_count.png"]
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert res.summary == summary or res.summary["counts"] == summary["counts"]


def test_interrupted_run_resumes_without_duplicates(speech_items, tmp_path):
    options = MetricOptions(bss=False, pesq=False, stoi=False)
    crashing = Miscounter(speech_items, fail_after=2)
    with pytest.raises(RuntimeError, match="model crashed"):
        evaluate(speech_items, crashing.separate, tmp_path, name="m", progress=False, metrics=options,
                 plots=False)
    first = {name: read_rows(tmp_path / "rows" / f"{name}.csv") for name in ("m", "oracle_IBM")}
    assert [r["id"] for r in first["m"]] == [it["id"] for it in speech_items[:2]]
    assert len(first["oracle_IBM"]) == 2  # a mixture is written only when every system finished it
    assert not (tmp_path / "summary.json").exists()
    # a power cut in the middle of a line: the damaged line is dropped and that mixture redone
    with open(tmp_path / "rows" / "m.csv", "a") as f:
        f.write(f"{speech_items[2]['id']},3,2,0")
    working = Miscounter(speech_items)
    evaluate(speech_items, working.separate, tmp_path, name="m", progress=False, metrics=options, plots=False)
    assert working.calls == 2  # only the mixtures that were not done
    final = read_rows(tmp_path / "rows" / "m.csv")
    assert [r["id"] for r in final] == [it["id"] for it in speech_items]
    assert final[:2] == first["m"]
    assert len(read_rows(tmp_path / "rows" / "oracle_IBM.csv")) == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["results"]["m"]["all"]["n"] == 4


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(speech_items, tmp_path):
    options = MetricOptions(bss=True, pesq=False, stoi=False)
    items = speech_items[:2]
    for workers in (0, 1):
        evaluate_systems(items, [OracleMaskSystem("irm")], tmp_path / f"w{workers}", workers=workers,
                         progress=False, metrics=options, plots=False)
    rows0 = read_rows(tmp_path / "w0" / "rows" / "oracle_IRM.csv")
    rows1 = read_rows(tmp_path / "w1" / "rows" / "oracle_IRM.csv")
    drop = ("seconds", "rtf")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows0] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows1]


def write_dataset(items, root: Path) -> Path:
    """A jsonl mixture manifest (contract 2) and a wsj0-mix tree of the same mixtures."""
    lines = []
    for it in items:
        rel_mix = f"wav/{it['id']}/mix.wav"
        rel_src = [f"wav/{it['id']}/s{i + 1}.wav" for i in range(it["n_src"])]
        save_audio(root / rel_mix, it["mix"], 8000, subtype="FLOAT")
        for rel, src in zip(rel_src, it["sources"]):
            save_audio(root / rel, src, 8000, subtype="FLOAT")
        lines.append(json.dumps({"id": it["id"], "mixture_path": rel_mix, "source_paths": rel_src,
                                 "n_src": it["n_src"], "speakers": [], "gains_db": [], "sample_rate": 8000,
                                 "length": int(it["mix"].shape[-1]), "split": "tt"}))
        tree = root / "tree" / f"{it['n_src']}speakers" / "wav8k" / "min" / "tt"
        save_audio(tree / "mix" / f"{it['id']}.wav", it["mix"], 8000, subtype="FLOAT")
        for i, src in enumerate(it["sources"]):
            save_audio(tree / f"s{i + 1}" / f"{it['id']}.wav", src, 8000, subtype="FLOAT")
    (root / "manifest_tt.jsonl").write_text("\n".join(lines) + "\n")
    with open(root / "librimix_3spk.csv", "w", newline="") as f:  # LibriMix metadata, 3 talkers
        w = csv.writer(f)
        w.writerow(["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "source_3_path", "length"])
        for rec in map(json.loads, lines):
            if rec["n_src"] == 3:
                w.writerow([rec["id"], rec["mixture_path"], *rec["source_paths"], rec["length"]])
    return root / "manifest_tt.jsonl"


@pytest.mark.slow
def test_cli_scores_estimate_folders_like_the_same_system_in_memory(speech_items, tmp_path, capsys):
    manifest = write_dataset(speech_items, tmp_path / "data")
    est_dir = tmp_path / "other_toolkit"
    for it in speech_items:  # another program's output: IRM estimates, as files
        for k, wav in enumerate(irm(it)):
            save_audio(est_dir / it["id"] / f"s{k + 1}.wav", wav, 8000, subtype="FLOAT")
    out = tmp_path / "eval"
    rc = cli_main(["evaluate", "--estimates", f"files={est_dir}", "--data", str(manifest), "--out", str(out),
                   "--workers", "0", "--no-pesq", "--no-stoi", "--no-plots"])
    assert rc == 0
    files = read_rows(out / "rows" / "files.csv")
    memory = read_rows(out / "rows" / "oracle_IRM.csv")
    assert [r["id"] for r in files] == [it["id"] for it in speech_items]
    for a, b in zip(files, memory):
        for col in ("si_snri", "si_snri_est", "sdri", "siri", "n_est"):
            assert float(a[col]) == pytest.approx(float(b[col]), abs=1e-4), col
    assert "| files |" in (out / "report.md").read_text()
    # the wsj0-mix tree gives the same mixtures (ids are file names)
    out2 = tmp_path / "eval2"
    rc = cli_main(["evaluate", "--data", str(tmp_path / "data" / "tree"), "--out", str(out2), "--workers", "0",
                   "--no-pesq", "--no-stoi", "--no-plots", "--counts", "3"])
    assert rc == 0
    # LibriMix CSV: the same mixtures again
    out3 = tmp_path / "eval3"
    rc = cli_main(["evaluate", "--data", str(tmp_path / "data" / "librimix_3spk.csv"), "--out", str(out3),
                   "--workers", "0", "--no-pesq", "--no-stoi", "--no-plots", "--no-bss"])
    assert rc == 0
    by_id = {r["id"]: r for r in memory}
    for out_dir in (out2, out3):
        rows = read_rows(out_dir / "rows" / "oracle_IRM.csv")
        assert sorted(r["id"] for r in rows) == sorted(it["id"] for it in speech_items if it["n_src"] == 3)
        for r in rows:
            assert float(r["si_snri"]) == pytest.approx(float(by_id[r["id"]]["si_snri"]), abs=1e-5)


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["evaluate", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"voxsep: error: {tmp_path / 'nope'}: no such file or folder"
    assert cli_main(["evaluate", "--estimates", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    assert "estimates folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_evaluates_a_model_checkpoint(speech_items, tmp_path):
    from engine.checkpoint import save_checkpoint
    from separation.inference import Separator
    from separation.model import MulCatSeparator

    torch.manual_seed(0)
    config = dict(max_speakers=3, n_filters=32, kernel_size=16, stride=8, decoder_frame_length=16,
                  hidden_size=16, chunk_size=20, n_blocks=1)
    model = MulCatSeparator(config).eval()
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, task="separation", model_name="svoice_multihead", model_config=model.get_config(),
                    sample_rate=8000, model=model)
    manifest = write_dataset(speech_items[:2], tmp_path / "data")
    out = tmp_path / "eval"
    rc = cli_main(["evaluate", "--model", str(ckpt), "--model", f"again={ckpt}", "--data", str(manifest),
                   "--out", str(out), "--workers", "0", "--no-oracle", "--no-pesq", "--no-stoi", "--no-plots"])
    assert rc == 0
    rows = read_rows(out / "rows" / "tiny.csv")
    # a label names the system; same model, same scores (timings differ)
    untimed = lambda rs: [{k: v for k, v in r.items() if k not in ("rtf", "seconds")} for r in rs]  # noqa: E731
    assert untimed(read_rows(out / "rows" / "again.csv")) == untimed(rows)
    sep = Separator(model, sample_rate=8000)
    for it, row in zip(speech_items[:2], rows):
        with torch.no_grad():
            est, probs = sep.separate(it["mix"])
            est_true, _ = sep.separate(it["mix"], num_speakers=it["n_src"])
        refs, mix = it["sources"].numpy(), it["mix"].numpy()
        assert int(row["n_est"]) == est.shape[0]
        assert float(row["si_snri_est"]) == pytest.approx(count_aware_si_snri(refs, est.numpy(), mix).mean_si_snri,
                                                          abs=1e-4)
        assert float(row["si_snri"]) == pytest.approx(count_aware_si_snri(refs, est_true.numpy(), mix).mean_si_snri,
                                                      abs=1e-4)
        assert float(row["count_prob_true"]) == pytest.approx(float(probs[it["n_src"]]), abs=1e-5)
        assert float(row["rtf"]) > 0


def test_cli_runs_models_as_separate_does_with_windows(speech_items, tmp_path, capsys):
    """`--window S` (default: `voxsep separate`'s): longer mixtures are scored as separated window by
    window; `--window 0` is one pass whatever the length."""
    from engine.checkpoint import save_checkpoint
    from separation.inference import Separator
    from separation.model import MulCatSeparator

    torch.manual_seed(1)
    model = MulCatSeparator(dict(max_speakers=3, n_filters=32, kernel_size=16, stride=8, decoder_frame_length=16,
                                 hidden_size=16, chunk_size=20, n_blocks=1)).eval()
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, task="separation", model_name="svoice_multihead", model_config=model.get_config(),
                    sample_rate=8000, model=model)
    manifest = write_dataset(speech_items[:2], tmp_path / "data")
    common = ["--data", str(manifest), "--workers", "0", "--no-oracle", "--no-pesq", "--no-stoi", "--no-plots",
              "--no-bss"]
    assert cli_main(["evaluate", "--model", f"w={ckpt}", "--window", "0.6", "--overlap", "0.2",
                     "--out", str(tmp_path / "w"), *common]) == 0
    assert cli_main(["evaluate", "--model", f"one={ckpt}", "--window", "0", "--out", str(tmp_path / "one"),
                     *common]) == 0
    assert "windows of 0.6 s overlapping by 0.2 s" in (tmp_path / "w" / "report.md").read_text()
    assert "one pass per mixture" in (tmp_path / "one" / "report.md").read_text()
    windowed = Separator(model, sample_rate=8000, window=0.6, overlap=0.2)
    for it, row_w, row_one in zip(speech_items[:2], read_rows(tmp_path / "w" / "rows" / "w.csv"),
                                  read_rows(tmp_path / "one" / "rows" / "one.csv")):
        refs, mix = it["sources"].numpy(), it["mix"].numpy()
        with torch.no_grad():
            est_w = windowed.separate_windowed(it["mix"], num_speakers=it["n_src"])[0].numpy()
            est_one = model.separate(it["mix"], it["n_src"])[0].numpy()
        assert float(row_w["si_snri"]) == pytest.approx(count_aware_si_snri(refs, est_w, mix).mean_si_snri, abs=1e-4)
        assert float(row_one["si_snri"]) == pytest.approx(count_aware_si_snri(refs, est_one, mix).mean_si_snri,
                                                          abs=1e-4)
        assert abs(float(row_w["si_snri"]) - float(row_one["si_snri"])) > 1e-3
    capsys.readouterr()
    assert cli_main(["evaluate", "--model", str(ckpt), "--window", "1", "--overlap", "0.5",
                     "--out", str(tmp_path / "bad"), *common]) == 2
    assert capsys.readouterr().err.strip() == "voxsep: error: --window (1.0 s) must be 0 or longer than twice --overlap (0.5 s)"
    assert not (tmp_path / "bad").exists()


def test_scoring_never_raises_on_edge_cases(speech_items):
    from evaluation import SystemOutput, score_outputs

    opts = MetricOptions()
    item = speech_items[1]
    refs, mix = item["sources"].numpy().astype(np.float64), item["mix"].numpy().astype(np.float64)
    good = irm(item).numpy()
    # NaN samples in one estimate: scored as silence, noted
    bad = good.copy()
    bad[0, 100:200] = np.nan
    row = score_outputs(refs, mix, SystemOutput(bad, bad, 0.1), 8000, opts)
    assert "NaN/Inf" in row["note"] and np.isfinite(row["si_snri"]) and np.isfinite(row["sdri"])
    # a silent reference: undefined for that talker, the others still count
    silent = refs.copy()
    silent[2] = 0
    row = score_outputs(silent, silent.sum(0), SystemOutput(good, good, 0.1), 8000, opts)
    assert "silent reference" in row["note"] and np.isfinite(row["si_snri"]) and np.isfinite(row["sdr"])
    # too short for bss_eval (and PESQ/STOI): NaN with a note, SI-SNR still defined
    short = score_outputs(refs[:, :300], mix[:300], SystemOutput(good[:, :300], good[:, :300], 0.1), 8000, opts)
    assert np.isnan(short["sdr"]) and np.isnan(short["pesq_nb"]) and np.isnan(short["stoi"])
    assert "bss_eval: input too short" in short["note"] and np.isfinite(short["si_snri"])
    # no estimate at all (a silent-input answer of 0 talkers) and a 1-sample mixture
    none = score_outputs(refs, mix, SystemOutput(np.zeros((0, mix.size)), None, 0.1), 8000, opts)
    assert none["si_snri_est"] == 0.0 and none["missed"] == 3 and "no true-count output" in none["note"]
    tiny = score_outputs(refs[:, :1], mix[:1], SystemOutput(good[:, :1], good[:, :1], 0.1), 8000, opts)
    assert "too short" in tiny["note"] and np.isnan(tiny["si_snri"])


def test_unequal_output_length_is_padded_or_truncated(speech_items):
    item = dict(speech_items[0])
    n = item["mix"].shape[-1]
    short = CallableSystem("short", lambda mix: irm(item)[:, : n - 800]).run(item)
    long = CallableSystem("long", lambda mix: torch.nn.functional.pad(irm(item), (0, 500))).run(item)
    assert short.est.shape == long.est.shape == (2, n)
    assert np.all(short.est[:, n - 800:] == 0)
    np.testing.assert_array_equal(long.est, irm(item).numpy())


def test_resuming_with_other_metric_options_is_refused(speech_items, tmp_path):
    from frontend import VoxsepError

    items = speech_items[:1]
    evaluate_systems(items, [OracleMaskSystem("irm")], tmp_path, progress=False, plots=False,
                     metrics=MetricOptions(bss=False, pesq=False, stoi=False))
    with pytest.raises(VoxsepError, match="written with other columns"):
        evaluate_systems(items, [OracleMaskSystem("irm")], tmp_path, progress=False, plots=False,
                         metrics=MetricOptions(bss=True, pesq=False, stoi=False))


def test_row_log_recovers_from_a_crash_at_any_point(tmp_path):
    from evaluation.runner import RowLog

    path = tmp_path / "rows.csv"
    path.write_text("")  # killed right after creating the file
    log = RowLog(path, ["id", "x"])
    log.append({"id": "a", "x": 1.5})
    assert path.read_text() == "id,x\na,1.500000\n"
    with open(path, "a") as f:
        f.write("b,2.0\nb,2.0\nc,")  # a duplicate line and a half-written one
    log = RowLog(path, ["id", "x"])
    assert list(log.rows) == ["a", "b"] and "c" not in log
    assert path.read_text() == "id,x\na,1.500000\nb,2.0\n"


def test_missing_eval_extra_drops_the_columns(speech_items, tmp_path, monkeypatch):
    import evaluation.runner as runner

    monkeypatch.setattr(runner, "available_perceptual", lambda: {"pesq": False, "stoi": False})
    evaluate_systems(speech_items[:1], [OracleMaskSystem("irm")], tmp_path, progress=False, plots=False)
    header = (tmp_path / "rows" / "oracle_IRM.csv").read_text().splitlines()[0].split(",")
    assert "sdri" in header and not {"pesq_nb", "pesq_wb", "stoi", "estoi"} & set(header)
    report = (tmp_path / "report.md").read_text()
    assert "SDRi" in report and "PESQ" not in report and "STOI" not in report


def test_one_clean_talker_reports_si_snr_not_an_improvement(speech_items):
    from evaluation import SystemOutput, score_outputs

    opts = MetricOptions(bss=False, pesq=False, stoi=False)
    ref = speech_items[0]["sources"].numpy().astype(np.float64)[:1]
    mix = ref[0].copy()
    est = 0.5 * ref + 0.01 * np.random.default_rng(0).standard_normal(ref.shape)
    row = score_outputs(ref, mix, SystemOutput(est, est, 0.1), 8000, opts)
    expected = 10 * np.log10(np.sum((0.5 * ref) ** 2) / np.sum((est - 0.5 * ref) ** 2))  # est is already scaled
    assert np.isnan(row["si_snri"]) and np.isnan(row["si_snri_est"])
    assert abs(row["si_snr"] - expected) < 0.05 and "one clean talker" in row["note"]
    row = score_outputs(ref, mix, SystemOutput(est, est, 0.1), 8000, MetricOptions(bss=True, pesq=False, stoi=False))
    assert np.isnan(row["sdri"]) and np.isfinite(row["sdr"])
    # with noise in the mixture the improvement is defined again
    noisy = mix + 0.1 * np.random.default_rng(1).standard_normal(mix.shape)
    row = score_outputs(ref, noisy, SystemOutput(est, est, 0.1), 8000, opts)
    assert np.isfinite(row["si_snri"]) and row["si_snri"] > 0
