"""engine.train / `voxsep train`: run folder, checkpoints, history, auto-resume, kill -9, DDP."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint, model_from_checkpoint
from engine.config import read_yaml, resolve_config
from engine.train import AtomicCheckpointIO, read_history, train
from frontend.errors import VoxsepError
from tests.engine import toy_task
from voxsep.cli import main
from tests.engine.conftest import REPO, run_voxsep, toy_config, voxsep_cmd, voxsep_env, write_config


def _epochs(run_dir):
    return [r for r in read_history(run_dir) if "event" not in r]


def _val_mse(model, n_valid=16):
    valid = toy_task.ToyRegressionTask().build_datasets({"n_valid": n_valid}, 8000)[1]
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(valid.x), valid.y).item()


def test_training_writes_the_run_folder_and_learns(tmp_path):
    run_dir = tmp_path / "run"
    config = toy_config(run_dir, max_epochs=4)
    assert train(config) == run_dir
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "last.ckpt", "last.pt", "best.pt", "history.jsonl", "logs"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temp files left
    assert read_yaml(run_dir / "config.yaml") == resolve_config(config)

    epochs = _epochs(run_dir)
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3] and [r["step"] for r in epochs] == [8, 16, 24, 32]
    # StepLR(step_size=2, gamma=0.9): the lr used in each epoch
    assert [r["lr"] for r in epochs] == pytest.approx([0.05, 0.05, 0.045, 0.045])
    val = [r["val/loss"] for r in epochs]
    assert val[-1] < val[0] / 5, val
    assert all(r["val/mse"] == pytest.approx(r["val/loss"]) for r in epochs)
    assert [r["train/data_epoch"] for r in epochs] == [0, 1, 2, 3]  # set_epoch called every epoch
    assert epochs[-1]["train/loss"] < epochs[0]["train/loss"] / 5

    # CSV log: per-step training loss and per-epoch validation loss, matching the history
    (metrics_csv,) = (run_dir / "logs").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics_csv.open()))
    steps = [r for r in rows if r.get("train/loss")]
    assert len(steps) == 32 // 2  # log_every_n_steps: 2
    logged_val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert logged_val == pytest.approx(val)

    # last.pt = the final model; best.pt = the model with the lowest validation loss, which it reproduces
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")
    assert last["step"] == 32 and last["task"] == "toy_regression" and last["model_name"] == "toy_linear"
    assert last["model_config"] == {"in_features": 4, "out_features": 1, "extra_head": False}  # defaults filled
    assert last["train_config"] == resolve_config(config)
    best_epoch = min(epochs, key=lambda r: r["val/loss"])
    assert best["step"] == best_epoch["step"]
    assert best["metrics"]["best/val/loss"] == pytest.approx(best_epoch["val/loss"])
    assert _val_mse(model_from_checkpoint(best)) == pytest.approx(best_epoch["val/loss"], rel=1e-5)
    lightning = torch.load(run_dir / "last.ckpt", weights_only=True)
    assert lightning["global_step"] == 32 and lightning["voxsep_config"] == resolve_config(config)

    # re-running the finished run does no more steps and leaves its files as they were
    before = read_history(run_dir)
    last_bytes = (run_dir / "last.pt").read_bytes()
    train(config)
    assert read_history(run_dir) == before
    assert (run_dir / "last.pt").read_bytes() == last_bytes

    # longer run: resumes at step 32 and goes on; a change that matters is refused
    with pytest.raises(VoxsepError, match=r"cannot resume, the config changed \(optim.lr: 0.05 -> 0.01\)"):
        train({**config, "optim": {**config["optim"], "lr": 0.01}})
    # (in another precision: a run moves between a GPU's 16-mixed and a CPU's 32 or bf16-mixed)
    train(toy_config(run_dir, max_epochs=5, precision="bf16-mixed"))
    assert [r["step"] for r in _epochs(run_dir)] == [8, 16, 24, 32, 40]
    assert load_checkpoint(run_dir / "last.pt")["step"] == 40
    assert load_checkpoint(run_dir / "last.pt")["state_dict"]["linear.weight"].dtype == torch.float32
    saved = read_yaml(run_dir / "config.yaml")["trainer"]
    assert saved["max_epochs"] == 5 and saved["precision"] == "bf16-mixed"


def test_validation_every_other_epoch(tmp_path):
    config = toy_config(tmp_path / "run", max_epochs=4, val_every_n_epochs=2)
    train(config)
    epochs = _epochs(tmp_path / "run")
    assert ["val/loss" in r for r in epochs] == [False, True, False, True]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["step"] in (16, 32)
    assert best["metrics"]["best/val/loss"] == pytest.approx(min(r["val/loss"] for r in epochs if "val/loss" in r))


def test_without_validation_best_follows_training_loss(tmp_path):
    config = toy_config(tmp_path / "run", max_epochs=2, num_workers=1)
    config["data"]["n_valid"] = 0
    config["optim"]["scheduler"] = {"name": "cosine"}
    train(config)
    epochs = _epochs(tmp_path / "run")
    assert [r["lr"] for r in epochs] == pytest.approx([0.05, 0.025])  # cosine, T_max = max_epochs = 2
    assert not any(k.startswith("val/") for r in epochs for k in r)
    assert [r["train/data_epoch"] for r in epochs] == [0, 1]  # a DataLoader worker sees set_epoch too
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["metrics"]["best/train/loss_epoch"] == pytest.approx(min(r["train/loss"] for r in epochs))


def test_cosine_steps_decays_at_every_optimizer_step(tmp_path):
    config = toy_config(tmp_path / "run", max_epochs=2)
    config["optim"]["scheduler"] = {"name": "cosine_steps", "t_max": 32, "eta_min": 0.0}
    train(config)
    epochs = _epochs(tmp_path / "run")
    lr0 = epochs[0]["lr"]
    steps = epochs[0]["step"]  # steps per epoch
    assert epochs[1]["lr"] == pytest.approx(lr0 * (1 + math.cos(math.pi * steps / 32)) / 2)
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["lr_schedulers"][0]
    assert state["last_epoch"] == 2 * steps  # stepped per optimizer step; the epoch cosine steps twice
    assert state["_last_lr"][0] == pytest.approx(lr0 * (1 + math.cos(math.pi * 2 * steps / 32)) / 2)
    config = toy_config(tmp_path / "other", max_epochs=2)
    config["optim"]["scheduler"] = {"name": "cosine_steps"}  # no t_max and no max_steps
    with pytest.raises(VoxsepError, match="t_max .steps. must be set"):
        train(config)


def test_atomic_checkpoint_io_never_leaves_a_partial_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise KeyboardInterrupt  # like a kill in the middle of the write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_the_saved_step(tmp_path):
    run_dir = tmp_path / "run"
    config = toy_config(run_dir, max_epochs=6, checkpoint_every_n_steps=4)
    config["data"]["delay_s"] = 0.01  # ~0.1 s a step: the kill lands mid-run
    path = write_config(tmp_path / "toy.yaml", config)
    proc = subprocess.Popen(voxsep_cmd("train", str(path)), cwd=REPO, env=voxsep_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "last.ckpt").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.02)
        time.sleep(0.15)  # let it get into the next steps
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved_step = torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"]
    assert saved_step % 4 == 0 and 4 <= saved_step < 48
    # last.pt is written just before last.ckpt: a kill between the two leaves it one interval ahead
    assert load_checkpoint(run_dir / "last.pt")["step"] in (saved_step, saved_step + 4)

    result = run_voxsep("train", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"run dir: {run_dir}" in result.stdout and "best val/loss:" in result.stdout
    history = read_history(run_dir)
    resume = [r for r in history if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == saved_step
    steps = [r["step"] for r in history if "event" not in r]
    assert steps == sorted(set(steps)) and steps[-1] == 48  # no epoch logged twice, run finished
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(run_dir / name)["model_name"] == "toy_linear"
    assert load_checkpoint(run_dir / "last.pt")["step"] == 48
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"] == 48
    assert not list(run_dir.glob(".*"))  # stale temp files are cleaned up


def test_voxsep_train_cli(tmp_path, capsys):
    path = write_config(tmp_path / "toy.yaml", toy_config(tmp_path / "run", max_epochs=1))
    assert main(["train", str(path), "trainer.max_epoch=3"]) == 2
    known = ", ".join(resolve_config(toy_config(tmp_path))["trainer"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"voxsep: error: {path}: unknown key trainer.max_epoch (known: {known})")
    assert not (tmp_path / "run").exists()
    bad_task = write_config(tmp_path / "bad.yaml", {**toy_config(tmp_path / "run"), "task": "no_such_task"})
    assert main(["train", str(bad_task)]) == 2
    assert "unknown task 'no_such_task' (known tasks:" in capsys.readouterr().err
    # overrides and --run-dir reach the run; stdout names the run folder and the best metric
    assert main(["train", str(path), "trainer.max_epochs=2", "--run-dir", str(tmp_path / "cli"), "optim.lr=1e-2"]) == 0
    out = capsys.readouterr().out.splitlines()
    best = load_checkpoint(tmp_path / "cli" / "best.pt")
    assert out[0] == f"run dir: {tmp_path / 'cli'}"
    assert out[1].startswith(f"best val/loss: {best['metrics']['best/val/loss']:.6g} (step {best['step']},")
    saved = read_yaml(tmp_path / "cli" / "config.yaml")
    assert saved["optim"]["lr"] == 0.01 and saved["trainer"]["max_epochs"] == 2
    assert saved["run_dir"] == str(tmp_path / "cli") and not (tmp_path / "run").exists()
    assert main(["train", str(path), "a=1", "--bogus"]) == 2
    assert "voxsep: error: voxsep train: unknown option --bogus" in capsys.readouterr().err


_PRIORITY_PROBE = """
import json, os
from voxsep.commands.train import lower_priority
group = "/proc/self/autogroup"
before = open(group).read() if os.path.exists(group) else None
done = lower_priority()
after = open(group).read() if os.path.exists(group) else None
print(json.dumps({"done": done, "nice": os.nice(0), "before": before, "after": after}))
"""


def _priority_probe(new_session: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", _PRIORITY_PROBE], cwd=REPO, env=voxsep_env(), check=True,
                         capture_output=True, text=True, start_new_session=new_session).stdout
    return json.loads(out)


def test_background_priority_lowers_nice_and_only_its_own_session_group():
    # its own session (setsid): nice 19, and the scheduler group's nice too where Linux has autogroup
    alone = _priority_probe(new_session=True)
    assert alone["nice"] == 19 and "nice" in alone["done"]
    if alone["before"] is not None and "autogroup" in alone["done"]:
        assert alone["after"].split()[-2:] == ["nice", "19"]
    # in the caller's session the group (shared with the caller) is never touched
    shared = _priority_probe(new_session=False)
    assert shared["nice"] == 19 and shared["done"] == ["nice"]
    assert shared["after"] == shared["before"]


def test_voxsep_train_background_option_runs_at_nice_19(tmp_path):
    path = write_config(tmp_path / "toy.yaml", toy_config(tmp_path / "run", max_epochs=1))
    probe = tmp_path / "nice.txt"
    # the trained run is the probe: the run's own process reports its nice value through a task module
    module = tmp_path / "nice_probe.py"
    module.write_text(f"import os\nopen({str(probe)!r}, 'w').write(str(os.nice(0)))\n")
    env = voxsep_env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    subprocess.run(voxsep_cmd("train", str(path), "--background", "--task-module", "nice_probe"), cwd=REPO, env=env,
                   check=True, capture_output=True)
    assert probe.read_text() == "19"
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] > 0


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    run_dir = tmp_path / "ddp"
    config = toy_config(run_dir, max_epochs=2, strategy="ddp", devices=2)
    # the processes differ: rank 0 alone uses a second head and reports an extra metric
    config["task_options"] = {"uneven": True}
    config["model"]["config"]["extra_head"] = True
    path = write_config(tmp_path / "toy.yaml", config)
    result = run_voxsep("train", str(path), timeout=240)  # a DDP deadlock fails here
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run dir:") == 1  # only rank 0 reports
    history = read_history(run_dir)
    assert history[0]["event"] == "start" and history[0]["world_size"] == 2
    epochs = [r for r in history if "event" not in r]
    # 64 examples, batch 8, split over 2 processes: 4 steps an epoch
    assert [r["step"] for r in epochs] == [4, 8]
    assert all(r["train/rank0_only"] == 1.0 and r["val/rank0_only"] == 1.0 for r in epochs)
    assert all(r["val/mse"] == pytest.approx(r["val/loss"]) for r in epochs)
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 8 and last["train_config"]["trainer"]["devices"] == 2
    assert load_checkpoint(run_dir / "best.pt")["model_config"]["extra_head"] is True
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"] == 8


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    config = toy_config(tmp_path / "run", max_epochs=1)
    config["task_options"] = {"loss_scale": float("nan")}
    with pytest.raises(VoxsepError, match=r"run: training loss is nan at step 0 \(epoch 0\); lower optim.lr"):
        train(config)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unreadable_resume_checkpoint_is_one_clear_error(tmp_path):
    config = toy_config(tmp_path / "run", max_epochs=1)
    train(config)
    last = tmp_path / "run" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(VoxsepError, match=f"{last}: cannot resume from it .*; delete it to start the run over"):
        train({**config, "trainer": {**config["trainer"], "max_epochs": 2}})
    torch.save({"step": 3}, last)
    with pytest.raises(VoxsepError, match=f"{last}: not a Lightning training checkpoint"):
        train(config)


def test_max_time_stops_and_a_longer_limit_resumes(tmp_path):
    config = toy_config(tmp_path / "run", max_epochs=3, max_time_minutes=0.01)  # 0.6 s of training
    config["data"]["delay_s"] = 0.005  # >= 0.04 s a step: 24 steps take > 0.96 s
    train(config)
    stopped = load_checkpoint(tmp_path / "run" / "last.pt")["step"]
    assert 0 < stopped < 24
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["global_step"] == stopped
    # Lightning ends the interrupted epoch there; a re-run with a longer limit starts the next one
    done = state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"]
    assert done == -(-stopped // 8)
    config["trainer"]["max_time_minutes"] = None
    train(config)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == stopped + 8 * (3 - done)
    resume = [r for r in read_history(tmp_path / "run") if r.get("event") == "resume"]
    assert [r["step"] for r in resume] == [stopped]


def test_ema_weights_are_validated_saved_and_resumed(tmp_path):
    """trainer.ema_decay: best.pt/last.pt hold the moving average (validated), last.ckpt holds both;
    the average's validation loss is the logged one; a resumed run goes on averaging."""
    run_dir = tmp_path / "run"
    config = toy_config(run_dir, max_epochs=2, ema_decay=0.9)
    train(config)
    state = torch.load(run_dir / "last.ckpt", weights_only=True)
    ema = next(v for k, v in state["callbacks"].items() if k.startswith("RunFiles"))["ema"]
    raw = {k[len("model."):]: v for k, v in state["state_dict"].items()}
    last = load_checkpoint(run_dir / "last.pt")["state_dict"]
    assert all(torch.equal(last[k], ema[k]) for k in last)
    assert not torch.equal(last["linear.weight"], raw["linear.weight"])
    # the logged validation loss is that of the averaged weights (best.pt = the average at that step)
    best = load_checkpoint(run_dir / "best.pt")
    task = toy_task.ToyRegressionTask()
    model = build_model("toy_linear", best["model_config"])
    model.load_state_dict(best["state_dict"])
    valid = task.build_datasets(config["data"], 8000)[1]
    batch = task.collate([valid[i] for i in range(len(valid))])
    with torch.no_grad():
        loss = float(task.loss(model, batch)[0])
    logged = min(r["val/loss"] for r in read_history(run_dir) if "val/loss" in r)
    assert loss == pytest.approx(logged, rel=1e-4)
    # resumed with one more epoch: the average continues from the saved one
    train(toy_config(run_dir, max_epochs=3, ema_decay=0.9))
    assert [r["step"] for r in read_history(run_dir) if r.get("event") == "resume"] == [16]
    again = load_checkpoint(run_dir / "last.pt")["state_dict"]
    assert not torch.equal(again["linear.weight"], last["linear.weight"])
    with pytest.raises(VoxsepError, match="ema_decay must be between 0 and 1"):
        train(toy_config(tmp_path / "bad", ema_decay=1.5))
