"""The weights of a run folder: its numbered checkpoints, found on disk rather than through the
index alone, restored with a fall-back, and tied to the feature normalisation they were trained
with.

``tf.train.CheckpointManager`` writes ``ckpt-N.index`` and ``ckpt-N.data-SSSSS-of-TTTTT`` (N =
the step), then the index file ``checkpoint`` (a text proto naming the latest and the kept
ones). TensorFlow trusts the index only: when it is missing, garbled or names files that are
gone, ``tf.train.latest_checkpoint`` returns None, and a run would start again from step 0 over
its own checkpoints. :func:`find_checkpoints` reads the folder itself, so that

- a sound index is followed as TensorFlow does (a ``ckpt-N`` newer than the index names, left
  by a process killed between writing its files and recording it, is ignored);
- a missing, garbled or stale index is replaced by what is on disk (the newest first);
- a checkpoint whose files cannot be read (truncated, garbled) is skipped for the previous one
  by :func:`restore_newest`, with one warning line naming it (:func:`restore_model` does so
  for inference and fine-tuning, :class:`utils.runs.run_folder.RunFolder` for a resumed run).

The tie: a digest of the statistics (:func:`stats_digest`) is saved in every checkpoint as the
variable ``feature_stats_digest`` and in ``best/best.json``; :func:`check_stats_tie` refuses a
``feature_stats.json`` that does not match it (checkpoints written before the tie have none and
are accepted as they are). :func:`discard_failed_save` cleans up after a save that raised.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

from utils.errors import RefusedError, one_line
from utils.files import atomic_write_text

if TYPE_CHECKING:
    from model import Glow
    from utils.audio.features import FeatureStats

INDEX_NAME = "checkpoint"
# The run folder's other weights and the files tied to them (utils/runs/run_folder.py lists them
# all).
WEIGHTS_NAME = "glow.weights.h5"
STATS_NAME = "feature_stats.json"
BEST_RECORD = "best.json"
# The key of best.json that ties best/'s weights to its feature_stats.json (hex digest), and
# the name of the checkpoint's variable that does so for a checkpoint (an int64).
BEST_DIGEST = "feature_stats_digest"
DIGEST_NAME = "feature_stats_digest"
DIGEST_KEY = f"{DIGEST_NAME}/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = re.compile(r"^ckpt-(\d+)$")
_DATA = re.compile(r"^ckpt-(\d+)\.data-(\d{5})-of-(\d{5})$")
# What reading a damaged checkpoint raises: TensorFlow's file errors (a garbled or truncated
# ``.index``, a CRC mismatch), the reader's "Read less bytes than requested" (a truncated
# ``.data``) and an undecodable object graph.
DAMAGE_ERRORS = (tf.errors.OpError, IndexError, DecodeError)
# Longest reason quoted from a damaged checkpoint's error.
_REASON = 160


class CheckpointMismatch(RefusedError, ValueError):
    """A checkpoint cannot be used with this configuration; the message is one line."""


class CheckpointDamaged(CheckpointMismatch):
    """No checkpoint of a run folder can be read; the message names the folder and what to do,
    ``what`` the same without the advice."""

    def __init__(self, what: str, advice: str = "move the folder away or pass another "
                                                 "--checkpoint_dir"):
        super().__init__(f"{what}: {advice}")
        self.what = what


def step_of(prefix: str) -> Optional[int]:
    """N of a ``.../ckpt-N`` prefix, or None for another name."""
    match = _PREFIX.match(os.path.basename(prefix))
    return int(match.group(1)) if match else None


def _complete(folder: str, names: Sequence[str]) -> List[Tuple[int, str]]:
    """``(N, prefix)`` of every ``ckpt-N`` with its ``.index`` and every data shard, ascending."""
    shards = {}
    for name in names:
        match = _DATA.match(name)
        if match:
            shards.setdefault(int(match.group(1)), set()).add((int(match.group(2)),
                                                               int(match.group(3))))
    found = []
    for name in names:
        if name.endswith(".index") and step_of(name[:-len(".index")]) is not None:
            step = step_of(name[:-len(".index")])
            parts = shards.get(step, set())
            totals = {total for _, total in parts}
            if len(totals) == 1 and {index for index, _ in parts} == set(range(totals.pop())):
                found.append((step, os.path.join(folder, name[:-len(".index")])))
    return sorted(found)


def read_index(folder: str) -> Tuple[Optional[str], Optional[str]]:
    """``(problem, latest)`` of ``folder``'s index file: problem None (sound), ``"missing"``,
    ``"garbled"`` (not the text proto TensorFlow writes) or ``"stale"`` (the checkpoint it names
    has no files); latest is the prefix it names (None unless sound).

    Parsed here rather than by ``tf.train.get_checkpoint_state``, which logs several lines for
    a damaged file and raises for some.
    """
    path = os.path.join(folder, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return "missing", None
    except (OSError, UnicodeDecodeError):
        return "garbled", None
    latest = None
    for line in text.splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(r'\s*([a-z_]+)\s*:\s*(.+?)\s*', line)
        if match is None:
            return "garbled", None
        if match.group(1) == "model_checkpoint_path":
            quoted = re.fullmatch(r'"([^"\\]+)"', match.group(2))
            if quoted is None or latest is not None:
                return "garbled", None
            latest = quoted.group(1)
    if latest is None:
        return "garbled", None
    latest = latest if os.path.isabs(latest) else os.path.join(folder, latest)
    if not os.path.isfile(latest + ".index") or not glob.glob(glob.escape(latest) + ".data-*"):
        return "stale", None
    return None, latest


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """What :func:`find_checkpoints` found in ``folder``.

    Attributes:
        folder: the run folder.
        problem: None, or what is wrong with the index file (see :func:`read_index`); a folder
            with neither an index nor a checkpoint has no problem.
        indexed: the latest checkpoint a sound index names (None otherwise).
        on_disk: ``(N, prefix)`` of every ``ckpt-N`` whose files are all present, ascending.
        has_index: whether an index file exists (sound or not).
    """

    folder: str
    problem: Optional[str]
    indexed: Optional[str]
    on_disk: Tuple[Tuple[int, str], ...]
    has_index: bool

    @property
    def candidates(self) -> List[str]:
        """The checkpoints to restore from, best first: the one a sound index names, then the
        older ones on disk; without a sound index every one on disk, the newest first."""
        if self.indexed is None:
            return [prefix for _, prefix in reversed(self.on_disk)]
        newest = step_of(self.indexed)
        older = [prefix for step, prefix in reversed(self.on_disk)
                 if prefix != self.indexed and (newest is None or step < newest)]
        return [self.indexed] + older

    @property
    def index_path(self) -> str:
        return os.path.join(self.folder, INDEX_NAME)


def find_checkpoints(folder: str) -> CheckpointFiles:
    """The checkpoints of ``folder`` (an empty result for a folder that does not exist)."""
    if not os.path.isdir(folder):
        return CheckpointFiles(folder, None, None, (), False)
    on_disk = tuple(_complete(folder, os.listdir(folder)))
    problem, indexed = read_index(folder)
    has_index = problem != "missing"
    if problem == "missing" and not on_disk:
        problem = None
    return CheckpointFiles(folder, problem, indexed, on_disk, has_index)


def write_index(folder: str, latest: str, kept: Sequence[str]) -> None:
    """Rewrite ``folder``'s index file (atomically) naming ``latest`` and the ``kept``
    checkpoints as CheckpointManager writes it: relative paths, and each one's time (its
    ``.index`` file's), without which the manager would keep those checkpoints for ever."""
    paths = [p for p in kept if p != latest] + [latest]
    times = []
    for prefix in paths:
        try:
            times.append(os.path.getmtime(prefix + ".index"))
        except OSError:
            times.append(time.time())
    lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in paths]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    # Older than every kept one: each stays subject to max_checkpoints.
    lines.append(f"last_preserved_timestamp: {min(times) - 1.0!r}")
    atomic_write_text(os.path.join(folder, INDEX_NAME), "\n".join(lines) + "\n")


def restore_newest(found: CheckpointFiles, restore: Callable[[str], object],
                   warn: Callable[[str], None] = warnings.warn) -> Optional[str]:
    """Call ``restore(prefix)`` on :attr:`CheckpointFiles.candidates`, best first, until one
    returns; returns that prefix (None when there is no candidate).

    A candidate whose files cannot be read (:data:`DAMAGE_ERRORS`) is skipped with one
    ``warn`` line naming it; any other error (e.g. :class:`CheckpointMismatch`, a checkpoint of
    another model) propagates at once, since an older checkpoint of the same run would not fit
    either.

    Raises:
        CheckpointDamaged: no candidate can be read.
    """
    candidates = found.candidates
    for number, prefix in enumerate(candidates):
        try:
            restore(prefix)
            return prefix
        except DAMAGE_ERRORS as error:
            reason = one_line(error, _REASON)
            if number + 1 == len(candidates):
                names = ", ".join(os.path.basename(p) for p in candidates)
                raise CheckpointDamaged(
                    f"no checkpoint in {found.folder} can be read ({names} damaged; "
                    f"{os.path.basename(prefix)}: {reason})") from None
            warn(f"{prefix} is damaged ({reason}); falling back to the previous checkpoint")
    return None


# --------------------------------------------------------------------- restoring a model
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


def restore_model(model: Glow, checkpoint_dir: str,
                  warn: Callable[[str], None] = warnings.warn) -> str:
    """Restore the weights of ``model`` from the newest checkpoint of ``checkpoint_dir`` that
    can be read (a damaged one, or a missing or garbled index, gives one ``warn`` line), else
    from ``glow.weights.h5``; returns the path restored from."""
    found = find_checkpoints(checkpoint_dir)
    weights = os.path.join(checkpoint_dir, WEIGHTS_NAME)

    def restore(prefix: str) -> None:
        check_model_matches(model, prefix)
        status = tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
        status.assert_existing_objects_matched()

    try:
        try:
            source = restore_newest(found, restore, warn)
        except CheckpointDamaged as error:
            if not os.path.isfile(weights):
                raise
            warn(f"{error.what}; loading {weights} instead")
            source = None
        if source is not None and found.problem:
            warn(f"{found.index_path} is {found.problem}: loading {os.path.basename(source)} "
                 "found on disk")
        if source is None:
            source = weights
            if not os.path.isfile(source):
                raise FileNotFoundError(f"no checkpoint and no {WEIGHTS_NAME} in {checkpoint_dir}")
            model.load_weights(source)
    except CheckpointMismatch:
        raise
    except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
        raise CheckpointMismatch(f"cannot restore {checkpoint_dir}: {one_line(error)}") from None
    if not model.is_initialized():
        raise CheckpointMismatch(
            f"{source} holds a model whose ActNorm layers were never initialised")
    return source


# --------------------------------------------------------------------- the normalisation's tie
def stats_digest(stats) -> int:
    """A 60-bit digest of a :class:`utils.audio.features.FeatureStats`' normalisation (its ``mean``,
    ``std`` and channel layout), the same however the file holding it is formatted."""
    hasher = hashlib.sha256(f"channels={stats.channels};".encode())
    for values in (stats.mean, stats.std):
        hasher.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
    return int(hasher.hexdigest()[:15], 16)


def recorded_digest(prefix: str) -> Optional[int]:
    """The feature statistics digest saved in the checkpoint ``prefix``, or None for a
    checkpoint written before the tie existed. Raises :data:`DAMAGE_ERRORS` when unreadable."""
    reader = tf.train.load_checkpoint(prefix)
    if not reader.has_tensor(DIGEST_KEY):
        return None
    return int(reader.get_tensor(DIGEST_KEY)) or None  # 0: saved without statistics


def newest_recorded_digest(found: CheckpointFiles) -> Tuple[Optional[str], Optional[int]]:
    """``(prefix, digest)`` of the best candidate that can be read (``(None, None)`` when none
    can; the digest None for a checkpoint without one)."""
    for prefix in found.candidates:
        try:
            return prefix, recorded_digest(prefix)
        except DAMAGE_ERRORS:
            continue
    return None, None


def discard_failed_save(folder: str, step: int) -> None:
    """Remove what a save of ``ckpt-<step>`` that raised left behind, unless the index already
    names it (then its files were complete: the manager records a checkpoint only after
    them): its files, TensorFlow's ``ckpt-<step>_temp*`` scratch and the index's own temporary
    files (``checkpoint.tmp*``). The earlier checkpoints and the index are not touched."""
    if not os.path.isdir(folder):
        return
    _, indexed = read_index(folder)
    keep = indexed is not None and step_of(indexed) == step
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        ours = (not keep and (name.startswith(f"ckpt-{step}.") or
                              name.startswith(f"ckpt-{step}_temp")))
        if ours or name.startswith(f"{INDEX_NAME}.tmp"):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError:
                    pass


def _stats_mismatch(stats_path: str, source: str, what: str = "") -> CheckpointMismatch:
    state = "is missing, and this run's own statistics are not" if not os.path.isfile(
        stats_path) else "does not hold"
    return CheckpointMismatch(
        f"{what}{stats_path} {state} the feature statistics {source} was trained with (its "
        f"recorded digest differs): put back that run's own {STATS_NAME} or use another "
        "--checkpoint_dir")


def _best_digest(folder: str) -> Optional[int]:
    """The feature statistics digest in ``folder/best.json`` (a best/ folder), or None."""
    try:
        with open(os.path.join(folder, BEST_RECORD), encoding="utf-8") as handle:
            return int(json.load(handle)[BEST_DIGEST], 16) or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_stats_tie(folder: str, stats: FeatureStats, source: Optional[str] = None,
                    what: str = "") -> None:
    """Refuse ``stats`` (``folder/feature_stats.json``) unless they are the statistics the
    weights of ``folder`` were trained with: the digest recorded in the checkpoint ``source``
    (default: the newest readable one), else in ``best.json``. Folders written before the tie
    (no digest anywhere) are accepted as they are.

    Raises:
        CheckpointMismatch: the digests differ (one line naming the file).
    """
    if source is not None and not source.endswith(WEIGHTS_NAME):
        recorded = recorded_digest(source)
    else:
        source, recorded = (newest_recorded_digest(find_checkpoints(folder)) if source is None
                            else (None, None))
        if recorded is None:  # weights alone: a best/ folder records it in best.json
            source, recorded = os.path.join(folder, BEST_RECORD), _best_digest(folder)
    if recorded is not None and recorded != stats_digest(stats):
        raise _stats_mismatch(os.path.join(folder, STATS_NAME), source, what)
