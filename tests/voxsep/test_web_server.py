"""`voxsep serve` without a browser: the service (queue, limits, expiry, forced count, denoiser)
and the HTTP app (paths outside the work folder refused, bad uploads answered with a message, the
server still serving), and the command (missing extra, a taken port, a real process)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import soundfile as sf
import torch

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from voxsep.cli import main  # noqa: E402
from voxsep.web.jobs import (  # noqa: E402
    JobNotFound, Limits, SeparationService, WebError, display_name, download_stem, format_duration,
)

from .conftest import running_server  # noqa: E402

HEADERS = {"X-Requested-With": "voxsep"}


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request with ``path`` sent exactly as given (no normalisation); ``(status, headers, body)``."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def upload(url: str, path: Path, name: str | None = None, **params) -> tuple[int, dict]:
    query = urllib.parse.urlencode({"name": name or path.name, **params})
    status, _, body = request(url, "POST", f"/api/jobs?{query}", path.read_bytes(), HEADERS)
    return status, json.loads(body)


def wait_done(url: str, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request(url, "GET", f"/api/jobs/{job_id}")
        job = json.loads(body)
        if status != 200 or job["state"] in ("done", "error"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def submit_file(service: SeparationService, path: Path, **kwargs):
    job = service.create_job(path.name)
    job.input_path.write_bytes(path.read_bytes())
    service.submit(job, **kwargs)
    return job


# ------------------------------------------------------------------------------------------------
# HTTP: a separation, and nothing outside the work folder
# ------------------------------------------------------------------------------------------------
def test_upload_separates_and_serves_the_talkers(web_url, web_service, web_recordings):
    status, job = upload(web_url, web_recordings["two"])
    assert status == 201 and job["state"] in ("queued", "running") and job["name"] == "two talkers.wav"
    job = wait_done(web_url, job["id"])
    assert job["state"] == "done", job["message"]
    result = job["result"]
    count = result["count"]
    assert 1 <= count <= 5 and len(result["sources"]) == count
    assert len(result["probabilities"]) == 6 and abs(sum(result["probabilities"]) - 1) < 1e-3
    assert count == max(range(6), key=lambda k: result["probabilities"][k])
    assert str(web_service.work_dir) not in json.dumps(job)  # no server path reaches the page
    status, _, png = request(web_url, "GET", result["mixture_spectrogram"])
    assert status == 200 and png.startswith(b"\x89PNG")
    for k, source in enumerate(result["sources"], start=1):
        assert source["filename"] == f"two_talkers_s{k}.wav"
        status, headers, wav = request(web_url, "GET", source["download"])
        assert status == 200 and wav[:4] == b"RIFF"
        assert headers["content-disposition"] == f'attachment; filename="two_talkers_s{k}.wav"'
        assert headers["x-content-type-options"] == "nosniff"
        on_disk, sr = sf.read(web_service.work_dir / job["id"] / "out" / f"s{k}.wav")
        assert sr == 8000 and abs(len(on_disk) / sr - result["duration"]) < 0.01
        status, _, png = request(web_url, "GET", source["spectrogram"])
        assert status == 200 and png.startswith(b"\x89PNG")


def test_no_path_outside_the_work_folder_is_served(web_url, web_service, web_recordings):
    secret = web_service.work_dir.parent / "secret.txt"
    secret.write_text("TOPSECRET")
    status, job = upload(web_url, web_recordings["two"])
    job = wait_done(web_url, job["id"])
    assert job["state"] == "done"
    good = job["id"]
    status, _, wav = request(web_url, "GET", f"/files/{good}/s1.wav")
    assert status == 200 and wav[:4] == b"RIFF"
    attempts = [
        "/files/../secret.txt", "/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/files/..%2fsecret.txt", "/files/%2E%2E%2Fsecret.txt",
        "/files/..%5c..%5csecret.txt", "/files//etc/passwd", "/files/%2fetc%2fpasswd", "/files/etc/passwd",
        f"/files/{good}/../../secret.txt", f"/files/{good}/..%2f..%2fsecret.txt",
        f"/files/{good}/%2e%2e%2f%2e%2e%2fsecret.txt", f"/files/{good}/%2e%2e/%2e%2e/secret.txt",
        f"/files/{good}%2f..%2f..%2fsecret.txt", f"/files/{good}/%2fetc%2fpasswd", f"/files/{good}//etc/passwd",
        f"/files/{good}/..%252f..%252fsecret.txt", f"/files/{good}/s1.wav%00.png", f"/files/{good}/s1.wav/..",
        f"/files/{good}/input.wav", f"/files/{good}/out/s1.wav", f"/files/{good}/summary.json",
        f"/files/{good}/../{good}/input.wav", f"/files/{good.upper()}/s1.wav", f"/files/{good}x/s1.wav",
        "/static/../secret.txt", "/static/..%2fapp.py", "/static/%2e%2e%2fjobs.py", "/static/app.py",
        "/../secret.txt", "/%2e%2e/secret.txt", "/api/jobs/..%2f..%2fsecret.txt", "/api/jobs/../../secret.txt",
    ]
    for path in attempts:
        status, _, body = request(web_url, "GET", path)
        assert status in (400, 404), (path, status)
        assert b"TOPSECRET" not in body and b"root:" not in body and b"import" not in body, path
    # the service refuses the same names whatever the transport
    for name in ("../secret.txt", "../../etc/passwd", "/etc/passwd", "s1.wav/..", "input.wav", "summary.json"):
        with pytest.raises(JobNotFound):
            web_service.result_file(good, name)
    for job_id in ("..", "../..", good[:-1], good + "0", "/etc", good.upper()):
        with pytest.raises(JobNotFound):
            web_service.result_file(job_id, "s1.wav")
    # nothing was written outside the work folder: only job folders with random names inside it
    assert sorted(p.name for p in web_service.work_dir.parent.iterdir()) == ["secret.txt", "work"]
    assert all(len(p.name) == 32 for p in web_service.work_dir.iterdir())


@pytest.mark.parametrize("key, reason", [
    ("corrupt", "not a readable audio file"),
    ("text", "not a readable audio file"),
    ("empty", "empty file (0 bytes)"),
])
def test_a_bad_upload_gets_one_line_and_the_server_keeps_serving(web_url, web_service, web_recordings, key, reason):
    before = set(os.listdir(web_service.work_dir))
    status, body = upload(web_url, web_recordings[key])
    assert status == 400
    assert body["error"].startswith(f"{web_recordings[key].name}: {reason}")
    assert "\n" not in body["error"] and str(web_service.work_dir) not in body["error"]
    assert set(os.listdir(web_service.work_dir)) == before  # the refused upload is deleted at once
    assert request(web_url, "GET", "/api/info")[0] == 200


def test_a_file_that_fails_while_separating_ends_its_job_and_the_next_one_runs(web_url, web_recordings):
    status, bad = upload(web_url, web_recordings["truncated"])
    assert status == 201  # its header reads; its data does not
    status, good = upload(web_url, web_recordings["two_b"])
    bad, good = wait_done(web_url, bad["id"]), wait_done(web_url, good["id"])
    assert bad["state"] == "error" and bad["result"] is None
    assert bad["message"].startswith("truncated.flac: cannot decode audio") and "/" not in bad["message"]
    assert good["state"] == "done" and good["result"]["count"] >= 1
    assert request(web_url, "GET", f"/files/{bad['id']}/s1.wav")[0] == 404


def test_requests_from_other_sites_are_refused(web_url, web_recordings):
    wav = web_recordings["two"].read_bytes()
    status, _, body = request(web_url, "POST", "/api/jobs?name=x.wav", wav)  # no X-Requested-With
    assert status == 403 and b"x-requested-with" in body
    status, _, _ = request(web_url, "GET", "/api/info", headers={"Host": "evil.example:8000"})
    assert status == 400  # DNS rebinding: only loopback host names are answered
    assert request(web_url, "GET", "/api/info", headers={"Host": "localhost:1234"})[0] == 200
    status, _, page = request(web_url, "GET", "/")
    assert status == 200 and b"voxsep" in page


def test_forced_count_reruns_the_same_upload(web_url, web_recordings):
    status, job = upload(web_url, web_recordings["two"])
    first = wait_done(web_url, job["id"])
    status, _, body = request(web_url, "POST", f"/api/jobs/{first['id']}/rerun?speakers=3", b"", HEADERS)
    assert status == 201
    forced = wait_done(web_url, json.loads(body)["id"])
    assert forced["state"] == "done" and forced["num_speakers"] == 3
    result = forced["result"]
    assert result["count"] == 3 and result["count_given"] and len(result["sources"]) == 3
    assert result["estimated_probabilities"] == first["result"]["probabilities"]
    status, _, body = request(web_url, "POST", f"/api/jobs/{first['id']}/rerun?speakers=9", b"", HEADERS)
    assert status == 400 and b"1..5" in body
    status, body = upload(web_url, web_recordings["two"], speakers="abc")
    assert status == 400 and "whole number" in body["error"]
    status, _, body = request(web_url, "POST", f"/api/jobs/{first['id']}/rerun?enhance=1", b"", HEADERS)
    assert status == 400 and b"--enhance" in body  # no denoiser loaded


def test_delete_removes_the_files_now(web_url, web_service, web_recordings):
    status, job = upload(web_url, web_recordings["two"])
    job = wait_done(web_url, job["id"])
    assert (web_service.work_dir / job["id"]).is_dir()
    status, _, _ = request(web_url, "DELETE", f"/api/jobs/{job['id']}", headers=HEADERS)
    assert status == 200 and not (web_service.work_dir / job["id"]).exists()
    status, _, body = request(web_url, "GET", f"/api/jobs/{job['id']}")
    assert status == 404 and b"deleted" in body
    assert request(web_url, "GET", f"/files/{job['id']}/s1.wav")[0] == 404


# ------------------------------------------------------------------------------------------------
# The service: limits, queue, progress, expiry, denoiser
# ------------------------------------------------------------------------------------------------
def test_size_and_duration_limits_are_clear_messages(tmp_path, bundled_separator, web_recordings):
    two = web_recordings["two"]
    with SeparationService(bundled_separator, tmp_path / "w", Limits(max_upload_bytes=20_000)) as service, \
            running_server(service) as url:
        status, body = upload(url, two)
        assert status == 413
        assert body["error"] == "two talkers.wav: larger than 0.0191 MB, the most this server takes " \
                                "(voxsep serve --max-upload-mb)"
        assert list((tmp_path / "w").iterdir()) == []
    with SeparationService(bundled_separator, tmp_path / "w2", Limits(max_duration_s=2.0)) as service:
        with pytest.raises(WebError) as err:
            submit_file(service, two)
        assert err.value.status == 413
        assert str(err.value) == f"two talkers.wav: {format_duration(sf.info(two).duration)} long; this server " \
                                 "takes recordings up to 2.0 s (voxsep serve --max-minutes)"
        assert list((tmp_path / "w2").iterdir()) == []


class _GatedSeparator:
    """The bundled separator, but each file waits for ``gate`` and records when it ran."""

    def __init__(self, separator):
        self._separator = separator
        self.gate = threading.Event()
        self.spans = []

    def __getattr__(self, name):
        return getattr(self._separator, name)

    def separate_file(self, *args, **kwargs):
        start = time.monotonic()
        self.gate.wait(60)
        summary = self._separator.separate_file(*args, **kwargs)
        self.spans.append((start, time.monotonic()))
        return summary


@pytest.mark.slow
def test_concurrent_jobs_are_queued_on_one_model(tmp_path, bundled_separator, web_recordings):
    gated = _GatedSeparator(bundled_separator)
    with SeparationService(gated, tmp_path / "w", Limits(max_jobs=3)) as service:
        jobs = [submit_file(service, web_recordings[key]) for key in ("two", "two_b", "two")]
        deadline = time.monotonic() + 20
        while jobs[0].state != "running" and time.monotonic() < deadline:  # the worker takes the first
            time.sleep(0.01)
        states = [service.describe(j) for j in jobs]
        assert [s["state"] for s in states] == ["running", "queued", "queued"]
        assert [s["jobs_ahead"] for s in states] == [None, 1, 2]
        with pytest.raises(WebError) as err:
            service.create_job("one too many.wav")
        assert err.value.status == 503 and "busy" in str(err.value)
        gated.gate.set()
        for job in jobs:
            assert service.wait(job.id, 120).state == "done"
        spans = sorted(gated.spans)
        assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one at a time


@pytest.mark.slow
def test_progress_is_reported_while_a_long_file_is_separated(tmp_path, bundled_separator, web_recordings):
    with SeparationService(bundled_separator, tmp_path / "w") as service:
        job = submit_file(service, web_recordings["long"])
        seen = []
        while job.state in ("queued", "running"):
            seen.append(job.progress)
            time.sleep(0.01)
        assert job.state == "done", job.message
        assert any(0 < p < 0.9 for p in seen), seen  # values between the start and the end
        assert seen == sorted(seen) and job.progress == 1.0
        assert job.result["duration"] == pytest.approx(24.0)


@pytest.mark.slow
def test_uploads_and_results_are_deleted_after_the_keep_time(tmp_path, bundled_separator, web_recordings):
    service = SeparationService(bundled_separator, tmp_path / "w", Limits(keep_s=0.5), sweep_interval_s=0.05)
    try:
        job = submit_file(service, web_recordings["two"])
        assert service.wait(job.id, 120).state == "done"
        assert (job.out_dir / "s1.wav").is_file()
        deadline = time.monotonic() + 10
        while job.folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not job.folder.exists() and list((tmp_path / "w").iterdir()) == []
        with pytest.raises(JobNotFound, match="deleted"):
            service.get(job.id)
        kept = submit_file(service, web_recordings["two"])
    finally:
        service.close()
    assert not kept.folder.exists()  # closing deletes every job folder
    assert (tmp_path / "w").is_dir()  # but not the work folder it was given


@pytest.mark.slow
def test_the_denoiser_runs_on_each_talker_when_asked(tmp_path, bundled_separator, web_recordings):
    from engine.checkpoint import save_checkpoint
    from generation.enhancer import Enhancer, EnhancerConfig
    from generation.wavenet import WaveNetConfig
    from voxsep.pipelines import load_enhancer

    torch.manual_seed(1)
    enhancer = Enhancer(EnhancerConfig(wavenet=WaveNetConfig(
        layers_per_cycle=3, n_cycles=1, kernel_size=3, causal=False, residual_channels=8, gate_channels=8,
        skip_channels=8, output="regression"), target_field=128)).eval()
    save_checkpoint(tmp_path / "enh.pt", task="enhancement", model_name="wavenet_denoiser",
                    model_config=enhancer.config, sample_rate=8000, model=enhancer)
    with SeparationService(bundled_separator, tmp_path / "w", enhancer=load_enhancer(tmp_path / "enh.pt"),
                           enhancer_name="enh.pt") as service:
        assert service.info()["enhancer"] == "enh.pt"
        plain = submit_file(service, web_recordings["two"], num_speakers=2)
        denoised = submit_file(service, web_recordings["two"], num_speakers=2, enhance=True)
        for job in (plain, denoised):
            assert service.wait(job.id, 120).state == "done", job.message
        assert plain.result["enhanced_with"] is None and denoised.result["enhanced_with"] == "enh.pt"
        a, _ = sf.read(plain.out_dir / "s1.wav")
        b, _ = sf.read(denoised.out_dir / "s1.wav")
        assert a.shape == b.shape and abs(a - b).max() > 1e-3


def test_display_and_download_names_never_carry_a_path():
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\me\\talk.wav") == "talk.wav"
    assert display_name("a\x00b\nc.wav") == "abc.wav"
    assert display_name("") == display_name(None) == "recording"
    assert download_stem("My talk (1).mp3") == "My_talk_1"
    assert download_stem("..") == "recording"
    assert format_duration(4.25) == "4.2 s" and format_duration(95) == "1 min 35 s"
    assert format_duration(3600) == "1 h"


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------
def test_serve_without_the_web_extra_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "voxsep: error: voxsep serve needs the web extra: pip install 'voxsep[web]'"


def test_serve_on_a_taken_port_is_one_line(capsys):
    from voxsep.web.app import bind

    taken = bind("127.0.0.1", 0)
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "no-such-model"]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot listen on 127.0.0.1:{port}" in err


@pytest.mark.slow
def test_serve_command_serves_the_page_and_cleans_up(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "voxsep", "serve", "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("voxsep serve: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2].rstrip("/")
        work = Path(line.split("work folder ")[1].split(";")[0])
        assert work.parent == tmp_path and work.is_dir()
        status, _, page = request(url, "GET", "/")
        assert status == 200 and b"<title>voxsep" in page
        status, _, body = request(url, "GET", "/api/info")
        assert status == 200 and json.loads(body)["max_speakers"] == 5
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read()
        assert not work.exists()  # its temporary work folder is removed on exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
