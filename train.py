"""Train SinGlow on folders of songs (or on the bundled synthetic demo corpus).

    python train.py --data_dir songs/virtual --data_dir songs/real --epochs 20
    python train.py --demo                      # synthetic corpus, small model, a few minutes

Each ``--data_dir`` folder's name labels its songs. Records are made (incrementally) into
``--records_dir``; checkpoints, ``config.json`` and ``feature_stats.json`` go to
``--checkpoint_dir``; TensorBoard events to ``--logdir``; ``reconstruction.wav`` and
``sample.wav`` to ``--output_dir``. Running the same command again resumes from the latest
checkpoint; a larger ``--epochs`` trains on. Ctrl-C (or SIGTERM, as sent by schedulers) saves a
checkpoint of the step reached and exits (status 130, or 143 for SIGTERM).

Exit status: 0 done, 1 training failed (no usable data, diverged), 2 refused before any work
(a bad flag, a missing or unreadable data folder, an unwritable output folder, a checkpoint of
another model), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common_definitions import COUPLINGS, FEATURES, Config  # noqa: E402  (TensorFlow-free)
from utils.cli import OneLineArgumentParser, finite_float  # noqa: E402

PROG = "train.py"
DEMO_DATA_ROOT = os.path.join("runs", "demo_data")

# What --demo changes for flags the user did not pass: a model that trains on 2 CPU cores in
# about three minutes (about 6 steps/s) and still learns audible structure.
DEMO_DEFAULTS = {
    "k_glow": 4,
    "l_glow": 3,
    "hidden_channels": 32,
    "batch_size": 16,
    "epochs": 8,
    "steps_per_epoch": 100,
    "checkpoint_every": 100,
    "warmup_steps": 100,
    "records_dir": os.path.join("runs", "demo", "records"),
    "checkpoint_dir": os.path.join("runs", "demo", "checkpoints"),
    "logdir": os.path.join("runs", "demo", "logs"),
    "output_dir": os.path.join("runs", "demo"),
}

_DEFAULTS = Config()

# (flag, Config field, type, help). Every flag defaults to None, meaning "the Config default"
# (or the demo default with --demo), so the Config stays the one place defaults live.
_FLAGS = (
    ("feature", str, "feature representation: log-magnitude STFT patches or raw sample windows"),
    ("sampling_rate", int, "audio rate in Hz; every file is resampled to it"),
    ("n_fft", int, "STFT frame length in samples (n_fft // 2 + 1 frequency bins)"),
    ("hop_length", int, "STFT hop in samples"),
    ("window_size", int, "patch length in time steps (frames or samples); default 64 frames / "
                         "4096 samples"),
    ("channel_size", int, "channels of a patch (waveform: samples folded into channels)"),
    ("log_floor", float, "amplitude added before the log of STFT magnitudes"),
    ("k_glow", int, "flow steps per level (K)"),
    ("l_glow", int, "levels (L)"),
    ("hidden_channels", int, "width of the coupling networks"),
    ("coupling", str, "coupling layer"),
    ("scale_shift", float, "affine scale is sigmoid(h + scale_shift)"),
    ("batch_size", int, "global batch size (split over the devices)"),
    ("learning_rate", float, "peak Adam learning rate"),
    ("warmup_steps", int, "linear learning-rate warm-up, in optimizer steps"),
    ("clip_norm", float, "global gradient-norm clip"),
    ("epochs", int, "epochs to train to (the run ends at epochs * steps_per_epoch steps)"),
    ("steps_per_epoch", int, "optimizer steps per epoch"),
    ("checkpoint_every", int, "save a checkpoint every N steps (and at each epoch's end)"),
    ("max_checkpoints", int, "checkpoints kept"),
    ("max_nonfinite_steps", int, "stop after N consecutive non-finite (skipped) steps"),
    ("log_every", int, "steps per compiled call; TensorBoard scalars are their mean"),
    ("temperature", float, "sampling temperature of the sampled clip"),
    ("seed", int, "seed of the initialisation, data order and patches"),
    ("records_dir", str, "TFRecords folder (made from --data_dir when given)"),
    ("checkpoint_dir", str, "checkpoints, config.json, feature_stats.json, glow.weights.h5"),
    ("logdir", str, "TensorBoard folder"),
    ("output_dir", str, "reconstruction.wav and sample.wav go here"),
    ("shard_size_seconds", float, "seconds of audio per TFRecord shard"),
    ("shuffle_buffer", int, "patches in the shuffle buffer"),
    ("griffin_lim_iters", int, "Griffin-Lim iterations for the sampled clip"),
)
_CHOICES = {"feature": FEATURES, "coupling": COUPLINGS}


def _seed(text: str) -> int:
    """--seed: an integer in [0, 2**32 - 1], the range NumPy's seeding accepts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32 - 1], got {value}")
    return value


_TYPES = {float: finite_float}


def _default_text(name: str) -> str:
    default = getattr(_DEFAULTS, name)
    if name == "window_size":
        default = "per feature"
    text = f"default {default}"
    if name in DEMO_DEFAULTS:
        text += f"; --demo: {DEMO_DEFAULTS[name]}"
    return text


def build_parser() -> argparse.ArgumentParser:
    demo = ", ".join(f"{k}={v}" for k, v in DEMO_DEFAULTS.items())
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Train the SinGlow Glow flow on songs. Rerunning resumes from the latest "
                    "checkpoint in --checkpoint_dir.",
        epilog=f"--demo generates the synthetic corpus in {DEMO_DATA_ROOT} if missing, trains on "
               f"it and uses these defaults for flags not given: {demo}.",
    )
    parser.add_argument("--data_dir", action="append", default=None, metavar="DIR",
                        help="a folder of songs (.wav .mp3 .flac .ogg, searched recursively); "
                             "repeat for several; the folder's name labels its songs")
    parser.add_argument("--demo", action="store_true",
                        help="train on the bundled synthetic corpus (generated on first use) with "
                             "small demo defaults; see below")
    for name, kind, text in _FLAGS:
        kind = _seed if name == "seed" else _TYPES.get(kind, kind)
        parser.add_argument(f"--{name}", type=kind, default=None, choices=_CHOICES.get(name),
                            metavar=None if name in _CHOICES else name.upper(),
                            help=f"{text} ({_default_text(name)})")
    parser.add_argument("--no_lu", action="store_true",
                        help="plain invertible 1x1 convolutions instead of LU-decomposed ones")
    parser.add_argument("--no_progress", action="store_true",
                        help="no tqdm progress bar (one line per epoch is always printed)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config the parsed flags describe (raises a one-line ValueError when invalid)."""
    values = {name: getattr(args, name) for name, _, _ in _FLAGS if getattr(args, name) is not None}
    data_dirs = list(args.data_dir or [])
    if args.demo:
        for name, value in DEMO_DEFAULTS.items():
            values.setdefault(name, value)
        data_dirs = [os.path.join(DEMO_DATA_ROOT, "virtual"), os.path.join(DEMO_DATA_ROOT, "real")] + data_dirs
    if args.no_lu:
        values["lu_decomposed"] = False
    return Config(data_dirs=tuple(data_dirs), demo=bool(args.demo), **values)


def _writable_dir(path: str, flag: str) -> None:
    """Refuse ``path`` unless it is, or can be created as, a writable folder.

    Creates nothing: a refused run (or one refused later, e.g. for a checkpoint of another
    model) leaves no empty output folders behind. A missing folder is judged by its nearest
    existing ancestor.
    """
    target = os.path.abspath(path)
    existing = target
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == target else f"{existing}, above it, "
        raise OSError(f"{flag} {path} is not a writable folder ({where}is not a folder)")
    if existing != target:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OSError(f"{flag} {path} is not a writable folder ({existing} is not writable)")
        return
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(f"{flag} {path} is not a writable folder ({reason})") from None


def check_paths(config: Config) -> None:
    """Refuse missing or unreadable data folders and unwritable output folders (one line)."""
    demo_dirs = {os.path.join(DEMO_DATA_ROOT, "virtual"), os.path.join(DEMO_DATA_ROOT, "real")}
    for folder in config.data_dirs:
        if config.demo and folder in demo_dirs:
            continue  # generated before training
        if not os.path.isdir(folder):
            raise OSError(f"--data_dir {folder} is not a folder")
        try:
            os.listdir(folder)
        except OSError as error:
            raise OSError(f"--data_dir {folder} is not readable ({error.strerror or error})") from None
        if not os.access(folder, os.R_OK | os.X_OK):
            raise OSError(f"--data_dir {folder} is not readable")
    if not config.data_dirs and not os.path.isfile(os.path.join(config.records_dir, "manifest.json")):
        raise ValueError(
            f"no data: give --data_dir (repeatable), a --records_dir holding records "
            f"({config.records_dir} holds none), or --demo"
        )
    outputs = [("--checkpoint_dir", config.checkpoint_dir), ("--logdir", config.logdir),
               ("--output_dir", config.output_dir)]
    if config.data_dirs:
        outputs.append(("--records_dir", config.records_dir))
    for flag, path in outputs:
        _writable_dir(path, flag)


def _error(message: str, status: int) -> int:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad flag already reported on one line
        return int(stop.code or 0)
    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C before training started (e.g. while TensorFlow loads), or
        print(f"{PROG}: interrupted", file=sys.stderr)  # a second one while saving
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        check_paths(config)
    except (ValueError, OSError) as error:
        return _error(error, 2)

    # TensorFlow is imported only now: flag errors above come back at once.
    from data_loader import DataError
    from pipeline import CheckpointMismatch, Trainer, TrainingDiverged

    try:
        if config.demo:
            from utils.demo_data import make_demo_corpus

            make_demo_corpus(root=DEMO_DATA_ROOT, sampling_rate=config.sampling_rate)
        trainer = Trainer(config, progress=False if args.no_progress else None)
    except (ValueError, OSError) as error:  # CheckpointMismatch is a ValueError
        return _error(error, 2)
    try:
        result = trainer.fit()
    except (TrainingDiverged, DataError, CheckpointMismatch, OSError) as error:
        return _error(error, 1)
    # The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
    return 128 + result.stop_signal if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
