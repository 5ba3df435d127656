"""One module per `voxsep` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. The CLI imports a module only when its subcommand runs, so ``voxsep --help``
stays fast and a broken optional dependency affects only its own command.
"""

# Order is the order shown by `voxsep --help`.
COMMANDS = {
    "separate": "separate talkers in audio files (the count is estimated unless given)",
    "count": "estimate how many people talk in each file",
    "enhance": "remove noise from speech with the WaveNet denoiser",
    "vocode": "resynthesize audio through mel -> WaveNet vocoder",
    "corpus": "build the offline multi-voice speech corpus with TTS engines",
    "mix": "make wsj0-mix / LibriMix style mixtures of 1..C talkers (or noisy/clean pairs for denoisers)",
    "train": "train a model from a recipe config (separation, enhancement, vocoder)",
    "evaluate": "evaluate separation models, denoisers or vocoders (and estimates) against baselines",
    "export": "one deployable separation checkpoint (separator + separately trained counter)",
    "campaign": "record a training run in a campaign log and plot quality against CPU-hours",
    "demo": "end-to-end demo on bundled examples and models",
    "serve": "a local web page to separate recordings (upload, count, listen, download)",
    "bench": "speed and memory benchmarks",
}
