"""WaveNet family: the model with its explicit incremental state (:mod:`generation.wavenet`),
fast generation (:mod:`generation.fast`, C kernel in :mod:`generation.kernel`), sampling policies,
the denoisers on samples and on STFT frames (:mod:`generation.enhancer`), the mel vocoder (:mod:`generation.vocoder`), losses,
synthetic noise, datasets and the "enhancement"/"vocoder" training tasks (:mod:`generation.task`).

Imports only :mod:`frontend` and :mod:`engine` (never :mod:`separation`). The task module (which
pulls in datasets) is imported on demand by ``voxsep train``.
"""
from generation.enhancer import Enhancer, EnhancerConfig, FrameEnhancer, FrameEnhancerConfig
from generation.vocoder import Vocoder, VocoderConfig
from generation.wavenet import WaveNet, WaveNetConfig, WaveNetState

__all__ = ["Enhancer", "EnhancerConfig", "FrameEnhancer", "FrameEnhancerConfig", "Vocoder", "VocoderConfig", "WaveNet", "WaveNetConfig", "WaveNetState"]
