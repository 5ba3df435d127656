"""voxsep campaign: validation points of runs in one log, CPU-hours chained across runs, a plot."""
from __future__ import annotations

import json

from voxsep.campaign import panels, read_log
from voxsep.cli import main


def _run(folder, points):
    folder.mkdir(parents=True)
    lines = [{"event": "start", "step": 0, "cpu_s": 0.0}]
    lines += [{"epoch": i, "step": step, "cpu_s": cpu, "val/si_snri": snr, "val/count_acc_est": acc}
              for i, (step, cpu, snr, acc) in enumerate(points)]
    lines.append({"epoch": 9, "step": 999, "train/loss": 1.0})  # an epoch without validation: skipped
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def test_campaign_log_chains_runs_and_is_idempotent(tmp_path, capsys):
    log, png = tmp_path / "campaign.jsonl", tmp_path / "curve.png"
    first = _run(tmp_path / "r01", [(100, 1800.0, 1.0, 0.3), (200, 3600.0, 2.0, 0.5)])
    assert main(["campaign", str(log), "--run", str(first)]) == 0
    assert main(["campaign", str(log), "--run", str(first), "--note", "again"]) == 0  # replaces, not appends
    second = _run(tmp_path / "r02", [(50, 720.0, 2.5, 0.6)])
    assert main(["campaign", str(log), "--run", str(second), "--after", "r01", "--after-step", "100",
                 "--plot", str(png)]) == 0
    points = read_log(log)
    assert [(p["run"], p["step"]) for p in points] == [("r01", 100), ("r01", 200), ("r02", 50)]
    assert [p["campaign_cpu_h"] for p in points] == [0.5, 1.0, 0.5 + 0.2]
    assert points[0]["note"] == "again" and points[2]["after"] == "r01"
    assert png.stat().st_size > 10_000
    assert "r02: 1 points, last at 0.70 campaign CPU-hours" in capsys.readouterr().out
    assert main(["campaign", str(log), "--run", str(tmp_path / "r03"), "--after", "r09"]) == 2
    assert read_log(log) == points  # nothing written on error


def test_campaign_panels_follow_the_task(tmp_path):
    """Separation logs plot SI-SNRi and count accuracy; a denoiser's SI-SNRi alone; a vocoder's loss."""
    separation = [{"run": "r", "campaign_cpu_h": 0.1, "val/si_snri": 2.0, "val/count_acc": 0.5, "val/loss": -3.0}]
    denoiser = [{"run": "d", "campaign_cpu_h": 0.1, "val/si_snri": 4.0, "val/loss": -9.0}]
    vocoder = [{"run": "v", "campaign_cpu_h": 0.1, "val/loss": 3.2}, {"run": "v", "campaign_cpu_h": 0.2}]
    assert [k for k, _ in panels(separation)] == ["val/si_snri", "count"]
    assert panels(denoiser) == [("val/si_snri", "validation SI-SNRi (dB)")]
    assert [k for k, _ in panels(vocoder)] == ["val/loss"]
    assert panels([{"run": "x", "campaign_cpu_h": 0.1}]) == []
    folder = tmp_path / "v01"
    folder.mkdir()
    history = [{"epoch": i, "step": 250 * (i + 1), "cpu_s": 900.0 * (i + 1), "val/loss": 3.0 - 0.1 * i}
               for i in range(3)]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    log, png = tmp_path / "vocoder.jsonl", tmp_path / "vocoder.png"
    assert main(["campaign", str(log), "--run", str(folder), "--plot", str(png)]) == 0
    assert [p["val/loss"] for p in read_log(log)] == [3.0, 2.9, 2.8]
    assert png.stat().st_size > 10_000
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"run": "x", "step": 1, "campaign_cpu_h": 0.1}) + "\n")
    assert main(["campaign", str(empty), "--plot", str(tmp_path / "none.png")]) == 2
    assert not (tmp_path / "none.png").exists()
