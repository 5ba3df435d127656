"""Shared audio front ends: audio I/O and validation, STFT/mel, mu-law, levels.

Imports nothing else of voxsep; every other package may import it.
"""
from frontend.audio import (
    AudioInfo, atomic_folder, atomic_output, audio_info, find_audio_files, load_audio, resample, save_audio,
)
from frontend.errors import AudioError, VoxsepError
from frontend.levels import active_speech_level, gain_to_level, limit_peak, loudness, peak, rms_db
from frontend.mulaw import mulaw_decode, mulaw_encode
from frontend.spectral import STFT, LogMelSpectrogram

__all__ = [
    "AudioInfo", "AudioError", "VoxsepError", "STFT", "LogMelSpectrogram", "active_speech_level",
    "atomic_folder", "atomic_output", "audio_info", "find_audio_files", "gain_to_level", "load_audio", "loudness",
    "limit_peak", "mulaw_decode", "mulaw_encode", "peak", "resample", "rms_db", "save_audio",
]
