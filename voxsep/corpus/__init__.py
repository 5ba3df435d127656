"""The offline multi-voice speech corpus: English sentences spoken by 150+ synthetic voice
identities (espeak-ng, flite, festival), written as FLAC at 8 and 16 kHz with jsonl manifests.

Entry point: :func:`build_corpus` (CLI: ``voxsep corpus``).
"""
from voxsep.corpus.builder import PlannedUtterance, assign_splits, build_corpus, plan_corpus, render
from voxsep.corpus.engines import SynthesisError, Synthesizer, check_engines
from voxsep.corpus.sentences import generate_sentences, load_sentences
from voxsep.corpus.voices import ENGINES, Identity, catalogue, select_identities

__all__ = [
    "ENGINES", "Identity", "PlannedUtterance", "SynthesisError", "Synthesizer", "assign_splits",
    "build_corpus", "catalogue", "check_engines", "generate_sentences", "load_sentences",
    "plan_corpus", "render", "select_identities",
]
