"""Run the TTS engines: espeak-ng and flite as one short process per utterance, festival as one
long-lived ``festival --pipe`` process per worker (its start-up and voice loading cost more than
synthesizing a sentence).

Every failure is a :class:`SynthesisError` whose one-line message names the engine, the voice
identity and the text.
"""
from __future__ import annotations

import io
import os
import select
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from frontend.errors import VoxsepError
from voxsep.corpus.voices import FESTIVAL_HTS_VOICES, Identity

EXECUTABLES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}
APT_PACKAGES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival festvox-kallpc16k"}
TIMEOUT_S = 120.0


class SynthesisError(VoxsepError):
    """A TTS engine is missing, failed, or returned unusable audio (message names all three)."""


def describe(identity: Identity, text: str) -> str:
    """``engine voice ID on "text"``: the context every synthesis error carries."""
    short = text if len(text) <= 80 else text[:77] + "..."
    return f"{EXECUTABLES[identity.engine]} voice {identity.id} on {short!r}"


def check_engines(identities: list[Identity]) -> None:
    """Fail early, naming the engine and a voice that needs it, if an executable is missing."""
    for identity in identities:
        exe = EXECUTABLES[identity.engine]
        if shutil.which(exe) is None:
            raise SynthesisError(
                f"{exe}: not installed, needed for voice {identity.id} "
                f"(install it, e.g. apt-get install {APT_PACKAGES[identity.engine]})")


def _read_wav(data: bytes | Path, identity: Identity, text: str) -> tuple[np.ndarray, int]:
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        wav, rate = sf.read(src, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises several types; all mean "no usable wav"
        raise SynthesisError(f"{describe(identity, text)}: produced no readable audio ({err})") from None
    return wav.mean(axis=1), int(rate)


def _run(cmd: list[str], identity: Identity, text: str, stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise SynthesisError(f"{describe(identity, text)}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{describe(identity, text)}: no answer in {TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = msg[-1] if msg else f"exit status {proc.returncode}"
        raise SynthesisError(f"{describe(identity, text)}: failed ({reason})")
    return proc.stdout


class Synthesizer:
    """Synthesizes text with any identity; holds the per-process festival session.

    Args:
        workdir: folder for scratch files (text and wav); created if needed.
    """

    def __init__(self, workdir: str | os.PathLike | None = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="voxsep-tts-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._festival: FestivalSession | None = None

    def synthesize(self, identity: Identity, text: str) -> tuple[np.ndarray, int]:
        """Return ``(wav (T,) float32, rate)`` at the engine's native rate, before any warp."""
        voice = identity.voice
        if identity.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice["voice"], "-p", str(voice["pitch"]), "-s", str(voice["rate"]),
                   "--stdout"]
            return _read_wav(_run(cmd, identity, text, stdin=text.encode("utf-8")), identity, text)
        if identity.engine == "flite":
            txt, out = self.workdir / "flite.txt", self.workdir / "flite.wav"
            txt.write_text(text + "\n", encoding="utf-8")
            out.unlink(missing_ok=True)
            cmd = ["flite", "-voice", voice["voice"], "--setf", f"duration_stretch={voice['duration_stretch']}"]
            if "f0_mean" in voice:
                cmd += ["--setf", f"int_f0_target_mean={voice['f0_mean']}"]
            _run(cmd + ["-f", str(txt), "-o", str(out)], identity, text)
            return _read_wav(out, identity, text)
        if identity.engine == "festival":
            if self._festival is None:
                self._festival = FestivalSession(self.workdir)
            return self._festival.synthesize(identity, text)
        raise ValueError(f"unknown engine {identity.engine!r}")

    def festival_cpu_seconds(self) -> float:
        """CPU seconds of the running festival process (0 if none); finished processes are in
        ``getrusage(RUSAGE_CHILDREN)`` instead."""
        return self._festival.cpu_seconds() if self._festival is not None else 0.0

    def close(self) -> None:
        """Stop festival and remove scratch files."""
        if self._festival is not None:
            self._festival.close()
            self._festival = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalSession:
    """One ``festival --pipe`` process fed Scheme commands on stdin.

    Each request ends with a marker line printed and flushed by festival; everything festival
    printed before the marker is that request's output (used in error messages).
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.voice: str | None = None
        self._count = 0
        try:
            self.proc = subprocess.Popen(
                ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise SynthesisError("festival: not installed (apt-get install festival)") from None

    def _request(self, commands: str, context: str) -> str:
        self._count += 1
        marker = f"@@voxsep-done-{self._count}@@".encode()
        payload = f'{commands}\n(format t "{marker.decode()}\\n")\n(fflush nil)\n'.encode("utf-8")
        try:
            self.proc.stdin.write(payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SynthesisError(f"{context}: festival exited ({self._tail(b'')})") from None
        fd = self.proc.stdout.fileno()
        buf = b""
        while marker not in buf:
            ready, _, _ = select.select([fd], [], [], TIMEOUT_S)
            if not ready:
                self.close()
                raise SynthesisError(f"{context}: festival gave no answer in {TIMEOUT_S:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise SynthesisError(f"{context}: festival exited ({self._tail(buf)})")
            buf += chunk
        return buf.split(marker)[0].decode("utf-8", "replace")

    @staticmethod
    def _tail(buf: bytes) -> str:
        lines = [ln for ln in buf.decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "no output"

    def synthesize(self, identity: Identity, text: str) -> tuple[np.ndarray, int]:
        voice = identity.voice
        context = describe(identity, text)
        name = voice["voice"]
        if name != self.voice:
            out = self._request(f"(voice_{name})", context)
            if "error" in out.lower() or "unbound" in out.lower():
                self.voice = None
                raise SynthesisError(f"{context}: voice not available ({self._tail(out.encode())})")
            self.voice = name
        if name in FESTIVAL_HTS_VOICES:
            setup = (f'(set! hts_engine_params (append {name}::hts_engine_params '
                     f'(list (list "-r" {float(voice["speed"])}))))')
        else:
            # festival's diphone voices keep their model F0 stats; only the target mean moves
            setup = (f"(set! int_lr_params (cons (list 'target_f0_mean {float(voice['f0_mean'])}) "
                     f"(cdr int_lr_params)))"
                     f"(Parameter.set 'Duration_Stretch {float(voice['duration_stretch'])})")
        wav_path = self.workdir / "festival.wav"
        wav_path.unlink(missing_ok=True)
        out = self._request(
            f"{setup}(utt.save.wave (SynthText {_scheme_string(text)}) {_scheme_string(str(wav_path))} 'riff)",
            context)
        if not wav_path.exists():
            raise SynthesisError(f"{context}: festival wrote no audio ({self._tail(out.encode())})")
        return _read_wav(wav_path, identity, text)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the festival process has used so far (Linux ``/proc``)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
