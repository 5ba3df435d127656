"""voxsep campaign: validation points of runs in one log, CPU-hours chained across runs, a plot."""
from __future__ import annotations

import json

from voxsep.campaign import read_log
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
