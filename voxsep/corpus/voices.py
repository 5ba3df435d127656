"""Voice identities for the TTS corpus.

An identity is one engine, one voice and fixed settings (pitch, speaking rate, warp), used for
every utterance of that "speaker". The catalogue covers three engines:

* **espeak-ng** (formant synthesis): 8 English accents x 40 voice variants x pitch (``-p``) x
  rate (``-s`` words/minute).
* **flite** (diphone and clustergen voices kal, kal16, awb, rms, slt): mean F0
  (``int_f0_target_mean``, ignored by rms so not varied there) x ``duration_stretch`` x warp.
* **festival** (kal_diphone, ked_diphone, cmu_us_slt_arctic_hts): diphone voices take a mean F0
  (``int_lr_params``) and ``Duration_Stretch``; the HTS voice takes a speed (hts_engine ``-r``,
  its F0 shift ``-fm`` is ignored by festival 2.5) and is varied with warp.

*Warp* is applied after synthesis by declaring the audio's rate ``warp`` times higher before
resampling: pitch and formants rise by ``warp`` and the duration shrinks by ``1/warp``, as in
speed perturbation (Ko et al., Interspeech 2015), which moves a voice towards a shorter or longer
vocal tract.

:func:`select_identities` picks a varied, deterministic subset for a seed: engines get fixed
shares (espeak 65 %, flite 20 %, festival 15 %, at least one each) and, inside an engine,
identities cycle through the base voices before any base voice repeats.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

ENGINES = ("espeak", "flite", "festival")
ENGINE_SHARES = {"espeak": 0.65, "flite": 0.20, "festival": 0.15}

ESPEAK_ACCENTS = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)
# espeak-ng variant files (espeak-ng --voices=variant); whisper/croak/robot variants left out.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Alex", "Alicia", "Andrea", "Andy", "Annie", "aunty",
    "belinda", "benjamin", "david", "edward", "gustave", "iven", "john", "linda", "max", "Mike",
    "norbert", "paul", "quincy", "rob", "steph", "travis", "zac",
)
ESPEAK_PITCHES = (30, 40, 50, 60, 70, 80)          # espeak -p, 0..99, default 50
ESPEAK_RATES = (130, 145, 160, 175, 190)           # espeak -s, words per minute, default 175

# flite voice -> natural mean F0 in Hz (None: the voice ignores int_f0_target_mean)
FLITE_VOICES = {"kal": 95.0, "kal16": 95.0, "awb": 130.0, "rms": None, "slt": 170.0}
F0_FACTORS = (0.8, 0.9, 1.0, 1.12, 1.25)
STRETCHES = (0.85, 0.95, 1.0, 1.1, 1.2)
WARPS = (0.9, 0.95, 1.0, 1.05, 1.1)

FESTIVAL_DIPHONE_VOICES = {"kal_diphone": 105.0, "ked_diphone": 105.0}
FESTIVAL_HTS_VOICES = ("cmu_us_slt_arctic_hts",)
HTS_SPEEDS = (0.85, 0.95, 1.0, 1.1, 1.2)


@dataclass(frozen=True)
class Identity:
    """One synthetic speaker: an engine, a voice and its fixed settings.

    Attributes:
        id: stable string id, also the speaker folder name (e.g. ``espeak-en-gb-scotland+f3-p60-s145``).
        engine: ``"espeak"``, ``"flite"`` or ``"festival"``.
        settings: ``(name, value)`` pairs; ``voice`` is the engine's voice name, ``warp`` the
            post-synthesis pitch/formant factor, the rest are engine options.
    """

    id: str
    engine: str
    settings: tuple[tuple[str, object], ...]

    @property
    def voice(self) -> dict:
        """The settings as a dict (the manifest's ``voice`` field)."""
        return dict(self.settings)

    @property
    def warp(self) -> float:
        return float(self.voice.get("warp", 1.0))


def _espeak(accent: str, variant: str, pitch: int, rate: int) -> Identity:
    voice = f"{accent}+{variant}"
    return Identity(f"espeak-{voice}-p{pitch}-s{rate}", "espeak",
                    (("voice", voice), ("pitch", pitch), ("rate", rate), ("warp", 1.0)))


def _flite(voice: str, f0_factor: float, stretch: float, warp: float) -> Identity:
    base = FLITE_VOICES[voice]
    if base is None:
        return Identity(f"flite-{voice}-d{stretch:.2f}-w{warp:.2f}", "flite",
                        (("voice", voice), ("duration_stretch", stretch), ("warp", warp)))
    f0 = int(round(base * f0_factor))
    return Identity(f"flite-{voice}-f{f0}-d{stretch:.2f}-w{warp:.2f}", "flite",
                    (("voice", voice), ("f0_mean", f0), ("duration_stretch", stretch), ("warp", warp)))


def _festival(voice: str, f0_factor: float, stretch: float, warp: float) -> Identity:
    if voice in FESTIVAL_HTS_VOICES:  # stretch is used as the HTS speed
        return Identity(f"festival-{voice}-r{stretch:.2f}-w{warp:.2f}", "festival",
                        (("voice", voice), ("speed", stretch), ("warp", warp)))
    f0 = int(round(FESTIVAL_DIPHONE_VOICES[voice] * f0_factor))
    return Identity(f"festival-{voice}-f{f0}-d{stretch:.2f}-w{warp:.2f}", "festival",
                    (("voice", voice), ("f0_mean", f0), ("duration_stretch", stretch), ("warp", warp)))


def _bases(engine: str) -> list:
    if engine == "espeak":
        return list(itertools.product(ESPEAK_ACCENTS, ESPEAK_VARIANTS))
    if engine == "flite":
        return list(FLITE_VOICES)
    return list(FESTIVAL_DIPHONE_VOICES) + list(FESTIVAL_HTS_VOICES)


def _make(engine: str, base, rng: random.Random) -> Identity:
    if engine == "espeak":
        return _espeak(*base, rng.choice(ESPEAK_PITCHES), rng.choice(ESPEAK_RATES))
    make = _flite if engine == "flite" else _festival
    stretches = HTS_SPEEDS if base in FESTIVAL_HTS_VOICES else STRETCHES
    return make(base, rng.choice(F0_FACTORS), rng.choice(stretches), rng.choice(WARPS))


def catalogue(engine: str) -> list[Identity]:
    """Every identity the grid allows for ``engine`` (deterministic order)."""
    if engine == "espeak":
        return [_espeak(a, v, p, r) for (a, v), p, r in
                itertools.product(_bases("espeak"), ESPEAK_PITCHES, ESPEAK_RATES)]
    out: dict[str, Identity] = {}
    make = _flite if engine == "flite" else _festival
    for base in _bases(engine):
        stretches = HTS_SPEEDS if base in FESTIVAL_HTS_VOICES else STRETCHES
        for f0, st, w in itertools.product(F0_FACTORS, stretches, WARPS):
            ident = make(base, f0, st, w)
            out.setdefault(ident.id, ident)
    return list(out.values())


def engine_counts(n: int) -> dict[str, int]:
    """How many of ``n`` identities each engine gets (at least one each)."""
    if n < len(ENGINES):
        raise ValueError(f"need at least {len(ENGINES)} identities (one per engine), got {n}")
    counts = {e: max(1, int(round(n * ENGINE_SHARES[e]))) for e in ENGINES if e != "espeak"}
    counts = {"espeak": n - sum(counts.values()), **counts}
    if counts["espeak"] < 1:
        raise ValueError(f"cannot share {n} identities between {len(ENGINES)} engines")
    return counts


def select_identities(n: int, seed: int = 0) -> list[Identity]:
    """``n`` distinct identities, deterministic for ``seed``, every engine represented.

    Raises:
        ValueError: ``n`` is below 3 or above what the catalogue holds.
    """
    rng = random.Random(f"voxsep-voices-{seed}")
    chosen: list[Identity] = []
    for engine, count in engine_counts(n).items():
        size = len(catalogue(engine))
        if count > size:
            raise ValueError(f"{engine} has only {size} identities, asked for {count}")
        seen: set[str] = set()
        bases = _bases(engine)
        cycle: list = []
        while len(seen) < count:
            if not cycle:  # visit every base voice once (random order) before reusing one
                cycle = bases[:]
                rng.shuffle(cycle)
            ident = _make(engine, cycle.pop(), rng)
            if ident.id not in seen:
                seen.add(ident.id)
                chosen.append(ident)
    return chosen
