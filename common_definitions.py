"""The one configuration object of SinGlow-TF2.

Every hyperparameter lives in the frozen :class:`Config` dataclass with its default. Command-line
flags build a ``Config``; the ``Config`` is passed down to the data loader, the model and the
trainer, and written as JSON beside every checkpoint so that inference rebuilds the same model and
the same features. Nothing in the project reads module-level settings.

Units used throughout the project:

- time on the model's axis 1 ("H") is counted in *time steps*: STFT frames for the
  ``spectrogram`` feature, samples for the ``waveform`` feature;
- audio lengths are in samples at ``sampling_rate`` Hz unless a name ends in ``_seconds``;
- log-likelihoods are in nats, ``bits_per_dim`` in bits per dimension of the feature patch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional, Tuple

FEATURES = ("spectrogram", "waveform")
COUPLINGS = ("affine", "additive")

# Patch length in time steps when --window_size is not given: 64 STFT frames (about one second at
# 16 kHz with hop 256, the seed's one-second windows) for spectrograms, 4096 samples for waveforms.
DEFAULT_WINDOW_SIZE = {"spectrogram": 64, "waveform": 4096}

# Fields that fix the shapes and the meaning of a trained model. A checkpoint written under one
# value of these can never be restored under another.
MODEL_FIELDS = (
    "feature",
    "sampling_rate",
    "n_fft",
    "hop_length",
    "window_size",
    "channel_size",
    "k_glow",
    "l_glow",
    "hidden_channels",
    "coupling",
    "lu_decomposed",
    "scale_shift",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of SinGlow-TF2.

    Feature and shape:
        feature: ``"spectrogram"`` (log-magnitude STFT patches, frames x bins x 1) or
            ``"waveform"`` (raw sample windows shaped ``(window_size // channel_size, 1,
            channel_size)``, squeezed along time only).
        sampling_rate: audio rate in Hz; every file is resampled to it.
        n_fft: STFT frame length in samples; the patch has ``n_fft // 2 + 1`` frequency bins
            (510 gives 256 bins, which divides by ``2**l_glow`` for ``l_glow <= 8``).
        hop_length: STFT hop in samples.
        window_size: patch length in time steps (frames or samples); ``None`` picks the
            feature's default (64 frames, 4096 samples).
        channel_size: channels of a patch. Must be 1 for spectrograms; for waveforms,
            ``channel_size`` consecutive samples are folded into channels.
        log_floor: amplitude added before the logarithm of STFT magnitudes, so that digital
            silence stays finite (in linear amplitude units of a [-1, 1] signal).

    Model:
        k_glow: flow steps (ActNorm -> 1x1 conv -> coupling) per level ("K").
        l_glow: levels ("L"); each starts with a squeeze that halves the time axis (and the
            frequency axis for spectrograms), all but the last end with a split.
        hidden_channels: width of the coupling networks.
        coupling: ``"affine"`` (bounded scale) or ``"additive"`` (volume preserving).
        lu_decomposed: LU-parametrised invertible 1x1 convolutions (else a plain matrix).
        scale_shift: the affine scale is ``sigmoid(h + scale_shift)``; 2.0 starts near identity.

    Training:
        batch_size: global batch size (split over replicas).
        learning_rate: peak Adam learning rate.
        warmup_steps: linear learning-rate warm-up from 0 to ``learning_rate``.
        clip_norm: global gradient-norm clip.
        epochs, steps_per_epoch: the run length in optimizer steps is their product.
        checkpoint_every: save a checkpoint every this many steps (and at each epoch's end).
        max_checkpoints: checkpoints kept by the CheckpointManager.
        max_nonfinite_steps: consecutive non-finite steps after which training stops.
        log_every: steps run per call of the compiled train loop; their mean losses are written
            to TensorBoard and the progress bar once per call.
        temperature: sampling temperature for the summaries.
        seed: seeds model initialisation, data order and patch sampling.

    Paths:
        data_dirs: audio folders; each top folder's name is the label of its songs.
        records_dir, checkpoint_dir, logdir, output_dir: where records, checkpoints, TensorBoard
            events and generated audio go.
        demo: train on the bundled synthetic corpus (generated on first use).

    Data:
        shard_size_seconds: audio per TFRecord shard, in seconds.
        shuffle_buffer: patches held by the tf.data shuffle buffer.
        griffin_lim_iters: Griffin-Lim iterations when a spectrogram has no phase.
    """

    # feature and shape
    feature: str = "spectrogram"
    sampling_rate: int = 16000
    n_fft: int = 510
    hop_length: int = 256
    window_size: Optional[int] = None
    channel_size: int = 1
    log_floor: float = 1e-4
    # model
    k_glow: int = 4
    l_glow: int = 3
    hidden_channels: int = 128
    coupling: str = "affine"
    lu_decomposed: bool = True
    scale_shift: float = 2.0
    # training
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    clip_norm: float = 50.0
    epochs: int = 10
    steps_per_epoch: int = 100
    checkpoint_every: int = 100
    max_checkpoints: int = 3
    max_nonfinite_steps: int = 20
    log_every: int = 10
    temperature: float = 0.7
    seed: int = 0
    # paths
    data_dirs: Tuple[str, ...] = ()
    records_dir: str = "runs/records"
    checkpoint_dir: str = "checkpoints"
    logdir: str = "logs"
    output_dir: str = "runs"
    demo: bool = False
    # data
    shard_size_seconds: float = 600.0
    shuffle_buffer: int = 1024
    griffin_lim_iters: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.data_dirs, (list, str)):
            dirs = (self.data_dirs,) if isinstance(self.data_dirs, str) else self.data_dirs
            object.__setattr__(self, "data_dirs", tuple(str(d) for d in dirs))
        if self.window_size is None and self.feature in DEFAULT_WINDOW_SIZE:
            object.__setattr__(self, "window_size", DEFAULT_WINDOW_SIZE[self.feature])
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise a one-line ``ValueError`` naming the bad field and how to fix it."""
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {self.feature!r}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {self.coupling!r}")
        positive = (
            "sampling_rate", "n_fft", "hop_length", "window_size", "channel_size", "k_glow",
            "l_glow", "hidden_channels", "batch_size", "epochs", "steps_per_epoch",
            "checkpoint_every", "max_checkpoints", "max_nonfinite_steps", "griffin_lim_iters",
            "shuffle_buffer", "log_every",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "clip_norm", "log_floor", "shard_size_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not isinstance(self.scale_shift, (int, float)) or not math.isfinite(self.scale_shift):
            raise ValueError(f"scale_shift must be a finite number, got {self.scale_shift!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.l_glow > 12:
            raise ValueError(f"l_glow must be at most 12, got {self.l_glow}")
        step = 2 ** self.l_glow
        height, width, channels = self.input_shape
        if self.feature == "spectrogram":
            if self.channel_size != 1:
                raise ValueError(
                    f"channel_size must be 1 for the spectrogram feature, got {self.channel_size}"
                )
            if self.hop_length > self.n_fft:
                raise ValueError(
                    f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft}), "
                    "or the STFT cannot be inverted"
                )
            if width % step:
                raise ValueError(
                    f"n_fft={self.n_fft} gives {width} frequency bins, which does not divide by "
                    f"2**l_glow={step}; choose n_fft so that n_fft // 2 + 1 divides by {step} "
                    f"(e.g. n_fft={2 * step * (width // step) - 2}) or lower l_glow"
                )
        elif self.window_size % self.channel_size:
            raise ValueError(
                f"window_size ({self.window_size}) must be a multiple of channel_size "
                f"({self.channel_size})"
            )
        if height % step:
            lower = max(step, height - height % step)
            raise ValueError(
                f"the patch has {height} time steps, which does not divide by 2**l_glow={step}; "
                f"set window_size to a multiple of {step * (1 if self.feature == 'spectrogram' else self.channel_size)} "
                f"(e.g. {lower * (1 if self.feature == 'spectrogram' else self.channel_size)}) "
                "or lower l_glow"
            )

    # ------------------------------------------------------------------ derived values
    @property
    def n_bins(self) -> int:
        """Frequency bins of the STFT (``n_fft // 2 + 1``)."""
        return self.n_fft // 2 + 1

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """Shape ``(H, W, C)`` of one training patch: ``H`` time steps on axis 1."""
        if self.feature == "spectrogram":
            return (self.window_size, self.n_bins, 1)
        return (self.window_size // self.channel_size, 1, self.channel_size)

    @property
    def patch_samples(self) -> int:
        """Audio samples covered by one patch (frames are placed ``hop_length`` apart)."""
        if self.feature == "spectrogram":
            return (self.window_size - 1) * self.hop_length + self.n_fft
        return self.window_size

    @property
    def patch_seconds(self) -> float:
        return self.patch_samples / self.sampling_rate

    @property
    def time_multiple(self) -> int:
        """Whole songs are padded to a multiple of this many time steps before encoding."""
        return 2 ** self.l_glow

    @property
    def dims(self) -> int:
        """Dimensions ``D = H * W * C`` of one patch (the denominator of bits/dim)."""
        height, width, channels = self.input_shape
        return height * width * channels

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ (de)serialisation
    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["data_dirs"] = list(self.data_dirs)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def save(self, path: str) -> None:
        """Write the config as JSON to ``path`` (atomically: a crash leaves the old file)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(self.to_json() + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Config":
        with open(path, encoding="utf-8") as handle:
            return cls.from_json(handle.read())

    def model_signature(self) -> dict:
        """The fields that must agree between a checkpoint and the model restoring it."""
        return {name: getattr(self, name) for name in MODEL_FIELDS}

    def incompatibilities(self, other: "Config") -> list:
        """Human-readable ``field: ours vs theirs`` for every model field that differs."""
        mine, theirs = self.model_signature(), other.model_signature()
        return [f"{k}={theirs[k]!r} (now {mine[k]!r})" for k in MODEL_FIELDS if mine[k] != theirs[k]]
