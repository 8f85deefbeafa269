"""Where training runs and what its workers agree on: the strategy and the collectives.

:func:`make_strategy` picks ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several tasks,
else ``MirroredStrategy`` over the local GPUs (the CPU when there is none). :class:`Collectives`
holds what the trainer needs beyond the all-reduce inside its compiled step: an exact broadcast of
variables from the first replica, a barrier, and a sum over workers of a small host value (used to
agree on a stop signal). On one worker each is a no-op or the identity, so single-machine training
pays nothing for them.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import tensorflow as tf

from utils.errors import one_line
from utils.runs.run_folder import TaskInfo


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {one_line(error)}") from None


def cluster_size() -> int:
    """Tasks (chief + workers) that ``TF_CONFIG`` names; 1 when it is unset."""
    cluster = _tf_config().get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) or 1


def make_strategy() -> tf.distribute.Strategy:
    """The strategy this machine (or cluster) calls for.

    ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several tasks (it must be created
    before TensorFlow runs anything else, so call this first); otherwise ``MirroredStrategy`` over
    every local GPU, or over the CPU when there is none.
    """
    if cluster_size() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus] or ["/cpu:0"])


def task_info(strategy: tf.distribute.Strategy) -> TaskInfo:
    """The :class:`TaskInfo` of this process under ``strategy`` (one worker without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return TaskInfo()
    spec = resolver.cluster_spec().as_dict()
    workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in spec
    chief = task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)
    index = task_id + (1 if has_chief and task_type == "worker" else 0)
    return TaskInfo(chief, index, max(workers, 1))


class Collectives:
    """Collectives across the workers of ``strategy`` (no-ops on one worker).

    Every worker must make the same calls in the same order: each is a collective that waits for
    all of them.
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        self.task = task_info(strategy)
        self._sum = tf.function(self._sum_fn)

    @property
    def num_workers(self) -> int:
        return self.task.num_workers

    def broadcast_from_first_replica(self, variables: Sequence[tf.Variable]) -> None:
        """Make every worker hold global replica 0's values of ``variables``.

        A sum in which every replica but the first contributes zeros is an exact broadcast that
        needs no API beyond all-reduce. Integer variables travel as float64, exact below 2**53.
        """
        if self.num_workers <= 1:
            return

        def cast(v):
            value = tf.convert_to_tensor(v)
            return value if value.dtype == tf.float32 else tf.cast(value, tf.float64)

        def pick(tensors):
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            masked = [tf.where(first, t, tf.zeros_like(t)) for t in tensors]
            # A collective packs its tensors together, so each dtype gets its own all-reduce.
            out = list(masked)
            for dtype in (tf.float32, tf.float64):
                where = [i for i, t in enumerate(masked) if t.dtype == dtype]
                if where:
                    reduced = context.all_reduce(
                        tf.distribute.ReduceOp.SUM, [masked[i] for i in where])
                    for i, t in zip(where, reduced):
                        out[i] = t
            return out

        @tf.function
        def broadcast(tensors):
            return self.strategy.experimental_local_results(
                self.strategy.run(pick, args=(tensors,)))[0]

        summed = broadcast([cast(v) for v in variables])
        for variable, value in zip(variables, summed):
            variable.assign(tf.cast(value, variable.dtype))

    def barrier(self) -> None:
        """Wait until every worker gets here (a tiny all-reduce)."""
        if self.num_workers > 1:
            self.strategy.reduce(
                tf.distribute.ReduceOp.SUM, self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    def _sum_fn(self, value):
        per_replica = self.strategy.run(lambda: tf.identity(value))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def agreed_signal(self, local: Optional[int], signals: Sequence[int]) -> Optional[int]:
        """The stop signal every worker acts on, given the one that reached this worker.

        A signal that reached any worker stops all of them, so they stop after the same step and
        none is left waiting alone in a collective. When several arrived, the highest-numbered
        of ``signals`` wins (SIGTERM over SIGINT). None: no worker was signalled.
        """
        if self.num_workers <= 1:
            return local
        flags = tf.constant([float(local == signum) for signum in signals], tf.float32)
        counts = self._sum(flags).numpy()
        agreed = [signum for signum, count in zip(signals, counts) if count > 0]
        return max(agreed) if agreed else None
