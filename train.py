"""Train SinGlow on folders of songs (or on the bundled synthetic demo corpus).

    python train.py --data_dir songs/virtual --data_dir songs/real --epochs 20
    python train.py --demo                      # synthetic corpus, small model, a few minutes

Each ``--data_dir`` folder's name labels its songs. Records are made (incrementally) into
``--records_dir``; checkpoints, ``config.json`` and ``feature_stats.json`` go to
``--checkpoint_dir``; TensorBoard events to ``--logdir``; ``reconstruction.wav`` and
``sample.wav`` to ``--output_dir``. Running the same command again resumes from the latest
checkpoint; a larger ``--epochs`` trains on. Ctrl-C (or SIGTERM, as sent by schedulers) saves a
checkpoint of the step reached and exits (status 130, or 143 for SIGTERM).

Every epoch the held-out songs (``--validation_split``, default 0.1 of each singer's songs, or
``--validation_dir``) are scored: ``val B bits/dim`` on the epoch line, ``val_bits_per_dim`` in
TensorBoard, the best weights in ``CHECKPOINT_DIR/best/`` (a run folder migrate.py and
evaluate.py accept), and ``--early_stopping_patience N`` stops after N epochs without a lower
one. ``--init_from CK`` starts a new run from another run's weights (fine-tuning);
``--mixed_precision bf16|fp16`` trains with low-precision convolutions.

A checkpoint folder is written by one run at a time (a second ``train.py`` on it is refused);
its checkpoints are found on disk when the ``checkpoint`` index is missing or damaged, and a
damaged newest checkpoint is skipped for the previous one (one warning line each).

Exit status: 0 done, 1 training failed (no usable data, diverged, a checkpoint or run file that
cannot be written, e.g. a full disk), 2 refused before any work (a bad flag, a missing or
unreadable data folder, an unwritable output folder, a checkpoint of another model or of other
feature statistics, a folder in use by another run, ``--feature world`` without pyworld), 130
interrupted by Ctrl-C, 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common_definitions import Config  # noqa: E402  (TensorFlow-free)
from utils.cli import OneLineArgumentParser, finite_float, run_cli  # noqa: E402
from utils.resources import check_training_fits, check_writable_folder  # noqa: E402

PROG = "train.py"
DEMO_DATA_ROOT = os.path.join("runs", "demo_data")

# What --demo changes for flags the user did not pass: a model that trains on 2 CPU cores in
# about three minutes (about 6 steps/s) and still learns audible structure.
DEMO_DEFAULTS = {
    # A singer-conditional model, so the demo shows convert beside the latent moves and eq.
    "conditional": True,
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

# What to train on comes first in --help; then the valued flags in Config order; then switches.
_LEADING = ("data_dirs", "validation_dirs", "demo")


def _seed(text: str) -> int:
    """--seed: an integer in [0, 2**32 - 1], the range NumPy's seeding accepts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32 - 1], got {value}")
    return value


# argparse types of the flags: by the field's type, but non-finite floats and seeds outside NumPy's
# range are refused while parsing.
_TYPES = {int: int, float: finite_float, str: str}
_FIELD_TYPES = {"seed": _seed}


def _value_type(hint):
    """``int`` for ``int`` and ``Optional[int]``; ``str`` for ``Tuple[str, ...]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return args[0] if args else hint


def _default_text(field: dataclasses.Field) -> str:
    default = field.metadata["default_text"] or field.default
    text = f"default {default}"
    if field.name == "feature":
        text += f"; with --conditional: {CONDITIONAL_FEATURE}"
    if field.name in DEMO_DEFAULTS:
        text += f"; --demo: {DEMO_DEFAULTS[field.name]}"
    return text


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field, hint) -> None:
    """One flag for one Config field, from its metadata. Its ``dest`` is the field's name and
    its default None ("not given": the Config default, or the --demo one, applies)."""
    meta = field.metadata
    flag = meta["flag"] or f"--{field.name}"
    text = meta["flag_help"] or meta["help"]
    if hint is bool:  # a switch: --demo sets True, --no_lu sets lu_decomposed False
        parser.add_argument(flag, dest=field.name, action="store_const",
                            const=not field.default, default=None, help=text)
        return
    value_type = _FIELD_TYPES.get(field.name) or _TYPES[_value_type(hint)]
    if typing.get_origin(hint) is tuple:  # repeatable: --data_dir A --data_dir B
        parser.add_argument(flag, dest=field.name, action="append", type=value_type,
                            default=None, metavar=meta["metavar"], help=text)
        return
    parser.add_argument(flag, dest=field.name, type=value_type, default=None,
                        choices=meta["choices"], metavar=meta["metavar"] or (
                            None if meta["choices"] else field.name.upper()),
                        help=f"{text} ({_default_text(field)})")


def build_parser() -> argparse.ArgumentParser:
    """train.py's flags: one per Config field (built from the field's metadata), --no_progress."""
    demo = ", ".join(f"{k}={v}" for k, v in DEMO_DEFAULTS.items())
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Train the SinGlow Glow flow on songs. Rerunning resumes from the latest "
                    "checkpoint in --checkpoint_dir.",
        epilog=f"--demo generates the synthetic corpus in {DEMO_DATA_ROOT} if missing, trains on "
               f"it and uses these defaults for flags not given: {demo}.",
    )
    hints = typing.get_type_hints(Config)
    fields = {field.name: field for field in dataclasses.fields(Config)}
    leading = [fields[name] for name in _LEADING]
    rest = [field for field in fields.values() if field.name not in _LEADING]
    ordered = leading + [f for f in rest if hints[f.name] is not bool] + [
        f for f in rest if hints[f.name] is bool]
    for field in ordered:
        _add_flag(parser, field, hints[field.name])
    parser.add_argument("--no_progress", action="store_true",
                        help="no tqdm progress bar (one line per epoch is always printed)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config the parsed flags describe (raises a one-line ValueError when invalid)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(Config)
              if getattr(args, field.name) is not None}
    if values.get("demo"):
        for name, value in DEMO_DEFAULTS.items():
            values.setdefault(name, value)
        demo_dirs = [os.path.join(DEMO_DATA_ROOT, "virtual"), os.path.join(DEMO_DATA_ROOT, "real")]
        values["data_dirs"] = demo_dirs + list(values.get("data_dirs", []))
    if args.conditional and args.feature is None:
        values["feature"] = conditional_feature(values.get("checkpoint_dir",
                                                           Config.checkpoint_dir))
    return Config(**values)


# The feature ``--conditional`` trains when ``--feature`` is not given: singer conversion lives
# in the spectral envelope, which the world feature models apart from F0, and its conversions
# are rendered on the source (design/migration.md).
CONDITIONAL_FEATURE = "world"


def conditional_feature(checkpoint_dir: str) -> str:
    """``--feature`` for ``--conditional`` when not given: the checkpoint's own when
    ``checkpoint_dir`` holds a run to resume (so a run started under another default resumes),
    else :data:`CONDITIONAL_FEATURE`."""
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        return CONDITIONAL_FEATURE
    try:
        return Config.load(path).feature
    except (OSError, ValueError, TypeError):  # refused on one line when the run is checked
        return CONDITIONAL_FEATURE


def check_paths(config: Config) -> None:
    """Refuse missing or unreadable data folders and unwritable output folders (one line)."""
    demo_dirs = {os.path.join(DEMO_DATA_ROOT, "virtual"), os.path.join(DEMO_DATA_ROOT, "real")}
    folders = [("--data_dir", f) for f in config.data_dirs] + [
        ("--validation_dir", f) for f in config.validation_dirs]
    for flag, folder in folders:
        if config.demo and folder in demo_dirs:
            continue  # generated before training
        if not os.path.isdir(folder):
            raise OSError(f"{flag} {folder} is not a folder")
        try:
            os.listdir(folder)
        except OSError as error:
            raise OSError(f"{flag} {folder} is not readable ({error.strerror or error})") from None
        if not os.access(folder, os.R_OK | os.X_OK):
            raise OSError(f"{flag} {folder} is not readable")
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
        check_writable_folder(path, flag)


def _prepare(args: argparse.Namespace):
    """Every refusal that needs no work: flags, paths, a checkpoint of another model, and an
    ``--init_from`` that is not a run folder of the same model."""
    config = config_from_args(args)
    check_paths(config)
    check_training_fits(config)
    if config.feature == "world":  # one line naming pyworld now, not after the records
        from utils.audio.world import require_pyworld

        require_pyworld()
    # TensorFlow is imported only now: flag errors above come back at once.
    from pipeline import make_strategy
    from utils.audio.signal import check_invertible
    from utils.runs.run_folder import check_checkpoint_dir, check_init_from

    strategy = make_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF work
    if config.feature in ("spectrogram", "world"):  # world conversions render on the STFT
        check_invertible(config)
    if check_checkpoint_dir(config) is None:  # a run that resumes ignores --init_from
        check_init_from(config)
    return config, strategy, args.no_progress


def _work(prepared) -> int:
    config, strategy, no_progress = prepared
    from pipeline import Trainer

    if config.demo:
        from utils.data.demo_data import make_demo_corpus

        make_demo_corpus(root=DEMO_DATA_ROOT, sampling_rate=config.sampling_rate)
    result = Trainer(config, strategy=strategy, progress=False if no_progress else None).fit()
    # The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
    return 128 + result.stop_signal if result.interrupted else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train; returns the exit status (see the module docstring)."""
    return run_cli(PROG, build_parser(), _prepare, _work, argv)


if __name__ == "__main__":
    sys.exit(main())
