"""Separating files: any rate or channel layout, silence, and long files in bounded memory.

:class:`Separator` wraps a separation model (:class:`separation.model.SeparationModel`). Files are
read mono at the model's rate. Short files (up to one window) are separated in one pass. Longer
files go through :func:`stream_separate`, a wrapper that never holds more than one window:

* **Count over the whole file.** Pass 1 reads the file window by window and averages the count
  probabilities of the windows that are not silent ("mean" vote, the default; Multi-Decoder DPRNN
  votes over 4 s slices), or takes the largest per-window count ("max"). A given
  ``num_speakers`` skips this pass.
* **Separation.** Pass 2 separates each window into that many talkers. Windows overlap by
  ``overlap`` seconds; the talker order of a window is aligned to the previous window by PIT
  (:func:`separation.losses.best_permutation` on negative SI-SDR) over the overlap, and the overlap is
  cross-faded: the outer quarters of the overlap come from one window only (the edges of a window
  see less context) and the middle half is a linear cross-fade.
* **Output.** Each talker is written block by block to ``s<k>.wav`` (32-bit float, the model's
  rate) through an open ``soundfile.SoundFile`` under a temporary name; files appear under their
  final names only when complete.

No speech: an input (or, for the vote, a window) whose RMS is below ``silence_db`` (default -60
dBFS), or, with ``vad``, in which the voice activity detector (:mod:`frontend.vad`, Silero VAD)
finds no speech segment - rain, traffic, a fan - holds no talker: such a file has count 0 and no
output sources, and such a window does not vote on the count. The detector is off by default: it
also misses some real speech (5 of the 30 single-talker real recordings of the project's evaluation,
8 kHz separation-toolkit samples), which then gets no output at all. ``vad=None`` reads the
environment variable ``VOXSEP_VAD`` (``1`` turns it on), else off.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import torch

from frontend import atomic_output, audio_info, load_audio, rms_db
from frontend.errors import VoxsepError
from frontend.sisnr import pairwise_neg_si_snr
from frontend.vad import has_speech
from separation.losses import best_permutation

COUNT_VOTES = ("mean", "max")
#: default window and overlap (seconds) of files separated window by window (``voxsep separate``,
#: ``count``, ``serve`` and ``evaluate``). A BLSTM trunk trained on 4 s crops separates a 16 s
#: mixture better in one pass than in 8 s windows (held-back LibriSpeech speakers, 9.8 s mixtures:
#: 3.19 dB SI-SNRi over 2-5 talkers and 82.5 % counted in one pass, 3.16 dB and 79.5 % in 8 s
#: windows, 3.09 dB and 79.5 % in 4 s windows), and 16 s of 8 kHz audio is a small window.
DEFAULT_WINDOW_S = 16.0
DEFAULT_OVERLAP_S = 1.0


def vad_default() -> bool:
    """Whether the voice activity detector is on when not chosen: ``VOXSEP_VAD`` (``0``/``1``), else off."""
    value = os.environ.get("VOXSEP_VAD", "0").strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise VoxsepError(f"VOXSEP_VAD must be 0 or 1, got {value!r}")
    return value in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------------------------
# Reading a file block by block at the model's rate
# ----------------------------------------------------------------------------------------------
class BlockReader:
    """Read any span of a file, mono, resampled to ``sample_rate``, without loading the file.

    Each span is read with a margin of file samples on both sides, resampled with
    :func:`frontend.load_audio`'s filter and trimmed; the margin covers the resampling filter, so
    spans agree with resampling the whole file (to float precision). Span starts are snapped to
    the resampling grid (multiples of ``file_rate / gcd``), where file and model samples coincide.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, margin: int = 1024):
        self.path = Path(path)
        self.info = audio_info(self.path)
        self.sample_rate = int(sample_rate)
        g = math.gcd(self.info.sample_rate, self.sample_rate)
        self._file_step = self.info.sample_rate // g  # file samples per grid step
        self._model_step = self.sample_rate // g      # model samples per grid step
        self._margin_steps = -(-margin // self._file_step) if self.info.sample_rate != self.sample_rate else 0
        #: length of the whole file at the model's rate (as resampling the whole file gives)
        self.length = -(-self.info.frames * self._model_step // self._file_step)

    def read(self, start: int, frames: int) -> torch.Tensor:
        """Samples ``[start, start + frames)`` at the model's rate (clipped to the file), ``(n,)``."""
        frames = max(0, min(frames, self.length - start))
        if self._model_step == self._file_step:
            wav, _ = load_audio(self.path, start=start, frames=frames)
            return wav
        first_step = start // self._model_step - self._margin_steps
        last_step = -(-(start + frames) // self._model_step) + self._margin_steps
        file_start = max(0, first_step * self._file_step)
        file_stop = min(self.info.frames, last_step * self._file_step)
        wav, _ = load_audio(self.path, sample_rate=self.sample_rate, start=file_start,
                            frames=file_stop - file_start)
        offset = start - file_start // self._file_step * self._model_step
        return wav[offset:offset + frames]


# ----------------------------------------------------------------------------------------------
# The streaming wrapper
# ----------------------------------------------------------------------------------------------
@dataclass
class StreamResult:
    """What :func:`stream_separate` decided."""

    count: int
    count_probabilities: list[float]
    n_windows: int
    window_counts: list[int] = field(default_factory=list)


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start samples of windows of ``window`` samples overlapping by ``overlap`` that cover
    ``length`` samples; the last window ends at ``length`` and is longer than ``overlap``."""
    if window <= overlap:
        raise ValueError(f"window ({window}) must be longer than overlap ({overlap})")
    hop = window - overlap
    if length <= window:
        return [0]
    n = -(-(length - overlap) // hop)
    return [i * hop for i in range(n)]


def crossfade_weights(overlap: int) -> torch.Tensor:
    """Weight of the *new* window over an overlap: 0 on the first quarter, a linear ramp over the
    middle half, 1 on the last quarter."""
    quarter = overlap // 4
    ramp_len = overlap - 2 * quarter
    ramp = (torch.arange(ramp_len, dtype=torch.float32) + 0.5) / ramp_len
    return torch.cat([torch.zeros(quarter), ramp, torch.ones(quarter)])


def align_to_previous(prev_tail: torch.Tensor, new_head: torch.Tensor) -> torch.Tensor:
    """Order of the new window's talkers that best matches the previous window over the overlap.

    Args:
        prev_tail, new_head: ``(K, O)`` the two windows' estimates on the same samples.

    Returns:
        ``(K,)`` indices: ``new[order[k]]`` continues ``prev[k]``.
    """
    if prev_tail.shape[0] <= 1:
        return torch.arange(prev_tail.shape[0])
    pairwise = pairwise_neg_si_snr(new_head[None].double(), prev_tail[None].double())  # [1, new, prev]
    _, order = best_permutation(pairwise)
    return order[0]


def stream_separate(
    read: Callable[[int, int], torch.Tensor],
    length: int,
    separate_window: Callable[[torch.Tensor, int], torch.Tensor],
    count_window: Callable[[torch.Tensor], torch.Tensor],
    write: Callable[[torch.Tensor], None],
    window: int,
    overlap: int,
    num_speakers: int | None = None,
    count_vote: str = "mean",
    silence_db: float = -60.0,
    align: int = 1,
    progress: Callable[[int], None] | None = None,
    no_speech: Callable[[torch.Tensor], bool] | None = None,
) -> StreamResult:
    """Separate a long signal window by window in bounded memory (see the module docstring).

    Args:
        read: ``read(start, n) -> (n,)`` samples of the input.
        length: input length in samples.
        separate_window: ``(T,) wav, K -> (K, T)`` estimates of one window.
        count_window: ``(T,) wav -> (C_max + 1,)`` count probabilities of one window.
        write: receives consecutive finished output blocks ``(K, n)``.
        window, overlap: in samples (rounded so hops are multiples of ``align``).
        num_speakers: the count (skips the counting pass).
        count_vote: "mean" (average probabilities of non-silent windows) or "max".
        silence_db: windows quieter than this (RMS, dBFS) do not vote; if all are, count = 0.
        align: hop granularity (the model's encoder stride keeps frames on one grid).
        progress: called with the number of samples processed (for a progress bar).
        no_speech: ``(T,) wav -> bool``: windows it flags do not vote either (a voice activity
            detector: windows of noise without talkers).

    Returns:
        :class:`StreamResult`; nothing is written when the count is 0.
    """
    if count_vote not in COUNT_VOTES:
        raise ValueError(f"count_vote must be one of {COUNT_VOTES}, got {count_vote!r}")
    hop = max(align, (window - overlap) // align * align)
    overlap = window - hop
    if overlap < 4:
        raise ValueError(f"overlap must be at least 4 samples, got {overlap}")
    starts = window_starts(length, window, overlap)
    window_counts: list[int] = []
    if num_speakers is None:
        prob_sum = None
        n_votes = 0
        for start in starts:
            wav = read(start, window)
            if progress:
                progress(wav.shape[-1])
            if rms_db(wav) < silence_db or (no_speech is not None and no_speech(wav)):
                continue
            probs = count_window(wav).double()
            window_counts.append(int(probs.argmax()))
            if count_vote == "mean":
                prob_sum = probs if prob_sum is None else prob_sum + probs
            else:
                prob_sum = probs if prob_sum is None else torch.maximum(prob_sum, probs)
            n_votes += 1
        if n_votes == 0:
            return StreamResult(count=0, count_probabilities=[], n_windows=len(starts))
        if count_vote == "mean":
            probabilities = prob_sum / n_votes
            count = int(probabilities.argmax())
        else:
            count = max(window_counts)
            probabilities = prob_sum / prob_sum.sum()
        probabilities_list = [float(p) for p in probabilities]
    else:
        count = int(num_speakers)
        probabilities_list = []
    if count == 0:
        return StreamResult(count, probabilities_list, len(starts), window_counts)

    fade_in = crossfade_weights(overlap)
    prev_tail: torch.Tensor | None = None
    for i, start in enumerate(starts):
        wav = read(start, window)
        est = separate_window(wav, count).float()  # (K, n)
        if est.shape[0] != count:
            raise RuntimeError(f"separate_window returned {est.shape[0]} sources, expected {count}")
        last = i == len(starts) - 1
        if prev_tail is not None:
            head = est[:, :overlap]
            est = est[align_to_previous(prev_tail, head)]
            est[:, :overlap] = prev_tail * (1 - fade_in) + est[:, :overlap] * fade_in
        if last:
            write(est)
        else:
            write(est[:, :-overlap])
            prev_tail = est[:, -overlap:].clone()
        if progress:
            progress(wav.shape[-1] - (0 if last else overlap))
    return StreamResult(count, probabilities_list, len(starts), window_counts)


# ----------------------------------------------------------------------------------------------
# The user-facing wrapper
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def source_writers(folder: Path, count: int, sample_rate: int) -> Iterator[Callable[[torch.Tensor], None]]:
    """Open ``folder/s1.wav .. s<count>.wav`` for block writes (float32); closed on exit."""
    files = [sf.SoundFile(str(folder / f"s{k + 1}.wav"), "w", samplerate=sample_rate, channels=1,
                          subtype="FLOAT") for k in range(count)]

    def write(block: torch.Tensor) -> None:
        data = block.detach().cpu().numpy().astype(np.float32)
        if not np.isfinite(data).all():
            raise RuntimeError("the model produced NaN/Inf samples")
        for f, channel in zip(files, data):
            f.write(channel)

    try:
        yield write
    finally:
        for f in files:
            f.close()


class _TensorReader:
    """A waveform in memory with :class:`BlockReader`'s ``read(start, n)`` and ``length``."""

    def __init__(self, wav: torch.Tensor):
        self.wav = wav
        self.length = int(wav.shape[-1])

    def read(self, start: int, n: int) -> torch.Tensor:
        return self.wav[start:start + n]


class Separator:
    """Separate and count talkers in waveforms and files with a separation model.

    Args:
        model: a :class:`separation.model.SeparationModel` (put in eval mode).
        sample_rate: the model's rate (default ``model.sample_rate``).
        window: seconds per window for long files (files up to this length run in one pass).
        overlap: seconds of overlap between windows.
        count_vote: how windows vote on the count of a long file ("mean" or "max").
        silence_db: RMS (dBFS) under which audio counts as silence (0 talkers).
        model_name: recorded in ``summary.json``.
        vad: ask the voice activity detector first: audio without speech has 0 talkers (``None``:
            :func:`vad_default`).
    """

    def __init__(self, model, sample_rate: int | None = None, window: float = DEFAULT_WINDOW_S,
                 overlap: float = DEFAULT_OVERLAP_S,
                 count_vote: str = "mean", silence_db: float = -60.0, model_name: str = "",
                 vad: bool | None = None):
        self.model = model.eval()
        self.sample_rate = int(sample_rate or model.sample_rate)
        if window <= 2 * overlap:
            raise ValueError(f"window ({window} s) must be longer than twice the overlap ({overlap} s)")
        self.window = window
        self.overlap = overlap
        self.count_vote = count_vote
        self.silence_db = silence_db
        self.model_name = model_name
        self.align = int(getattr(model, "hop", 1) or 1)
        self.vad = vad_default() if vad is None else bool(vad)

    @property
    def max_speakers(self) -> int:
        return int(self.model.max_speakers)

    def _check_count(self, num_speakers: int | None) -> None:
        if num_speakers is not None and not 1 <= num_speakers <= self.max_speakers:
            raise VoxsepError(f"num_speakers must be in 1..{self.max_speakers} for this model, got {num_speakers}")

    # -- waveforms ---------------------------------------------------------------------------------
    def no_speech(self, wav: torch.Tensor) -> str | None:
        """Why ``wav (T,)`` holds no talker: ``"silence"``, ``"no speech"`` (the voice activity
        detector found none), or ``None`` when it may."""
        if rms_db(wav) < self.silence_db:
            return "silence"
        if self.vad and not has_speech(wav, self.sample_rate):
            return "no speech"
        return None

    def _zero_talkers(self) -> torch.Tensor:
        probs = torch.zeros(self.max_speakers + 1)
        probs[0] = 1.0
        return probs

    def count_probabilities(self, wav: torch.Tensor) -> torch.Tensor:
        """``(T,)`` -> ``(max_speakers + 1,)`` probabilities; audio without speech (silence, or no
        voice activity) is certainly 0 talkers."""
        if self.no_speech(wav):
            return self._zero_talkers()
        return self.model.count_probabilities(wav).float()

    def separate(self, wav: torch.Tensor, num_speakers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over ``wav (T,)``: ``(est_sources (K, T), count probabilities (max_speakers + 1,))``.
        Audio without speech gives ``K = 0`` unless ``num_speakers`` is given."""
        return self._separate(wav, num_speakers)[:2]

    def _separate(self, wav: torch.Tensor, num_speakers: int | None) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        """:meth:`separate`, and why the count is 0 (:meth:`no_speech`) when it is."""
        self._check_count(num_speakers)
        if num_speakers is None:
            reason = self.no_speech(wav)
            if reason:
                return wav.new_zeros(0, wav.shape[-1]), self._zero_talkers(), reason
        sources, probs = self.model.separate_and_count(wav, num_speakers)
        return sources[0], probs[0].float(), None

    # -- files -------------------------------------------------------------------------------------
    def count_file(self, path: str | os.PathLike) -> tuple[int, list[float]]:
        """Count talkers in a file (long files: windows vote). Returns ``(count, probabilities)``."""
        reader = BlockReader(path, self.sample_rate)
        window = int(round(self.window * self.sample_rate))
        if reader.length <= window:
            probs = self.count_probabilities(reader.read(0, reader.length))
            return int(probs.argmax()), [float(p) for p in probs]
        result = self._stream(reader, None, write=None)
        return result.count, result.count_probabilities or self._silence_probabilities()

    def _silence_probabilities(self) -> list[float]:
        return [float(p) for p in self._zero_talkers()]

    def separate_file(self, path: str | os.PathLike, out_dir: str | os.PathLike,
                      num_speakers: int | None = None, progress: Callable[[int], None] | None = None) -> dict:
        """Separate ``path`` into ``out_dir/s1.wav ..`` and ``out_dir/summary.json``.

        The folder is built under a temporary name beside ``out_dir`` and renamed when complete
        (an existing ``out_dir`` is replaced), so a failure leaves no partial output.

        Returns:
            the summary dict (also written as ``summary.json``).
        """
        self._check_count(num_speakers)
        reader = BlockReader(path, self.sample_rate)
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
        try:
            window = int(round(self.window * self.sample_rate))
            empty = None
            if reader.length <= window:
                wav = reader.read(0, reader.length)
                est, probs, empty = self._separate(wav, num_speakers)
                count = est.shape[0]
                probabilities = [float(p) for p in probs]
                with source_writers(tmp_dir, count, self.sample_rate) as write:
                    if count:
                        write(est)
                if progress:
                    progress(reader.length)
                n_windows = 1
            else:
                count_known = num_speakers
                if count_known is None:
                    counted = self._stream(reader, None, write=None, progress=progress)
                    count_known = counted.count
                    probabilities = counted.count_probabilities or self._silence_probabilities()
                    if not count_known:
                        empty = "no speech in any window" if self.vad else "silence"
                else:
                    probabilities = []
                count = count_known
                if count:
                    with source_writers(tmp_dir, count, self.sample_rate) as write:
                        result = self._stream(reader, count, write=write, progress=progress)
                    n_windows = result.n_windows
                else:
                    n_windows = len(window_starts(reader.length, window, int(self.overlap * self.sample_rate)))
            summary = {
                "input": str(path),
                "count": int(count),
                "count_given": num_speakers is not None,
                "count_probabilities": {str(k): round(p, 6) for k, p in enumerate(probabilities)},
                "count_method": empty or self._count_method(num_speakers, n_windows),
                "sources": [f"s{k + 1}.wav" for k in range(count)],
                "duration": round(reader.info.duration, 6),
                "input_sample_rate": reader.info.sample_rate,
                "input_channels": reader.info.channels,
                "sample_rate": self.sample_rate,
                "n_windows": n_windows,
                "window_s": self.window,
                "overlap_s": self.overlap,
                "model": self.model_name,
            }
            with atomic_output(tmp_dir / "summary.json") as tmp:
                tmp.write_text(json.dumps(summary, indent=2) + "\n")
            if out_dir.exists():
                shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
            os.replace(tmp_dir, out_dir)
            return summary
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise

    def _count_method(self, num_speakers: int | None, n_windows: int) -> str:
        if num_speakers is not None:
            return "given"
        method = self.model._effective_count_method()
        return f"{method}, {self.count_vote} vote over {n_windows} windows" if n_windows > 1 else method

    def separate_windowed(self, wav: torch.Tensor, num_speakers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`separate_file` writes for a file holding ``wav (T,)``, in memory: one pass up
        to ``window`` seconds, longer audio window by window (the windows vote on the count, the
        talkers are aligned across overlaps); an infinite ``window`` is always one pass. Returns
        ``(est_sources (K, T), count probabilities)``; with ``num_speakers`` given, windowed audio
        has no count vote and its probabilities are zeros. ``voxsep evaluate`` scores this, so its
        figures are those of ``voxsep separate``."""
        self._check_count(num_speakers)
        length = wav.shape[-1]
        if not math.isfinite(self.window) or length <= int(round(self.window * self.sample_rate)):
            return self.separate(wav, num_speakers)
        reader = _TensorReader(wav)
        if num_speakers is None:
            counted = self._stream(reader, None, write=None)
            count = counted.count
            probs = (torch.tensor(counted.count_probabilities) if counted.count_probabilities
                     else self._zero_talkers())
        else:
            count = int(num_speakers)
            probs = torch.zeros(self.max_speakers + 1)
        if count == 0:
            return wav.new_zeros(0, length), probs
        blocks: list[torch.Tensor] = []
        self._stream(reader, count, write=blocks.append)
        return torch.cat(blocks, dim=-1), probs

    def _stream(self, reader, num_speakers: int | None, write, progress=None) -> StreamResult:
        def separate_window(wav: torch.Tensor, k: int) -> torch.Tensor:
            return self.model.separate(wav, k)[0]

        return stream_separate(
            reader.read, reader.length, separate_window, self.model.count_probabilities,
            write if write is not None else (lambda block: None),
            window=int(round(self.window * self.sample_rate)),
            overlap=int(round(self.overlap * self.sample_rate)),
            num_speakers=num_speakers, count_vote=self.count_vote, silence_db=self.silence_db,
            align=self.align, progress=progress,
            no_speech=(lambda wav: self.no_speech(wav) is not None) if self.vad else None)


