"""Export a trained SinGlow run as a TensorFlow SavedModel that needs nothing of this repository.

    python export.py --checkpoint_dir CK --out DIR [--overwrite] [--no_verify]

``tf.saved_model.load(DIR)`` in any process with TensorFlow (no project module importable) gives
an object with these ``tf.function`` s, whose time axis is dynamic (any whole song whose length
divides by ``2**L``), each also a serving signature of the same name::

    z, logdet = loaded.encode(x)     x (B, T, W, C) float32 normalised features -> z (B, T*W*C)
                                     whitened latent, logdet (B,) nats of log|det dz/dx|
    x = loaded.decode(z)             the exact inverse: z (B, D) -> x (B, D / (W*C), W, C)
    log_p = loaded.log_prob(x)       (B,) nats: sum log N(z; 0, 1) + logdet
    x = loaded.normalize(f)          (f - mean) / std per frequency bin (the training statistics)
    f = loaded.denormalize(x)        its inverse: features of log(|STFT| + log_floor) or samples
    info = loaded.metadata()         the configuration as constants (below)

A singer-conditional run takes the singer as an extra input ``singer (B,)`` int32 ids, in the
order of ``metadata()["singers"]`` (``encode(x, singer)``, ``decode(z, singer)``,
``log_prob(x, singer)``): conversion is encode under one id and decode under another. Mixed
conditioning vectors are not exported (they need the model's embedding table; use the repository).

Held by the SavedModel besides the weights:

- ``metadata()``: ``config_json`` (the run's ``Config``, JSON), ``feature``, ``sampling_rate``,
  ``n_fft``, ``hop_length``, ``log_floor``, ``patch_steps`` (training patch length),
  ``time_multiple`` (``2**L``), ``width``, ``channels``, ``num_singers``, ``singers`` (names by
  id; empty when unconditional), ``feature_mean``, ``feature_std``, ``format_version``;
- variables ``feature_mean`` and ``feature_std`` (``(W,)`` for spectrograms, ``(1,)`` for
  waveforms);
- assets ``config.json``, ``feature_stats.json`` (and ``singers.json`` when conditional): copies
  of the run folder's files (``loaded.config_file.asset_path`` etc.).

Serving signatures take and return named tensors: ``encode`` {x[, singer]} -> {z, logdet},
``decode`` {z[, singer]} -> {x}, ``log_prob`` {x[, singer]} -> {log_prob}, ``normalize``
{features} -> {x}, ``denormalize`` {x} -> {features}, ``metadata`` {} -> the constants above.

The SavedModel is written beside ``--out`` and moved into place only when complete and (unless
``--no_verify``) reloaded and found to reproduce the Keras model; an existing ``--out`` is refused
unless it is empty or, with ``--overwrite``, a SavedModel (replaced whole). This program imports no
training code.

Exit status: 0 written, 1 the export failed (nothing is left at --out), 2 refused before any work
(a bad flag, a missing or unusable run folder, an --out that may not be replaced), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from utils.cli import CliError, OneLineArgumentParser, run_cli  # noqa: E402  (TensorFlow-free)
from utils.errors import SinGlowError  # noqa: E402
from utils.resources import NotWritable, check_writable_folder  # noqa: E402

if TYPE_CHECKING:  # imported for real once the flags are checked (TensorFlow loads)
    from common_definitions import Config
    from utils.audio.features import FeatureStats
    from utils.runs.codec import Codec

PROG = "export.py"
# Bumped whenever the exported interface changes incompatibly.
FORMAT_VERSION = 1
# What a SavedModel folder holds at its top (how --overwrite recognises one).
SAVED_MODEL_FILE = "saved_model.pb"
# The reloaded SavedModel must agree with the Keras model to these (float32 precision).
VERIFY_RTOL = 1e-4
VERIFY_LOGDET_ATOL = 1e-2
LOG_2PI = math.log(2.0 * math.pi)


class ExportError(SinGlowError):
    """The export could not be written or did not reproduce the model (one-line message)."""


# ----------------------------------------------------------------------------- the module
def build_module(model, config: "Config", stats: "FeatureStats", singers: Sequence[str] = ()):
    """The ``tf.Module`` that :func:`export` saves (see the module docstring for its interface)
    and its serving signatures: ``(module, {name: tf.function})``.

    Args:
        model: a :class:`model.Glow`, ActNorm initialised or restored.
        config: the Config ``model`` was built from (written as ``metadata()["config_json"]``).
        stats: the feature normalisation the model was trained with.
        singers: a conditional model's singer names by id (``len == model.num_singers``).

    Only the model's variables are tracked, not the Keras object, so loading needs neither Keras
    nor this repository.
    """
    import tensorflow as tf

    singers = tuple(singers)
    if model.conditional and len(singers) != model.num_singers:
        raise ExportError(f"the model is conditional on {model.num_singers} singers, but "
                          f"{len(singers)} singer names were given")
    if not model.conditional and singers:
        raise ExportError("an unconditional model has no singers to name")
    _, width, channels = (int(s) for s in model.image_shape)
    multiple = 2 ** int(model.l_glow)
    per_step = width * channels
    num_singers = int(model.num_singers)
    mean = stats.mean.astype("float32")
    std = stats.std.astype("float32")
    if mean.shape != (width,):
        raise ExportError(f"feature statistics of {mean.shape[0]} channels do not fit a model of "
                          f"width {width}")

    module = tf.Module(name="singlow")
    # tf.Module does not look inside Keras objects: track the model's tf.Variables directly.
    module.model_variables = [getattr(v, "value", v) for v in model.variables]
    module.feature_mean = tf.Variable(mean, trainable=False, name="feature_mean")
    module.feature_std = tf.Variable(std, trainable=False, name="feature_std")

    def check_steps(steps, what):
        return tf.debugging.assert_equal(
            steps % multiple, 0,
            message=f"{what} must divide by 2**L = {multiple} (pad the song)")

    def check_singer(singer, batch):
        return [
            tf.debugging.assert_equal(tf.shape(singer)[0], batch,
                                      message="give one singer id per example"),
            tf.debugging.assert_less(singer, num_singers,
                                     message=f"singer ids must be in [0, {num_singers})"),
            tf.debugging.assert_non_negative(singer, message=f"singer ids must be in "
                                                             f"[0, {num_singers})"),
        ]

    def encode(x, singer=None):
        checks = [check_steps(tf.shape(x)[1], "the time steps T of x")]
        if singer is not None:
            checks += check_singer(singer, tf.shape(x)[0])
        with tf.control_dependencies(checks):
            x = tf.identity(x)
            singer = None if singer is None else tf.identity(singer)
        return model.encode(x, singer) if singer is not None else model.encode(x)

    def decode(z, singer=None):
        checks = [
            tf.debugging.assert_equal(tf.shape(z)[1] % per_step, 0, message=(
                f"D must be a whole number of time steps of W*C = {per_step} dimensions")),
            check_steps(tf.shape(z)[1] // per_step, "the time steps D / (W*C) of z")]
        if singer is not None:
            checks += check_singer(singer, tf.shape(z)[0])
        with tf.control_dependencies(checks):
            z = tf.identity(z)
            singer = None if singer is None else tf.identity(singer)
        return model.decode(z, singer) if singer is not None else model.decode(z)

    x_spec = tf.TensorSpec([None, None, width, channels], tf.float32, name="x")
    z_spec = tf.TensorSpec([None, None], tf.float32, name="z")
    # A conditional model's functions take the singer ids as their second input.
    singer_specs = [tf.TensorSpec([None], tf.int32, name="singer")] if model.conditional else []

    # The model is traced once per direction; log_prob and the serving signatures call those
    # traced functions (a signature returns named tensors).
    module.encode = tf.function(encode, input_signature=[x_spec] + singer_specs)
    module.decode = tf.function(decode, input_signature=[z_spec] + singer_specs)

    def log_prob(x, *singer):
        z, logdet = module.encode(x, *singer)
        dims = tf.cast(tf.shape(z)[1], tf.float32)
        return -0.5 * tf.reduce_sum(tf.square(z), axis=1) - 0.5 * dims * LOG_2PI + logdet

    module.log_prob = tf.function(log_prob, input_signature=[x_spec] + singer_specs)

    def encode_outputs(x, *singer):
        z, logdet = module.encode(x, *singer)
        return {"z": z, "logdet": logdet}

    signatures = {
        "encode": tf.function(encode_outputs, input_signature=[x_spec] + singer_specs),
        "decode": tf.function(lambda z, *singer: {"x": module.decode(z, *singer)},
                              input_signature=[z_spec] + singer_specs),
        "log_prob": tf.function(lambda x, *singer: {"log_prob": module.log_prob(x, *singer)},
                                input_signature=[x_spec] + singer_specs),
    }

    # Normalisation along W of (B, T, W, C), as utils.audio.features.FeatureStats does.
    features_spec = tf.TensorSpec([None, None, width, channels], tf.float32, name="features")

    def normalize(features):
        return ((features - module.feature_mean[:, None]) / module.feature_std[:, None])

    def denormalize(x):
        return x * module.feature_std[:, None] + module.feature_mean[:, None]

    module.normalize = tf.function(normalize, input_signature=[features_spec])
    module.denormalize = tf.function(denormalize, input_signature=[x_spec])
    signatures["normalize"] = tf.function(lambda features: {"x": normalize(features)},
                                          input_signature=[features_spec])
    signatures["denormalize"] = tf.function(lambda x: {"features": denormalize(x)},
                                            input_signature=[x_spec])

    constants = {
        "config_json": tf.constant(config.to_json()),
        "feature": tf.constant(config.feature),
        "sampling_rate": tf.constant(int(config.sampling_rate), tf.int32),
        "n_fft": tf.constant(int(config.n_fft), tf.int32),
        "hop_length": tf.constant(int(config.hop_length), tf.int32),
        "log_floor": tf.constant(float(config.log_floor), tf.float32),
        "patch_steps": tf.constant(int(model.image_shape[0]), tf.int32),
        "time_multiple": tf.constant(multiple, tf.int32),
        "width": tf.constant(width, tf.int32),
        "channels": tf.constant(channels, tf.int32),
        "num_singers": tf.constant(num_singers, tf.int32),
        "singers": tf.constant(list(singers), tf.string, shape=[len(singers)]),
        "format_version": tf.constant(FORMAT_VERSION, tf.int32),
    }

    def metadata():
        return {**{key: tf.identity(value) for key, value in constants.items()},
                "feature_mean": tf.identity(module.feature_mean),
                "feature_std": tf.identity(module.feature_std)}

    module.metadata = tf.function(metadata, input_signature=[])
    signatures["metadata"] = module.metadata
    return module, signatures


def _write_assets(folder: str, config: "Config", stats: "FeatureStats",
                  singers: Tuple[str, ...]) -> dict:
    """Write the run's files into ``folder``; returns ``attribute name -> path``."""
    paths = {"config_file": os.path.join(folder, "config.json"),
             "feature_stats_file": os.path.join(folder, "feature_stats.json")}
    config.save(paths["config_file"])
    stats.save(paths["feature_stats_file"])
    if singers:
        paths["singers_file"] = os.path.join(folder, "singers.json")
        with open(paths["singers_file"], "w", encoding="utf-8") as handle:
            json.dump({"singers": list(singers)}, handle, indent=1)
    return paths


# ----------------------------------------------------------------------------- verification
def _probe(model, config: "Config"):
    """Deterministic model samples two patches long (and their singer ids) to verify an export
    with: ``(x (2, 2H, W, C), singer (2,) or None)``. Samples, not arbitrary inputs: far from
    the data a trained flow amplifies float32 rounding, in the Keras model as much as in the
    export."""
    import numpy as np
    import tensorflow as tf

    steps = 2 * model.image_shape[0]
    singer = (tf.constant(np.arange(2) % model.num_singers, tf.int32) if model.conditional
              else None)
    x = model.sample(2, temperature=config.temperature, time_steps=steps, seed=0, singer=singer)
    return x.numpy(), singer


def verify(path: str, model, config: "Config") -> None:
    """Reload the SavedModel at ``path`` and check that it reproduces ``model`` on model samples
    (:func:`_probe`): encode's z to :data:`VERIFY_RTOL` of its scale and logdet to
    :data:`VERIFY_LOGDET_ATOL` nats plus that relative error, decode(encode(x)) back to x to
    :data:`VERIFY_RTOL` of its scale, and the metadata.

    Raises:
        ExportError: a disagreement, named in a one-line message.
    """
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    x, singer = _probe(model, config)
    extra = () if singer is None else (singer,)
    want_z, want_logdet = (t.numpy() for t in model.encode(x, *extra))
    z, logdet = (t.numpy() for t in loaded.encode(tf.constant(x), *extra))
    back = loaded.decode(tf.constant(z), *extra).numpy()
    problems = []
    if z.shape != want_z.shape or np.max(np.abs(z - want_z)) > VERIFY_RTOL * max(
            1.0, float(np.max(np.abs(want_z)))):
        problems.append("encode's z differs from the model's")
    if np.max(np.abs(logdet - want_logdet) - VERIFY_RTOL * np.abs(want_logdet)) > \
            VERIFY_LOGDET_ATOL:
        problems.append("encode's logdet differs from the model's")
    if back.shape != x.shape or np.max(np.abs(back - x)) > VERIFY_RTOL * max(
            1.0, float(np.max(np.abs(x)))):
        problems.append("decode(encode(x)) is not x")
    info = loaded.metadata()
    if (int(info["time_multiple"]) != 2 ** model.l_glow
            or int(info["format_version"]) != FORMAT_VERSION
            or int(info["num_singers"]) != model.num_singers):
        problems.append("metadata() does not describe the model")
    if problems:
        raise ExportError(f"the SavedModel written to {path} failed verification: "
                          f"{'; '.join(problems)}")


# ----------------------------------------------------------------------------- writing
def export(model, config: "Config", stats: "FeatureStats", out: str, singers: Sequence[str] = (),
           overwrite: bool = False, check: bool = True) -> str:
    """Write the SavedModel of ``model`` (see :func:`build_module`) to the folder ``out``.

    The SavedModel is written to a hidden folder beside ``out`` and, once complete and
    (``check``) verified by :func:`verify`, takes the place of ``out`` whole
    (:func:`utils.files.replace_folder`); an error at any point leaves ``out`` as it was. ``out``
    may be missing or an empty folder; with ``overwrite`` an existing SavedModel there is
    replaced.

    Returns:
        ``out``.

    Raises:
        ExportError: ``out`` may not be replaced, or the export failed verification.
    """
    import tensorflow as tf

    from utils.files import replace_folder

    singers = tuple(singers)
    check_out(out, overwrite)
    module, signatures = build_module(model, config, stats, singers)

    def build(scratch_out: str) -> None:
        with tempfile.TemporaryDirectory(prefix="singlow-export-assets-") as scratch:
            for name, asset_path in _write_assets(scratch, config, stats, singers).items():
                setattr(module, name, tf.saved_model.Asset(asset_path))
            tf.saved_model.save(module, scratch_out, signatures=signatures)
        if check:
            verify(scratch_out, model, config)

    replace_folder(out, build)
    return out


def check_out(out: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that may not be (re)placed (one-line :class:`ExportError`): a file, a
    non-empty folder without ``overwrite``, a non-empty folder that is not a SavedModel, or an
    unwritable parent folder. Touches nothing."""
    target = os.path.abspath(out)
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ExportError(f"--out {out} exists and is not a folder")
    if os.path.isdir(target) and os.listdir(target):
        if not os.path.isfile(os.path.join(target, SAVED_MODEL_FILE)):
            raise ExportError(f"--out {out} is a folder that holds files but no SavedModel; "
                           "choose another --out")
        if not overwrite:
            raise ExportError(f"--out {out} already holds a SavedModel; pass --overwrite to "
                           "replace it")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise ExportError(f"--out {out}: the folder above it, {parent}, does not exist")
    try:
        check_writable_folder(parent, f"--out {out}: the folder above it,")
    except NotWritable as error:
        raise ExportError(str(error)) from None


# ----------------------------------------------------------------------------- the CLI
class Prepared(NamedTuple):
    args: argparse.Namespace
    codec: "Codec"
    singers: Tuple[str, ...]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG, description="Export a trained SinGlow run as a self-contained TensorFlow "
                               "SavedModel (encode, decode, log_prob, normalize, denormalize, "
                               "metadata; whole-song lengths).")
    parser.add_argument("--checkpoint_dir", required=True,
                        help="the run folder written by train.py (config.json, "
                             "feature_stats.json, checkpoints)")
    parser.add_argument("--out", required=True, help="the SavedModel folder to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a SavedModel already at --out")
    parser.add_argument("--no_verify", action="store_true",
                        help="skip reloading the SavedModel to check it against the model")
    return parser


def prepare(args: argparse.Namespace) -> Prepared:
    """Refuse a missing run folder and an --out that may not be written before TensorFlow loads;
    then load the run (refused when its files disagree)."""
    if not os.path.isdir(args.checkpoint_dir):
        raise CliError(f"checkpoint folder not found: {args.checkpoint_dir}")
    check_out(args.out, args.overwrite)
    from utils.runs.run_folder import load_for_inference

    codec = load_for_inference(args.checkpoint_dir)
    singers = tuple(codec.singers) if codec.model.conditional else ()
    return Prepared(args, codec, singers)


def work(prepared: Prepared) -> int:
    args, codec = prepared.args, prepared.codec
    export(codec.model, codec.config, codec.stats, args.out, prepared.singers,
           overwrite=args.overwrite, check=not args.no_verify)
    _, width, channels = codec.model.image_shape
    inputs = "x, singer" if prepared.singers else "x"
    print(f"wrote {args.out}: encode({inputs}), decode, log_prob, normalize, denormalize, "
          f"metadata; x (B, T, {width}, {channels}) with T a multiple of "
          f"{codec.config.time_multiple}{'' if args.no_verify else ' (verified)'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Export; returns the exit status (see the module docstring)."""

    def on_interrupt(args: argparse.Namespace) -> str:
        return (f"{args.out} holds what it held before or the complete new export, never part "
                "of one")

    return run_cli(PROG, build_parser(), prepare, work, argv, on_interrupt)


if __name__ == "__main__":
    sys.exit(main())
