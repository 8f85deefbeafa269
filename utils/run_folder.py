"""Run folders: the files of a trained run, checked and restored, apart from training.

A checkpoint folder (``config.checkpoint_dir``) written by ``train.py``::

    config.json            the Config of the run; a checkpoint is only ever restored under a
                           Config whose model fields agree
    feature_stats.json     the FeatureStats the training data was normalised with
    checkpoint, ckpt-N.*   tf.train.Checkpoint(model, optimizer, step, skipped_steps), N = step
    glow.weights.h5        the model weights alone (Keras), written at the end of training

This module reads and writes those files; the trainer (``pipeline.py``) saves checkpoints through
it, and inference (``migrate.py``, ``evaluate.py``, the notebooks) loads a run through
:func:`load_for_inference` without importing any training code.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import tensorflow as tf

from common_definitions import Config
from model import Glow
from utils.audio import FeatureStats
from utils.errors import SinGlowError, one_line

CONFIG_NAME = "config.json"
STATS_NAME = "feature_stats.json"
WEIGHTS_NAME = "glow.weights.h5"


class CheckpointMismatch(SinGlowError, ValueError):
    """A checkpoint cannot be used with this configuration; the message is one line."""


def read_checkpoint_config(checkpoint_dir: str) -> Optional[Config]:
    """The Config saved in ``checkpoint_dir/config.json``, or None when there is none."""
    path = os.path.join(checkpoint_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    try:
        return Config.load(path)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointMismatch(f"{path} is not a readable SinGlow config: {one_line(error)}") from None


def check_checkpoint_dir(config: Config) -> Optional[str]:
    """Refuse a checkpoint folder that holds a checkpoint of another model configuration.

    Returns the latest checkpoint prefix in ``config.checkpoint_dir`` (None when there is none).

    Raises:
        CheckpointMismatch: the saved ``config.json`` differs in a model field (named in the
            message) or cannot be read.
    """
    latest = tf.train.latest_checkpoint(config.checkpoint_dir) if os.path.isdir(config.checkpoint_dir) else None
    if latest is None:
        return None
    saved = read_checkpoint_config(config.checkpoint_dir)
    if saved is not None:
        problems = config.incompatibilities(saved)
        if problems:
            raise CheckpointMismatch(
                f"the checkpoint in {config.checkpoint_dir} is of another model configuration: "
                f"{', '.join(problems)}; pass matching flags or use another --checkpoint_dir"
            )
    return latest


def saved_model_variables(path: str) -> int:
    """Variables saved under the checkpoint's ``model`` object (its object graph)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    stack = [c.node_id for c in graph.nodes[0].children if c.local_name == "model"]
    seen, count = set(), 0
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        count += any(a.name == "VARIABLE_VALUE" for a in graph.nodes[node].attributes)
        stack.extend(c.node_id for c in graph.nodes[node].children)
    return count


def check_model_matches(model: Glow, path: str) -> None:
    """Restoring only checks that the model's variables are found; a checkpoint of a *larger*
    model (more steps or levels) would load partially without complaint, so count them too."""
    saved = saved_model_variables(path)
    if saved != len(model.variables):
        raise CheckpointMismatch(
            f"{path} holds a model of {saved} variables, but the configuration describes one of "
            f"{len(model.variables)}: config.json does not belong to this checkpoint"
        )


def restore_model(model: Glow, checkpoint_dir: str) -> str:
    """Restore the weights of ``model`` from the latest checkpoint (or glow.weights.h5)."""
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    try:
        if latest is not None:
            check_model_matches(model, latest)
            status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
            status.assert_existing_objects_matched()
            source = latest
        else:
            source = os.path.join(checkpoint_dir, WEIGHTS_NAME)
            if not os.path.isfile(source):
                raise FileNotFoundError(f"no checkpoint and no {WEIGHTS_NAME} in {checkpoint_dir}")
            model.load_weights(source)
    except CheckpointMismatch:
        raise
    except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
        raise CheckpointMismatch(f"cannot restore {checkpoint_dir}: {one_line(error)}") from None
    if not model.is_initialized():
        raise CheckpointMismatch(f"{source} holds a model whose ActNorm layers were never initialised")
    return source


def load_for_inference(checkpoint_dir: str) -> Tuple[Glow, Config, FeatureStats]:
    """``(model, config, stats)`` of a trained run, for migrate.py, evaluate.py and notebooks.

    Reads ``config.json`` (rebuilds the model it describes), ``feature_stats.json`` (the
    normalisation the model was trained with) and the latest checkpoint's model weights (the
    optimizer state is ignored), or ``glow.weights.h5`` when the folder holds no checkpoint.

    Raises:
        FileNotFoundError: the folder, its config.json, feature_stats.json or weights are missing.
        CheckpointMismatch: the files disagree with each other (one-line message).
    """
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"checkpoint folder not found: {checkpoint_dir}")
    for name in (CONFIG_NAME, STATS_NAME):
        if not os.path.isfile(os.path.join(checkpoint_dir, name)):
            raise FileNotFoundError(
                f"{os.path.join(checkpoint_dir, name)} is missing: not a folder written by train.py"
            )
    config = read_checkpoint_config(checkpoint_dir)
    try:
        stats = FeatureStats.load(os.path.join(checkpoint_dir, STATS_NAME))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatch(f"cannot read {STATS_NAME} in {checkpoint_dir}: {one_line(error)}") from None
    if not stats.matches(config):
        raise CheckpointMismatch(
            f"{STATS_NAME} in {checkpoint_dir} was computed under other feature settings than its "
            f"{CONFIG_NAME}"
        )
    model = Glow(config)
    restore_model(model, checkpoint_dir)
    return model, config, stats
