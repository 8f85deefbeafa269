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
from typing import Any, Optional, Tuple

# The one exception to ``common_definitions <- utils``: utils.files imports no project module, so
# the Config's atomic save shares the project's one atomic write without an import cycle.
from utils.files import atomic_write_text

FEATURES = ("spectrogram", "waveform", "world")
WORLD_F0_METHODS = ("dio", "harvest")
COUPLINGS = ("affine", "additive")
# --mixed_precision: the compute dtype of the coupling networks' and priors' convolutions during
# training (utils/training/precision.py); variables, log-determinants and the loss stay float32.
MIXED_PRECISIONS = ("off", "bf16", "fp16")

# Patch length in time steps when --window_size is not given: 64 STFT frames (about one second at
# 16 kHz with hop 256, the seed's one-second windows) for spectrograms, 4096 samples for waveforms.
DEFAULT_WINDOW_SIZE = {"spectrogram": 64, "waveform": 4096, "world": 64}


def _field(default: Any, help_text: str, *, model: bool = False, details: str = "",
           flag: Optional[str] = None, flag_help: Optional[str] = None,
           choices: Optional[Tuple[str, ...]] = None, metavar: Optional[str] = None,
           default_text: Optional[str] = None) -> Any:
    """A :class:`Config` field whose documentation lives in its ``metadata``.

    The metadata is the one source of what a field means: ``train.py`` builds its flags from it,
    ``tools/config_table.py`` the README's configuration table, and :data:`MODEL_FIELDS` is the
    list of fields marked ``model``. Every field has every key (``None`` or ``""`` when unused):

    - ``help`` (from ``help_text``): what the field means, one line with no final full stop;
      ``train.py --help`` shows it (then the default) and the README table starts with it.
    - ``details``: more of the meaning, shown only in the README table (after ``help``).
    - ``model``: True for the fields that fix the shapes and the meaning of a trained model: a
      checkpoint written under one value can never be restored under another.
    - ``flag``: the ``train.py`` flag when it is not ``--<field>`` (``--data_dir`` for the
      repeatable ``data_dirs``, ``--no_lu`` for the switch that turns ``lu_decomposed`` off).
    - ``flag_help``: the flag's help when it is not ``help`` (a switch that says the opposite).
    - ``choices``: the only values the flag accepts.
    - ``metavar``: the flag's value name in ``--help`` (default: the field's name in capitals).
    - ``default_text``: how ``--help`` and the README name a default that is not one value.
    """
    metadata = {"help": help_text, "details": details, "model": model, "flag": flag,
                "flag_help": flag_help, "choices": choices, "metavar": metavar,
                "default_text": default_text}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of SinGlow-TF2, with its default.

    Each field's meaning, its ``train.py`` flag and whether it is a model field are in the field's
    metadata (see :func:`_field`); ``python train.py --help`` and the README's configuration table
    (``python tools/config_table.py``) show them. Fields come in five groups: feature and shape,
    model, training, paths, data.
    """

    # feature and shape
    feature: str = _field(
        "spectrogram", "feature representation: log-magnitude STFT patches, raw sample windows "
                       "or WORLD vocoder envelopes", model=True, choices=FEATURES,
        details="``spectrogram`` patches are frames x bins x 1; ``waveform`` windows are shaped "
                "``(window_size // channel_size, 1, channel_size)`` and squeezed along time only; "
                "``world`` patches are frames x ``world_dims`` x 2 (coded spectral envelope and "
                "aperiodicity at the STFT hop; F0 kept beside, every decode uses the source's)")
    sampling_rate: int = _field(16000, "audio rate in Hz; every file is resampled to it",
                                model=True)
    n_fft: int = _field(
        510, "STFT frame length in samples (n_fft // 2 + 1 frequency bins)", model=True,
        details="510 gives 256 bins, which divides by ``2**l_glow`` for ``l_glow <= 8``")
    hop_length: int = _field(256, "STFT hop in samples", model=True,
                             details="at most ``n_fft``, or the STFT cannot be inverted")
    window_size: Optional[int] = _field(
        None, "patch length in time steps (frames or samples); default "
              f"{DEFAULT_WINDOW_SIZE['spectrogram']} frames / "
              f"{DEFAULT_WINDOW_SIZE['waveform']} samples",
        model=True, default_text="per feature")
    channel_size: int = _field(
        1, "channels of a patch (waveform: samples folded into channels)", model=True,
        details="must be 1 for spectrograms; ``window_size`` must be a multiple of it")
    world_dims: int = _field(
        64, "coded WORLD envelope and aperiodicity coefficients per frame (feature world)",
        model=True, details="a multiple of ``2**l_glow``; ``pyworld.code_spectral_envelope``")
    world_f0: str = _field(
        "dio", "F0 estimator of the world feature: DIO + StoneMask (fast) or Harvest",
        model=True, choices=WORLD_F0_METHODS)
    log_floor: float = _field(
        1e-4, "amplitude added before the log of STFT magnitudes",
        details="keeps digital silence finite (linear amplitude of a [-1, 1] signal)")
    # model
    k_glow: int = _field(4, "flow steps per level (K)", model=True,
                         details="a step is ActNorm -> invertible 1x1 conv -> coupling")
    l_glow: int = _field(
        3, "levels (L)", model=True,
        details="each starts with a squeeze that halves the time axis (and the frequency axis "
                "for spectrograms); all but the last end with a split")
    hidden_channels: int = _field(128, "width of the coupling networks", model=True)
    coupling: str = _field(
        "affine", "coupling layer", model=True, choices=COUPLINGS,
        details="``affine`` (bounded scale) or ``additive`` (volume preserving)")
    lu_decomposed: bool = _field(
        True, "LU-parametrised invertible 1x1 convolutions (else a plain matrix)", model=True,
        flag="--no_lu", flag_help="plain invertible 1x1 convolutions instead of LU-decomposed ones")
    scale_shift: float = _field(2.0, "affine scale is sigmoid(h + scale_shift)", model=True,
                                details="2.0 starts near the identity")
    conditional: bool = _field(
        False, "train p(x | singer): a learned embedding per singer (top folder) conditions "
               "every coupling network and prior", model=True,
        details="the singers' names are saved in ``singers.json`` beside the checkpoint; "
                "``migrate.py --method convert`` encodes under one singer and decodes under "
                "another")
    singer_dims: int = _field(16, "size of a singer's embedding (with --conditional)",
                              model=True)
    singer_norm: bool = _field(
        True, "a conditional model first standardises each singer's features per bin "
              "(SingerNorm)", model=True,
        details="a linear map of the singer's embedding, set from each singer's moments on the "
                "first batch and then trained; conversion starts from per-bin moment matching "
                "between the singers (checkpoints saved before it existed load without it)",
        flag="--no_singer_norm",
        flag_help="a conditional model without the per-singer input normalisation")
    parallel: bool = _field(
        False, "learn the conversion from the first --data_dir's singer to the others from "
               "songs of the same file name (a flow of the target's frames given the source's)",
        model=True,
        details="needs ``conditional`` and the ``world`` feature; the pairs are aligned by dynamic "
                "time warping of their mel-cepstra; the first layer (ContextNorm) predicts each "
                "target frame's mean and scale from the aligned source frames, and replaces "
                "SingerNorm; ``migrate.py --method convert`` then decodes under the source's "
                "frames (``--temperature``)")
    # training
    batch_size: int = _field(16, "global batch size (split over the devices)")
    learning_rate: float = _field(1e-3, "peak Adam learning rate")
    warmup_steps: int = _field(100, "linear learning-rate warm-up, in optimizer steps",
                               details="from 0 to ``learning_rate``")
    clip_norm: float = _field(50.0, "global gradient-norm clip")
    epochs: int = _field(10, "epochs to train to (the run ends at epochs * steps_per_epoch steps)")
    steps_per_epoch: int = _field(100, "optimizer steps per epoch")
    checkpoint_every: int = _field(100, "save a checkpoint every N steps (and at each epoch's end)")
    max_checkpoints: int = _field(3, "checkpoints kept")
    max_nonfinite_steps: int = _field(20, "stop after N consecutive non-finite (skipped) steps")
    log_every: int = _field(10, "steps per compiled call; TensorBoard scalars are their mean",
                            details="the progress bar also moves once per call")
    temperature: float = _field(0.7, "sampling temperature of the sampled clip")
    seed: int = _field(0, "seed of the initialisation, data order and patches",
                       details="an integer in [0, 2**32)")
    validation_split: float = _field(
        0.1, "fraction of each singer's songs held out for the validation curve (0: none)",
        details="whole songs, chosen per label by a hash of the label and file name (not the "
                "seed), at least one per label of two or more songs and never a label's last; "
                "ignored with ``--validation_dir``; the split is saved in ``validation.json`` "
                "beside the checkpoint and kept on resume; the held-out songs are never trained "
                "on and the feature statistics come from the training songs")
    early_stopping_patience: int = _field(
        0, "stop after N epochs without a lower validation bits/dim (0: never)",
        details="the weights of the lowest validation bits/dim are kept in "
                "``checkpoint_dir/best/`` either way")
    mixed_precision: str = _field(
        "off", "compute dtype of the coupling networks' and priors' convolutions while training",
        choices=MIXED_PRECISIONS,
        details="``bf16`` or ``fp16`` (with dynamic loss scaling); variables, log-determinants, "
                "the loss, validation and every encode/decode after training stay float32")
    # paths
    data_dirs: Tuple[str, ...] = _field(
        (), "audio folders; each top folder's name is the label of its songs",
        flag="--data_dir", metavar="DIR",
        flag_help="a folder of songs (.wav .mp3 .flac .ogg, searched recursively); repeat for "
                  "several; the folder's name labels its songs")
    validation_dirs: Tuple[str, ...] = _field(
        (), "held-out audio folders for the validation curve (instead of --validation_split)",
        flag="--validation_dir", metavar="DIR",
        flag_help="a folder of held-out songs for the validation curve, labelled by its name as "
                  "--data_dir (repeatable); replaces --validation_split",
        details="made into the records with ``--data_dir``; without ``--data_dir`` the records "
                "must already hold them")
    records_dir: str = _field("runs/records", "TFRecords folder (made from --data_dir when given)")
    checkpoint_dir: str = _field("checkpoints",
                                 "checkpoints, config.json, feature_stats.json, glow.weights.h5")
    init_from: Optional[str] = _field(
        None, "start a new run from the weights of another run folder (fine-tuning)",
        metavar="CK", default_text="none",
        details="same model fields; a fresh optimizer and step 0, the source run's feature "
                "normalisation unless ``--renormalize``; its latest checkpoint, else its "
                "``glow.weights.h5`` (``CK/best`` works too); ignored when ``checkpoint_dir`` "
                "already holds a checkpoint (that run resumes)")
    logdir: str = _field("logs", "TensorBoard folder")
    output_dir: str = _field("runs", "reconstruction.wav and sample.wav go here")
    demo: bool = _field(
        False, "train on the bundled synthetic corpus (generated on first use)",
        flag_help="train on the bundled synthetic corpus (generated on first use) with small "
                  "demo defaults; see below")
    # data
    shard_size_seconds: float = _field(600.0, "seconds of audio per TFRecord shard")
    shuffle_buffer: int = _field(1024, "patches in the shuffle buffer",
                                 details="tf.data shuffles the training patches through it")
    griffin_lim_iters: int = _field(
        64, "Griffin-Lim iterations for the sampled clip",
        details="every Griffin-Lim inversion uses it (e.g. ``migrate.py --griffin_lim``)")
    renormalize: bool = _field(
        False, "with --init_from: normalise with this run's training songs' statistics",
        details="instead of the source run's ``feature_stats.json``")

    def __post_init__(self) -> None:
        for name in ("data_dirs", "validation_dirs"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                dirs = (value,) if isinstance(value, str) else value
                object.__setattr__(self, name, tuple(str(d) for d in dirs))
        if self.window_size is None and self.feature in DEFAULT_WINDOW_SIZE:
            object.__setattr__(self, "window_size", DEFAULT_WINDOW_SIZE[self.feature])
        if self.parallel and self.singer_norm:
            # A parallel model's first layer is ContextNorm, which SingerNorm would precede.
            object.__setattr__(self, "singer_norm", False)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise a one-line ``ValueError`` naming the bad field and how to fix it."""
        _check(self)

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
        if self.feature == "world":
            return (self.window_size, self.world_dims, 2)
        return (self.window_size // self.channel_size, 1, self.channel_size)

    @property
    def patch_samples(self) -> int:
        """Audio samples covered by one patch (frames are placed ``hop_length`` apart)."""
        if self.feature == "spectrogram":
            return (self.window_size - 1) * self.hop_length + self.n_fft
        if self.feature == "world":  # one WORLD frame per hop, centred on t * hop_length
            return (self.window_size - 1) * self.hop_length + 1
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
        data["validation_dirs"] = list(self.validation_dirs)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Config fields {unknown}; known fields: {sorted(known)}")
        if "conditional" in data and "singer_norm" not in data:
            # Saved before SingerNorm existed: those conditional models have none.
            data = {**data, "singer_norm": False}
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def save(self, path: str) -> None:
        """Write the config as JSON to ``path`` (atomically: a crash leaves the old file)."""
        atomic_write_text(path, self.to_json() + "\n")

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



def _check(config: "Config") -> None:
    """Raise a one-line ``ValueError`` naming the bad field of ``config`` and how to fix it."""
    if config.feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {config.feature!r}")
    if config.world_f0 not in WORLD_F0_METHODS:
        raise ValueError(f"world_f0 must be one of {WORLD_F0_METHODS}, got {config.world_f0!r}")
    if config.coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {config.coupling!r}")
    positive = (
        "sampling_rate", "n_fft", "hop_length", "window_size", "channel_size", "k_glow",
        "l_glow", "hidden_channels", "singer_dims", "world_dims", "batch_size", "epochs",
        "steps_per_epoch",
        "checkpoint_every", "max_checkpoints", "max_nonfinite_steps", "griffin_lim_iters",
        "shuffle_buffer", "log_every",
    )
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("learning_rate", "clip_norm", "log_floor", "shard_size_seconds"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not isinstance(config.scale_shift, (int, float)) or not math.isfinite(config.scale_shift):
        raise ValueError(f"scale_shift must be a finite number, got {config.scale_shift!r}")
    if not isinstance(config.seed, int) or not 0 <= config.seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {config.seed!r}")
    if not isinstance(config.warmup_steps, int) or config.warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {config.warmup_steps!r}")
    if not isinstance(config.temperature, (int, float)) or not 0 <= config.temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0, got {config.temperature!r}")
    _validate_steering(config)
    if config.l_glow > 12:
        raise ValueError(f"l_glow must be at most 12, got {config.l_glow}")
    step = 2 ** config.l_glow
    height, width, channels = config.input_shape
    if config.feature in ("spectrogram", "world"):
        if config.channel_size != 1:
            raise ValueError(
                f"channel_size must be 1 for the {config.feature} feature, got "
                f"{config.channel_size}"
            )
        if config.hop_length > config.n_fft:
            raise ValueError(
                f"hop_length ({config.hop_length}) must not exceed n_fft ({config.n_fft}), "
                "or the STFT cannot be inverted"
            )
        if config.feature == "world" and width % step:
            raise ValueError(
                f"world_dims={width} does not divide by 2**l_glow={step}; choose a multiple "
                f"of {step} (e.g. {max(step, width - width % step)}) or lower l_glow")
        if config.feature == "spectrogram" and width % step:
            raise ValueError(
                f"n_fft={config.n_fft} gives {width} frequency bins, which does not divide by "
                f"2**l_glow={step}; choose n_fft so that n_fft // 2 + 1 divides by {step} "
                f"(e.g. n_fft={2 * step * (width // step) - 2}) or lower l_glow"
            )
    elif config.window_size % config.channel_size:
        raise ValueError(
            f"window_size ({config.window_size}) must be a multiple of channel_size "
            f"({config.channel_size})"
        )
    if height % step:
        lower = max(step, height - height % step)
        raise ValueError(
            f"the patch has {height} time steps, which does not divide by 2**l_glow={step}; "
            f"set window_size to a multiple of {step * (1 if config.feature == 'spectrogram' else config.channel_size)} "
            f"(e.g. {lower * (1 if config.feature == 'spectrogram' else config.channel_size)}) "
            "or lower l_glow"
        )


def _validate_steering(config) -> None:
    """The validation curve, early stopping, fine-tuning and mixed precision fields."""
    split = config.validation_split
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 <= split < 1:
        raise ValueError(f"validation_split must be a number in [0, 1), got {split!r}")
    patience = config.early_stopping_patience
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise ValueError(f"early_stopping_patience must be an integer >= 0, got {patience!r}")
    if patience and not split and not config.validation_dirs:
        raise ValueError("early_stopping_patience needs a validation curve: set "
                         "validation_split > 0 or give validation_dirs")
    if config.mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got "
                         f"{config.mixed_precision!r}")
    if config.init_from is not None and (not isinstance(config.init_from, str)
                                       or not config.init_from):
        raise ValueError(f"init_from must be a run folder, got {config.init_from!r}")
    if config.parallel and not (config.conditional and config.feature == "world"):
        raise ValueError("parallel needs conditional and the world feature (--conditional "
                         "--feature world): it converts WORLD frames between singers")
    if config.renormalize and config.init_from is None:
        raise ValueError("renormalize only applies with init_from (a fresh run always "
                         "normalises with its training songs' statistics)")

# Fields that fix the shapes and the meaning of a trained model (marked ``model`` in their
# metadata), in field order. A checkpoint written under one value of these can never be restored
# under another.
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.metadata["model"])
