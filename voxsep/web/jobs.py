"""The separation service behind `voxsep serve`: a job queue on one model, in one work folder.

:class:`SeparationService` owns

* one :class:`separation.inference.Separator` (the same object the CLI builds) and, optionally,
  one denoiser; a single worker thread runs the jobs one at a time, in upload order, so however
  many pages upload at once there is one model in memory and one separation running;
* a work folder. Every job gets ``WORK/<id>/`` where ``id`` is 32 random hex digits
  (:func:`secrets.token_hex`) checked against :data:`JOB_ID_PATTERN` on every request; inside it
  the names are fixed (``input<ext>``, ``out/s1.wav``, ``out/s1.png``, ``out/mix.png``): nothing
  the user sends becomes part of a path, and :meth:`SeparationService.result_file` only answers
  names that match :data:`RESULT_FILE_PATTERN` and resolve inside the work folder;
* limits: upload size, duration, and how many jobs may wait; each refusal is a one-line message;
* expiry: a janitor thread deletes a job's folder (upload and results) ``keep_s`` seconds after
  the job ended, and :meth:`SeparationService.close` deletes them all.

A job's file goes through :meth:`~SeparationService.create_job` (reserves a folder),
the caller's writes to ``job.input_path``, then :meth:`~SeparationService.submit` (checks that the
file is audio and within the limits, queues it). Errors while separating (a file that decodes
badly past its header, a model failure) end that job with a message; the worker goes on.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import secrets
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from frontend import AudioError, VoxsepError, audio_info
from frontend.audio import AUDIO_EXTENSIONS
from separation.inference import Separator
from voxsep.web.spectrogram import plot_spectrogram, power_spectrogram

#: A job id: 128 random bits as lower-case hex. Anything else is refused before touching the disk.
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
#: The only result files that are ever served.
RESULT_FILE_PATTERN = re.compile(r"(?:s[1-9][0-9]?\.(?:wav|png)|mix\.png)")
#: URL prefix of result files (``/files/<id>/<name>``).
FILES_URL = "/files"

#: job states: uploading -> queued -> running -> done | error
_ACTIVE = ("uploading", "queued", "running")


class WebError(VoxsepError):
    """A request the service refuses; ``status`` is the HTTP status the page gets with the message."""

    status = 400


class UploadTooLarge(WebError):
    status = 413


class ServiceBusy(WebError):
    status = 503


class JobNotFound(WebError):
    status = 404


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the service accepts and keeps.

    Attributes:
        max_upload_bytes: largest upload.
        max_duration_s: longest recording, in seconds.
        keep_s: seconds an ended job's upload and results are kept.
        max_jobs: jobs uploading, waiting or running at once; more are refused (busy).
    """

    max_upload_bytes: int = 200 * 2**20
    max_duration_s: float = 60 * 60.0
    keep_s: float = 60 * 60.0
    max_jobs: int = 20

    def __post_init__(self):
        if self.max_upload_bytes <= 0 or self.max_duration_s <= 0 or self.keep_s <= 0 or self.max_jobs <= 0:
            raise ValueError(f"every limit must be positive, got {self}")


def display_name(name: str | None) -> str:
    """The name shown for an upload: the last path component, printable, at most 120 characters.

    It is only ever shown (escaped by the page) and used in download names, never in a path.
    """
    name = re.split(r"[\\/]", name or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or "recording"


def download_stem(name: str) -> str:
    """A file-name-safe stem of a display name (``My talk (1).mp3`` -> ``My_talk_1_``)."""
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60] or "recording"


def format_duration(seconds: float) -> str:
    """``95.2`` -> ``"1 min 35 s"``; ``4.25`` -> ``"4.2 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclasses.dataclass(eq=False)
class Job:
    """One uploaded file and what became of it (fields are read by the page through :meth:`SeparationService.describe`)."""

    id: str
    name: str
    folder: Path
    suffix: str
    created: float
    state: str = "uploading"
    stage: str = "uploading"
    progress: float = 0.0
    message: str = ""
    num_speakers: int | None = None
    enhance: bool = False
    #: count probabilities estimated for this file (carried over when a count is forced)
    estimated: list[float] | None = None
    result: dict | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def input_path(self) -> Path:
        return self.folder / f"input{self.suffix}"

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"


class SeparationService:
    """Queue separation jobs on one :class:`Separator`; keep their files in ``work_dir`` for a while.

    Args:
        separator: the model wrapper (``voxsep separate`` builds the same one).
        work_dir: folder for uploads and results (created). The service writes only inside
            ``work_dir/<job id>/`` folders it creates and deletes only those.
        limits: see :class:`Limits`.
        enhancer: an optional denoiser (:func:`voxsep.pipelines.load_enhancer`) offered on the page.
        enhancer_name: how the page names it.
        log: called with one line per finished job (default: nothing).
        sweep_interval_s: how often expired jobs are looked for (default ``min(60, keep_s / 4)``).
    """

    def __init__(self, separator: Separator, work_dir: str | os.PathLike, limits: Limits = Limits(),
                 enhancer=None, enhancer_name: str = "", log: Callable[[str], None] | None = None,
                 sweep_interval_s: float | None = None):
        self.separator = separator
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.enhancer = enhancer
        self.enhancer_name = enhancer_name or ("denoiser" if enhancer is not None else "")
        self._log = log or (lambda line: None)
        self._jobs: dict[str, Job] = {}
        self._expired: set[str] = set()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._sweep_interval = sweep_interval_s or max(0.05, min(60.0, limits.keep_s / 4))
        self._worker = threading.Thread(target=self._work, name="voxsep-serve-worker", daemon=True)
        self._janitor = threading.Thread(target=self._sweep_loop, name="voxsep-serve-janitor", daemon=True)
        self._worker.start()
        self._janitor.start()

    # -- what the page shows -----------------------------------------------------------------------
    def info(self) -> dict:
        """The model and the limits, for the page."""
        return {
            "model": self.separator.model_name or "model",
            "sample_rate": self.separator.sample_rate,
            "max_speakers": self.separator.max_speakers,
            "enhancer": self.enhancer_name or None,
            "max_upload_bytes": self.limits.max_upload_bytes,
            "max_upload_mb": round(self.limits.max_upload_bytes / 2**20, 3),
            "max_duration_s": self.limits.max_duration_s,
            "max_duration": format_duration(self.limits.max_duration_s),
            "keep_s": self.limits.keep_s,
            "keep": format_duration(self.limits.keep_s),
            "extensions": list(AUDIO_EXTENSIONS),
        }

    def describe(self, job: Job) -> dict:
        """A job's state for the page (no server path appears in it)."""
        with self._cond:
            ahead = None
            if job.state == "queued":
                ahead = next((i for i, j in enumerate(self._waiting) if j is job), 0) + (self._running is not None)
            expires_in = None
            if job.finished is not None:
                expires_in = max(0.0, job.finished + self.limits.keep_s - time.time())
            return {
                "id": job.id, "name": job.name, "state": job.state, "stage": job.stage,
                "progress": round(job.progress, 4), "message": job.message, "jobs_ahead": ahead,
                "num_speakers": job.num_speakers, "enhance": job.enhance,
                "created": job.created, "started": job.started, "finished": job.finished,
                "expires_in": expires_in, "result": job.result,
            }

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; raises :class:`JobNotFound` for a malformed, unknown or expired id."""
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
            raise JobNotFound("no such job")
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                if job_id in self._expired:
                    raise JobNotFound(f"this job's files were deleted ({format_duration(self.limits.keep_s)} "
                                      "after it ended); upload the file again")
                raise JobNotFound("no such job")
            return job

    def result_file(self, job_id: str, name: str) -> Path:
        """The path of result file ``name`` of a finished job, or :class:`JobNotFound`.

        Only ids matching :data:`JOB_ID_PATTERN` and names matching :data:`RESULT_FILE_PATTERN` are
        looked up, and the resolved path must lie inside the job's ``out`` folder in the work folder.
        """
        if not isinstance(name, str) or not RESULT_FILE_PATTERN.fullmatch(name):
            raise JobNotFound("no such file")
        job = self.get(job_id)
        if job.state != "done":
            raise JobNotFound("no such file")
        path = (job.out_dir / name).resolve()
        if not path.is_relative_to(self.work_dir / job_id / "out") or not path.is_file():
            raise JobNotFound("no such file")
        return path

    # -- taking jobs -------------------------------------------------------------------------------
    def create_job(self, name: str | None) -> Job:
        """Reserve a job and its folder for an upload of ``name`` (a display name only).

        The caller writes the upload to ``job.input_path`` and then calls :meth:`submit`, or
        :meth:`discard` if the upload failed. Raises :class:`ServiceBusy` when ``max_jobs`` are active.
        """
        shown = display_name(name)
        suffix = Path(shown).suffix.lower()
        suffix = suffix if suffix in AUDIO_EXTENSIONS else ""
        with self._cond:
            if self._closing.is_set():
                raise ServiceBusy("the server is shutting down")
            active = sum(j.state in _ACTIVE for j in self._jobs.values())
            if active >= self.limits.max_jobs:
                raise ServiceBusy(f"{shown}: the server is busy ({active} files are being uploaded or "
                                  "separated); try again in a few minutes")
            job_id = secrets.token_hex(16)
            while job_id in self._jobs or job_id in self._expired:  # pragma: no cover (2^-128)
                job_id = secrets.token_hex(16)
            folder = self.work_dir / job_id
            folder.mkdir()
            job = Job(id=job_id, name=shown, folder=folder, suffix=suffix, created=time.time())
            self._jobs[job_id] = job
            return job

    def too_large(self, job: Job) -> UploadTooLarge:
        """The error for an upload over the size limit."""
        return UploadTooLarge(f"{job.name}: larger than {_megabytes(self.limits.max_upload_bytes)}, the most this "
                              "server takes (voxsep serve --max-upload-mb)")

    def submit(self, job: Job, num_speakers: int | None = None, enhance: bool = False) -> None:
        """Check the uploaded file and queue the job; on a refusal the job is discarded and
        :class:`WebError` says why in one line that names the upload (never the server's path)."""
        try:
            self._check_options(job, num_speakers, enhance)
            size = job.input_path.stat().st_size if job.input_path.is_file() else 0
            if size > self.limits.max_upload_bytes:
                raise self.too_large(job)
            try:
                info = audio_info(job.input_path)
            except AudioError as err:
                raise WebError(f"{job.name}: {err.reason}") from None
            if info.duration > self.limits.max_duration_s:
                raise UploadTooLarge(
                    f"{job.name}: {format_duration(info.duration)} long; this server takes recordings up to "
                    f"{format_duration(self.limits.max_duration_s)} (voxsep serve --max-minutes)")
        except BaseException:
            self.discard(job)
            raise
        with self._cond:
            job.num_speakers, job.enhance = num_speakers, bool(enhance)
            job.state = job.stage = "queued"
            self._waiting.append(job)
            self._cond.notify_all()

    def rerun(self, job_id: str, num_speakers: int | None, enhance: bool = False) -> Job:
        """Separate a finished job's upload again (a forced count, or the denoiser on or off) as a new job."""
        parent = self.get(job_id)
        if parent.state != "done" or not parent.input_path.is_file():
            raise WebError(f"{parent.name}: only a finished separation can be run again")
        self._check_options(parent, num_speakers, enhance)
        job = self.create_job(parent.name)
        try:
            try:
                os.link(parent.input_path, job.input_path)
            except OSError:
                shutil.copyfile(parent.input_path, job.input_path)
        except OSError:
            self.discard(job)
            raise WebError(f"{parent.name}: the upload was deleted meanwhile; upload the file again") from None
        except BaseException:
            self.discard(job)
            raise
        job.estimated = parent.estimated
        self.submit(job, num_speakers, enhance)
        return job

    def discard(self, job: Job) -> None:
        """Forget a job that never ran (a failed or refused upload) and delete its folder."""
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def delete(self, job_id: str) -> None:
        """Delete a job's upload and results now (a running job cannot be deleted)."""
        job = self.get(job_id)
        with self._cond:
            if job.state == "running":
                raise WebError(f"{job.name}: being separated; delete it when it has finished")
            if job.state == "uploading":
                raise WebError(f"{job.name}: still uploading")
            if job in self._waiting:
                self._waiting.remove(job)
            self._jobs.pop(job.id, None)
            self._expired.add(job.id)
        shutil.rmtree(job.folder, ignore_errors=True)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has ended (done or error) or ``timeout`` seconds passed; returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        with self._cond:
            while job.state in _ACTIVE:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        return job

    def _check_options(self, job: Job, num_speakers: int | None, enhance: bool) -> None:
        top = self.separator.max_speakers
        if num_speakers is not None and not 1 <= num_speakers <= top:
            raise WebError(f"{job.name}: the number of talkers must be 1..{top} for this model, got {num_speakers}")
        if enhance and self.enhancer is None:
            raise WebError("no denoiser is loaded (start voxsep serve with --enhance CKPT)")

    # -- the worker --------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing.is_set():
                    self._cond.wait()
                if self._closing.is_set():
                    return
                job = self._waiting.popleft()
                job.state, job.stage, job.started = "running", "separating", time.time()
                self._running = job
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None
                    if job.state == "running":  # only when closing: the job was abandoned
                        job.state, job.stage, job.message = "error", "error", "the server was stopped"
                    if job.finished is None:
                        job.finished = time.time()
                    self._cond.notify_all()

    def _run(self, job: Job) -> None:
        sep = self.separator
        try:
            info = audio_info(job.input_path)
            total = self._progress_total(info.frames, info.sample_rate, job.num_speakers)
            done = 0

            def progress(n: int) -> None:
                nonlocal done
                done += n
                job.progress = min(0.9, 0.9 * done / total)

            summary = sep.separate_file(job.input_path, job.out_dir, job.num_speakers, progress=progress)
            count = int(summary["count"])
            if job.enhance and count:
                from voxsep.pipelines import enhance_folder

                job.stage = "denoising"
                enhance_folder(job.out_dir, count, sep.sample_rate, self.enhancer, name=self.enhancer_name)
            job.stage, job.progress = "drawing spectrograms", 0.92
            self._draw(job, count, info.duration)
            job.result = self._result(job, summary)
            with self._cond:
                job.state, job.stage, job.progress, job.finished = "done", "done", 1.0, time.time()
            self._log(f"{job.name}: {count} talker{'s' if count != 1 else ''}, {format_duration(info.duration)} of "
                      f"audio separated in {time.time() - job.started:.1f} s")
        except Exception as err:  # the job ends with a message; the worker and the server go on
            if self._closing.is_set():
                return
            if isinstance(err, VoxsepError):
                message = self._user_message(job, err)
            else:
                traceback.print_exc(file=sys.stderr)
                message = f"{job.name}: separation failed ({type(err).__name__}: {self._user_message(job, err)})"
            with self._cond:
                job.state, job.stage, job.message, job.finished = "error", "error", message, time.time()
            shutil.rmtree(job.out_dir, ignore_errors=True)
            self._log(message)

    def _progress_total(self, frames: int, file_rate: int, num_speakers: int | None) -> float:
        """Samples :meth:`Separator.separate_file` reports for a file: one pass, or a counting
        pass (overlapping windows) and a separating pass."""
        sep = self.separator
        length = math.ceil(frames * sep.sample_rate / file_rate)
        window = round(sep.window * sep.sample_rate)
        hop = window - round(sep.overlap * sep.sample_rate)
        if length <= window or num_speakers is not None:
            return max(1, length)
        return length + length * window / hop

    def _draw(self, job: Job, count: int, duration: float) -> None:
        # one colour scale per picture: the separated talkers' level is the model's (SI-SNR training
        # leaves it free), not the recording's
        rate = self.separator.sample_rate
        plot_spectrogram(power_spectrogram(job.input_path, rate), duration, rate, job.out_dir / "mix.png")
        for k in range(1, count + 1):
            spec = power_spectrogram(job.out_dir / f"s{k}.wav", rate)
            plot_spectrogram(spec, duration, rate, job.out_dir / f"s{k}.png")
            job.progress = 0.92 + 0.08 * k / (count + 1)

    def _result(self, job: Job, summary: dict) -> dict:
        probabilities_by_count = summary.get("count_probabilities") or {}
        probabilities = [float(probabilities_by_count[str(k)]) for k in range(len(probabilities_by_count))]
        if job.num_speakers is None and probabilities:
            job.estimated = probabilities
        count = int(summary["count"])
        stem = download_stem(job.name)
        base = f"{FILES_URL}/{job.id}"
        return {
            "count": count,
            "count_given": bool(summary.get("count_given")),
            "probabilities": probabilities,
            "estimated_probabilities": job.estimated,
            "count_method": summary.get("count_method", ""),
            "duration": float(summary.get("duration", 0.0)),
            "duration_text": format_duration(float(summary.get("duration", 0.0))),
            "sample_rate": int(summary.get("sample_rate", self.separator.sample_rate)),
            "model": summary.get("model", ""),
            "enhanced_with": self.enhancer_name if job.enhance and count else None,
            "mixture_spectrogram": f"{base}/mix.png",
            "sources": [{
                "label": f"Talker {k}",
                "audio": f"{base}/s{k}.wav",
                "download": f"{base}/s{k}.wav?download={stem}_s{k}.wav",
                "filename": f"{stem}_s{k}.wav",
                "spectrogram": f"{base}/s{k}.png",
            } for k in range(1, count + 1)],
        }

    def _user_message(self, job: Job, err: Exception) -> str:
        """The error's text with the server's paths replaced by the upload's name."""
        text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        text = text.replace(str(job.input_path), job.name)
        text = text.replace(str(job.folder) + os.sep, "").replace(str(self.work_dir), "<work folder>")
        return text

    # -- expiry ------------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> list[str]:
        """Delete the folders of jobs that ended more than ``keep_s`` ago; returns their ids."""
        now = time.time() if now is None else now
        with self._cond:
            old = [j for j in self._jobs.values()
                   if j.state not in _ACTIVE and j.finished is not None and now - j.finished >= self.limits.keep_s]
            for job in old:
                del self._jobs[job.id]
                self._expired.add(job.id)
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)
        return [j.id for j in old]

    def _sweep_loop(self) -> None:
        while not self._closing.wait(self._sweep_interval):
            try:
                self.sweep()
            except Exception:  # pragma: no cover (keep sweeping whatever one pass hit)
                traceback.print_exc(file=sys.stderr)

    def close(self, timeout: float = 2.0) -> None:
        """Stop taking jobs, stop the threads (a running separation gets ``timeout`` seconds to
        end) and delete every job folder this service made."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        self._worker.join(timeout)
        self._janitor.join(timeout)
        with self._cond:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._waiting.clear()
        for job in jobs:
            shutil.rmtree(job.folder, ignore_errors=True)

    def __enter__(self) -> "SeparationService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _megabytes(n: int) -> str:
    mb = n / 2**20
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.3g} MB"
