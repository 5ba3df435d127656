"""Optional parts of the install (pyproject ``[project.optional-dependencies]``), and the one-line
message that names the extra a command is missing.

``pip install voxsep`` is what inference needs: separate, count, enhance, vocode, demo, mix and
corpus run on torch, torchaudio, numpy, scipy and soundfile (plus fast_bss_eval, tqdm and
matplotlib). The rest is opt-in:

=========  ==============================================================  ================================
extra      what                                                            for
=========  ==============================================================  ================================
``train``  pytorch-lightning, asteroid 0.7 (and its pins), PyYAML          ``voxsep train``; asteroid's
                                                                           DPRNN/Conv-TasNet baselines
``eval``   pesq, pystoi, noisereduce                                       PESQ/STOI in ``voxsep evaluate``;
                                                                           its spectral-gating baseline
``rooms``  pyroomacoustics                                                 simulated rooms in the
                                                                           denoiser's training data
``dev``    all of them plus the test tools                                 ``python -m pytest tests``
=========  ==============================================================  ================================
"""
from __future__ import annotations

import importlib.util

from frontend.errors import VoxsepError

#: extra -> (what it is called in messages, the importable modules it provides)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("training extra", ("pytorch_lightning", "asteroid", "yaml")),
    "eval": ("evaluation extra", ("pesq", "pystoi", "noisereduce")),
    "rooms": ("rooms extra", ("pyroomacoustics",)),
}

#: top-level module -> the extra that installs it
MODULE_EXTRA = {module: extra for extra, (_, modules) in EXTRAS.items() for module in modules}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be found here (found = importable by name; not imported)."""
    return [m for m in EXTRAS[extra][1] if importlib.util.find_spec(m) is None]


def extra_message(what: str, extra: str, note: str = "") -> str:
    """``"<what> needs the training extra: pip install 'voxsep[train]'"`` (+ ``note``)."""
    return f"{what} needs the {EXTRAS[extra][0]}: pip install 'voxsep[{extra}]'" + (f" ({note})" if note else "")


def require_extra(extra: str, what: str, note: str = "") -> None:
    """Raise a one-line :class:`VoxsepError` naming ``extra`` when any of its modules is missing."""
    if missing_modules(extra):
        raise VoxsepError(extra_message(what, extra, note))


def extra_of_import_error(err: ImportError) -> str | None:
    """The extra that would provide the module an ``ImportError`` is about, if it is one of ours."""
    name = getattr(err, "name", None) or ""
    return MODULE_EXTRA.get(name.split(".")[0])
