"""Audio input/output with validation, down-mixing and resampling.

Reading goes through soundfile (libsndfile: wav, flac, ogg/vorbis, aiff, ...); resampling through
``torchaudio.functional.resample``. Policy:

* Samples are returned as float32 in [-1, 1] (integer formats are scaled by libsndfile).
* ``mono=True`` down-mixes by averaging the channels (equal weights, no panning law); ``mono=False``
  keeps them, shape ``(channels, T)``.
* ``sample_rate=None`` keeps the file's rate; otherwise the audio is resampled with torchaudio's
  default windowed-sinc (Hann, 6 zero crossings, rolloff 0.99), the same call as
  ``torchaudio.functional.resample(wav, file_rate, sample_rate)``.
* Silence is valid input. An unreadable, empty, zero-length or non-finite file, or one with a
  channel layout outside 1..:data:`MAX_CHANNELS`, raises :class:`AudioError` naming the file.

Writing is atomic: data goes to a temporary file in the target folder that is renamed into place
only when complete, so an interrupted run never leaves a truncated file under the final name.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from frontend.errors import AudioError

MAX_CHANNELS = 32
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64", ".mp3")


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header."""

    path: str
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read and check a file's header.

    Raises:
        AudioError: missing, empty, not audio, zero samples or unsupported channel layout.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "no such file")
    if p.is_dir():
        raise AudioError(p, "is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except Exception as err:  # libsndfile raises several types; all mean "cannot read"
        raise AudioError(p, f"not a readable audio file ({_short(err)})") from None
    if info.frames <= 0:
        raise AudioError(p, "contains no samples")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(p, f"unsupported channel layout ({info.channels} channels)")
    if info.samplerate <= 0:
        raise AudioError(p, f"invalid sample rate {info.samplerate}")
    return AudioInfo(str(p), int(info.samplerate), int(info.frames), int(info.channels))


def _short(err: Exception) -> str:
    msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    # soundfile prefixes the path; drop it since our message names the file already
    return msg.split(": ", 1)[-1] if ": " in msg else msg


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = True,
    start: int = 0,
    frames: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Load (part of) an audio file as a float32 tensor.

    Args:
        path: any file libsndfile reads.
        sample_rate: target rate in Hz; ``None`` keeps the file's rate.
        mono: average the channels into one.
        start, frames: read ``frames`` samples from ``start`` (in the file's rate); ``None`` reads
            to the end. Lets long files be processed in bounded memory.

    Returns:
        ``(wav, rate)``: ``wav`` is ``(T,)`` when mono, else ``(channels, T)``.

    Raises:
        AudioError: the file is missing, empty, not audio, has no samples, an unsupported channel
            layout, or NaN/Inf samples.
    """
    info = audio_info(path)
    stop = None if frames is None else start + frames
    try:
        data, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"cannot decode audio ({_short(err)})") from None
    if data.shape[0] == 0 and start == 0:
        raise AudioError(path, "contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or Inf samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (channels, T)
    if mono:
        wav = wav.mean(dim=0)
    if sample_rate is not None and sample_rate != info.sample_rate:
        wav = resample(wav, info.sample_rate, sample_rate)
        rate = sample_rate
    return wav, int(rate)


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample along the last axis with torchaudio's default windowed-sinc filter."""
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, int(orig_rate), int(new_rate))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the extension (libsndfile picks the format from it) and starts with
    ``.`` so that folder scans skip it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path`` (``.NAME.staging-PID``); when the block
    succeeds it replaces ``path`` (an existing folder there is removed), else it is deleted: the
    folder appears complete or not at all. The caller decides beforehand whether ``path`` may be
    replaced."""
    import shutil

    final = Path(path)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_audio(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> Path:
    """Write ``wav`` (``(T,)`` or ``(channels, T)``, float in [-1, 1]) atomically.

    The format follows the extension (``.wav``, ``.flac``, ...); ``subtype`` defaults to
    libsndfile's default for the format (16-bit PCM for wav and flac). Use ``subtype="FLOAT"``
    for lossless float wav.

    Raises:
        ValueError: wrong shape or non-finite samples (a bug in the caller, not a user error).
    """
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if data.ndim == 2:
        data = data.T  # soundfile wants (T, channels)
    elif data.ndim != 1:
        raise ValueError(f"save_audio expects (T,) or (channels, T), got shape {tuple(data.shape)}")
    if not np.isfinite(data).all():
        raise ValueError(f"refusing to write NaN/Inf samples to {path}")
    final = Path(path)
    with atomic_output(final) as tmp:
        sf.write(str(tmp), data.astype(np.float32), int(sample_rate), subtype=subtype,
                 format=_format_for(final))
    return final


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"aif": "AIFF", "oga": "OGG"}.get(ext, ext.upper())


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """All audio files under ``root`` (recursively, sorted), skipping hidden temporary files."""
    root = Path(root)
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    )
