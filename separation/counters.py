"""Count estimators of the composed multi-head separator.

* ``head``: Multi-Decoder DPRNN's count head (Zhu, Yeh, Hasegawa-Johnson, ICASSP 2021,
  arXiv:2011.12022) on the trunk's features: PReLU + linear + ReLU per frame, mean over the valid
  frames, linear classifier.
* ``head_rnn``: the same on the trunk's features, with a BLSTM over frames before the pooling.
* ``crnn``: a dedicated counter on log-mel features in the line of CountNet (Stoeter, Chakrabarty,
  Edler, Habets, 2018, arXiv:1712.04555): convolution blocks over (frequency, time), a BLSTM over
  time, mean pooling over valid frames, a classifier. It does not need the trunk, so it trains on
  far more mixtures per CPU-minute than separation (``task: counting``) and counts whatever the
  separator's quality.
* ``fusion``: late fusion (stacking) of several counters: the members' log-probabilities,
  concatenated, through one linear layer, i.e. a multinomial logistic regression fitted on
  held-back mixtures by :func:`fit_fusion` (``voxsep export --calibrate``). Two counters that err
  differently (the trunk's head and the CRNN) count better together, and the fit also removes the
  members' bias towards too few talkers on unseen voices. With ``duration`` the combiner also reads
  the mixture's log duration and its products with the members' log-probabilities, so that it
  trusts each member as far as it counts right on mixtures of that length (short mixtures hide a
  talker more often); the duration is clipped to the range the fit saw.

Every counter maps to ``count_logits (B, n_classes)``. Contract: ``needs_trunk`` says whether
``forward`` uses the trunk's features; ``forward(mix, lengths, features, frame_mask)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torchaudio
from torch import nn

from separation.parts import PartRegistry


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over frames of ``x (B, F, D)``, only where ``mask (B, F)`` is 1 (all frames when None)."""
    if mask is None:
        return x.mean(dim=1)
    return (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


class TrunkCountHead(nn.Module):
    """Count head on the trunk's features (the SVoice-layout model's ``count_proj`` +
    ``count_classifier``)."""

    needs_trunk = True

    @dataclass
    class Config:
        hidden_size: int = 128

    def __init__(self, config: "TrunkCountHead.Config", n_classes: int, feature_size: int, sample_rate: int):
        super().__init__()
        self.config = config
        self.proj = nn.Sequential(nn.PReLU(), nn.Linear(feature_size, config.hidden_size), nn.ReLU())
        self.classifier = nn.Linear(config.hidden_size, n_classes)

    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None, features: torch.Tensor,
                frame_mask: torch.Tensor | None) -> torch.Tensor:
        return self.classifier(masked_mean(self.proj(features), frame_mask))


class TrunkCountRNN(nn.Module):
    """Count head with temporal context on the trunk's features: PReLU + linear + ReLU per frame, a
    BLSTM over frames, mean over the valid frames, linear classifier.

    The trunk's features were learnt to tell the talkers apart, so a counter on them sees who is
    speaking, not only how much; :class:`TrunkCountHead` averages frames independently, this one
    can follow talkers through time. Train it on a frozen trunk (``task: counting`` with
    ``task_options.freeze: [encoder, trunk, heads]``) so the separator is not changed; the counter
    then belongs to that trunk (``voxsep export`` checks).
    """

    needs_trunk = True

    @dataclass
    class Config:
        hidden_size: int = 128
        rnn_size: int = 128

    def __init__(self, config: "TrunkCountRNN.Config", n_classes: int, feature_size: int, sample_rate: int):
        super().__init__()
        self.config = config
        self.proj = nn.Sequential(nn.PReLU(), nn.Linear(feature_size, config.hidden_size), nn.ReLU())
        self.rnn = nn.LSTM(config.hidden_size, config.rnn_size, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * config.rnn_size, n_classes)

    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None, features: torch.Tensor,
                frame_mask: torch.Tensor | None) -> torch.Tensor:
        return self.classifier(masked_mean(self.rnn(self.proj(features))[0], frame_mask))


class CountCRNN(nn.Module):
    """CountNet-style CRNN on the mixture's log-mel (``features: mel``) or log linear-frequency
    (``features: linear``, the STFT bins up to ``max_hz``) spectrogram.

    A linear-frequency input keeps the harmonics of low voices apart (8 kHz, ``n_fft`` 512: 15.6 Hz
    bins, where the lowest mel bands of 64 are about 40 Hz wide); CountNet itself reads linear STFT
    magnitudes. The log frames are normalised per item (mean and variance over valid frames, per
    band), so the count does not depend on the recording's level. Conv blocks (3x3 conv, batch norm, ReLU,
    max-pool over frequency only, so the time resolution stays), then a BLSTM and masked mean
    pooling.
    """

    needs_trunk = False

    @dataclass
    class Config:
        n_mels: int = 64
        n_fft: int = 512
        features: str = "mel"
        max_hz: float | None = None
        hop_length: int = 128
        channels: tuple[int, ...] | list[int] = (32, 64, 64)
        hidden_size: int = 128

    def __init__(self, config: "CountCRNN.Config", n_classes: int, feature_size: int, sample_rate: int):
        super().__init__()
        self.config = config
        self.hop = config.hop_length
        # ``self.mel`` names the spectrogram of either kind (the name of the checkpoints' keys)
        if config.features == "mel":
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
                power=2.0, center=True)
            n_bands = config.n_mels
        elif config.features == "linear":
            self.mel = torchaudio.transforms.Spectrogram(n_fft=config.n_fft, hop_length=config.hop_length,
                                                         power=2.0, center=True)
            max_hz = sample_rate / 2 if config.max_hz is None else min(float(config.max_hz), sample_rate / 2)
            n_bands = int(max_hz / (sample_rate / config.n_fft)) + 1
        else:
            raise ValueError(f"counter features must be 'mel' or 'linear', got {config.features!r}")
        self.n_bands = n_bands
        layers: list[nn.Module] = []
        c_in, bands = 1, n_bands
        for c_out in config.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d((2, 1))]
            c_in, bands = c_out, bands // 2
        if bands < 1:
            raise ValueError(f"{len(config.channels)} pooling blocks leave no band of {n_bands} bands")
        self.conv = nn.Sequential(*layers)
        self.rnn = nn.LSTM(c_in * bands, config.hidden_size, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(2 * config.hidden_size, n_classes)

    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None, features: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        logmel = torch.log(self.mel(mix.float())[:, :self.n_bands] + 1e-8)  # (B, bands, N)
        n_frames = logmel.shape[-1]
        if lengths is None:
            mask = None
        else:
            valid = (torch.div(lengths.to(mix.device), self.hop, rounding_mode="floor") + 1).clamp(1, n_frames)
            mask = (torch.arange(n_frames, device=mix.device) < valid[:, None]).to(logmel.dtype)
        m = mask.unsqueeze(1) if mask is not None else torch.ones_like(logmel[:, :1])
        count = m.sum(-1, keepdim=True).clamp_min(1)
        mean = (logmel * m).sum(-1, keepdim=True) / count
        std = (((logmel - mean) * m).pow(2).sum(-1, keepdim=True) / count).sqrt().clamp_min(1e-3)
        x = ((logmel - mean) / std * m).unsqueeze(1)  # (B, 1, bands, N)
        x = self.conv(x)  # (B, C, bands, N)
        x = x.flatten(1, 2).transpose(1, 2)  # (B, N, C * bands)
        return self.classifier(masked_mean(self.rnn(x)[0], mask))


class FusionCounter(nn.Module):
    """Several counters combined: ``combine(concat_m log_softmax(member_m))``.

    Built with the combiner set to the mean of the members' log-probabilities (a product of
    experts); :func:`fit_fusion` fits it. ``member_log_probs`` gives the combiner's input, so a
    calibration set is run through the members once.
    """

    @dataclass
    class Config:
        members: list = field(default_factory=lambda: [{"type": "head"}, {"type": "crnn"}])
        #: ``None``, or ``[shortest, longest]`` seconds: the combiner reads the log duration (clipped
        #: to this range) and its products with the members' log-probabilities
        duration: list | None = None

        def __post_init__(self):
            if not self.members:
                raise ValueError("counter fusion: members is empty")
            if self.duration is not None:
                lo, hi = (float(v) for v in self.duration)
                if not 0 < lo <= hi:
                    raise ValueError(f"counter fusion: duration must be [shortest, longest] seconds > 0, got {self.duration}")
                self.duration = [lo, hi]
            full = [counter_config(m) for m in self.members]
            if any(m["type"] == "fusion" for m in full):
                raise ValueError("counter fusion: a member cannot itself be a fusion")
            self.members = full

    def __init__(self, config: "FusionCounter.Config", n_classes: int, feature_size: int, sample_rate: int):
        super().__init__()
        self.config = config
        self.n_classes = n_classes
        self.members = nn.ModuleList(build_counter(m, n_classes, feature_size, sample_rate) for m in config.members)
        self.needs_trunk = any(m.needs_trunk for m in self.members)
        self.sample_rate = sample_rate
        n_in = len(self.members) * n_classes
        self.combine = nn.Linear(2 * n_in + 1 if config.duration is not None else n_in, n_classes)
        with torch.no_grad():
            self.combine.weight.zero_()
            self.combine.weight[:, :n_in].copy_(torch.eye(n_classes).repeat(1, len(self.members)) / len(self.members))
            self.combine.bias.zero_()

    def member_log_probs(self, mix: torch.Tensor, lengths: torch.Tensor | None, features: torch.Tensor | None,
                         frame_mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, n_members * n_classes)``: each member's log-probabilities, side by side."""
        return torch.cat([m(mix, lengths, features, frame_mask).log_softmax(dim=-1) for m in self.members], dim=-1)

    def seconds(self, mix: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """``(B,)`` durations of the mixtures in seconds (their valid lengths)."""
        n = lengths if lengths is not None else torch.full((mix.shape[0],), mix.shape[-1], device=mix.device)
        return n.to(torch.float32) / self.sample_rate

    def combiner_inputs(self, log_probs: torch.Tensor, seconds: torch.Tensor) -> torch.Tensor:
        """What the combiner reads: the members' log-probabilities ``(B, M * C)``, and with ``duration``
        also the clipped log duration and its products with them (``(B, 2 * M * C + 1)``)."""
        if self.config.duration is None:
            return log_probs
        lo, hi = self.config.duration
        log_s = seconds.to(log_probs).clamp(lo, hi).log()[:, None]
        return torch.cat([log_probs, log_s, log_probs * log_s], dim=-1)

    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None, features: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        log_probs = self.member_log_probs(mix, lengths, features, frame_mask)
        return self.combine(self.combiner_inputs(log_probs, self.seconds(mix, lengths)))


def fit_fusion(inputs: torch.Tensor, labels: torch.Tensor, n_classes: int, l2: float = 1e-3,
               max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression ``labels ~ softmax(inputs @ W.T + b)``, fitted by L-BFGS.

    The inputs are standardised (per column) for the fit and the result is expressed on the raw
    inputs. The objective is ``mean cross-entropy + l2 * ||W_std||^2`` on the standardised inputs,
    the intercept unpenalised: scikit-learn's ``LogisticRegression(C=1 / (2 * l2 * N))`` on
    standardised inputs.

    Args:
        inputs: ``(N, D)`` features (e.g. :meth:`FusionCounter.member_log_probs`).
        labels: ``(N,)`` class indices in ``0..n_classes-1``.

    Returns:
        ``(weight (n_classes, D), bias (n_classes,))`` for ``nn.Linear``.
    """
    x = inputs.detach().double()
    y = labels.detach().long()
    if x.dim() != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"fit_fusion: expected inputs (N, D) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"fit_fusion: labels must be in 0..{n_classes - 1}")
    mu, sd = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ w.T + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = w / sd
        bias = b - (weight * mu).sum(dim=1)
    return weight.float(), bias.float()


#: L2 weights tried by :func:`select_l2` (``voxsep export --l2 auto``), and its folds
L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
CV_FOLDS = 5


def cv_folds(labels: torch.Tensor, folds: int) -> torch.Tensor:
    """``(N,)`` fold index of each item: stratified and deterministic (the items of each class, in
    their order, are dealt to the folds in turn), so every fold holds every class it can."""
    fold = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        fold[where] = torch.arange(len(where)) % folds
    return fold


def select_l2(inputs: torch.Tensor, labels: torch.Tensor, n_classes: int, grid: Sequence[float] = L2_GRID,
              folds: int = CV_FOLDS) -> tuple[float, dict[float, float]]:
    """The L2 weight of :func:`fit_fusion` with the least held-out cross-entropy in ``folds``-fold
    cross-validation (:func:`cv_folds`) over ``grid``.

    Returns:
        ``(best l2, {l2: held-out mean cross-entropy})``; ties go to the larger weight.
    """
    if folds < 2:
        raise ValueError(f"select_l2: folds must be >= 2, got {folds}")
    if not grid:
        raise ValueError("select_l2: the grid is empty")
    if len(labels) < folds:
        raise ValueError(f"select_l2: {len(labels)} items cannot make {folds} folds")
    fold = cv_folds(labels, folds)
    scores = {}
    for l2 in grid:
        total = 0.0
        for f in range(folds):
            train, held = fold != f, fold == f
            weight, bias = fit_fusion(inputs[train], labels[train], n_classes, l2=l2)
            logits = inputs[held].double() @ weight.double().T + bias.double()
            total += float(nn.functional.cross_entropy(logits, labels[held].long(), reduction="sum"))
        scores[float(l2)] = total / len(labels)
    best = min(sorted(scores, reverse=True), key=lambda l2: scores[l2])
    return best, scores


COUNTERS = PartRegistry("counter")
COUNTERS.register("head")(TrunkCountHead)
COUNTERS.register("head_rnn")(TrunkCountRNN)
COUNTERS.register("crnn")(CountCRNN)
COUNTERS.register("fusion")(FusionCounter)


def counter_config(config: Mapping[str, Any]) -> dict:
    """A counter spec ``{type: NAME, **sizes}`` with every default filled in."""
    return COUNTERS.full_config(config)


def build_counter(config: Mapping[str, Any], n_classes: int, feature_size: int, sample_rate: int) -> nn.Module:
    return COUNTERS.build(config, n_classes, feature_size, sample_rate)
