"""The training-throughput part of the separation benchmark (`python -m bench.separation --parts train`)."""
import json

import pytest

from bench.separation import bench_train
from bench.separation import main as bench_main


def test_bench_train_one_row_per_model_and_precision():
    rows = bench_train(1, ["ours_real"], batch_size=1, segment=0.5, precisions=("32", "bf16-mixed"))
    assert [(r["model"], r["precision"]) for r in rows] == [("ours_real", "32"), ("ours_real", "bf16-mixed")]
    for r in rows:
        assert r["batch"] == 1 and r["segment_s"] == 0.5
        assert r["step_s_median"] > 0 and r["step_cpu_s_median"] > 0
        assert r["samples_per_s"] == pytest.approx(1 / r["step_s_median"], rel=0.01)


def test_bench_train_rejects_unknown_precision():
    with pytest.raises(ValueError, match="16-mixed"):
        bench_train(1, ["ours_real"], batch_size=1, segment=0.5, precisions=("16-mixed",))


def test_bench_separation_train_part_writes_rows(tmp_path, capsys):
    out = tmp_path / "sep.json"
    assert bench_main(["--parts", "train", "--train-models", "ours_real", "--train-batch", "1",
                       "--train-segment", "0.5", "--train-steps", "1", "--train-precision", "32,bf16-mixed",
                       "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["train"]
    assert {r["precision"] for r in rows} == {"32", "bf16-mixed"}
    assert "bf16-mixed" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value", [("--train-precision", "fp8"), ("--train-models", "nope")])
def test_bench_separation_train_part_bad_option_exits_2(tmp_path, flag, value):
    with pytest.raises(SystemExit) as err:
        bench_main(["--parts", "train", flag, value, "--out", str(tmp_path / "x.json")])
    assert err.value.code == 2
