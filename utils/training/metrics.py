"""What the trainer's compiled calls and epochs measure, as named structures (``pipeline.py``
re-exports them).

:class:`StepTotals` are sums inside the ``tf.function`` (float32 tensors) and floats outside;
:class:`StepMetrics` are means over the applied steps of a stretch of training;
:class:`TrainResult` is what :meth:`pipeline.Trainer.fit` did. Units: ``bits_per_dim`` in bits per
dimension of a patch (``D = H * W * C``), ``nll`` in nats per patch (``bits_per_dim * D * ln 2``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, NamedTuple, Optional

import tensorflow as tf

from utils.errors import SinGlowError

LN2 = math.log(2.0)


class TrainingDiverged(SinGlowError, RuntimeError):
    """Too many consecutive non-finite steps; the last checkpoint on disk is left intact."""

    @classmethod
    def at(cls, step: int, run: int, checkpoint: Optional[str]) -> "TrainingDiverged":
        """The one-line error of ``run`` consecutive non-finite steps ending at ``step``."""
        return cls(
            f"training stopped at step {step}: {run} consecutive non-finite steps (NaN/Inf "
            f"loss or gradient); the last checkpoint ({checkpoint or 'none'}) is intact; try a "
            "lower --learning_rate, a longer --warmup_steps or a smaller --clip_norm")


class StepTotals(NamedTuple):
    """Sums over the steps of one compiled call (float32 tensors inside it, floats outside).

    ``bits_per_dim``, ``z_mean``, ``z_var`` and ``grad_norm`` (before clipping) are summed over
    the applied steps, each already a mean over its global batch; ``applied`` and ``skipped``
    count steps.
    """

    bits_per_dim: float = 0.0
    z_mean: float = 0.0
    z_var: float = 0.0
    grad_norm: float = 0.0
    applied: float = 0.0
    skipped: float = 0.0

    def __add__(self, other: "StepTotals") -> "StepTotals":  # type: ignore[override]
        return StepTotals(*(a + b for a, b in zip(self, other)))


@dataclasses.dataclass(frozen=True)
class StepMetrics:
    """Means over the applied steps of a stretch of training (NaN when none was applied).

    bits_per_dim: bits per dimension; nll: nats per patch; z_mean, z_var: mean and variance of
    z over its D dimensions, averaged over the batch; grad_norm: global gradient norm before
    clipping; applied, skipped: step counts; seconds: wall time of the stretch.
    """

    bits_per_dim: float
    nll: float
    z_mean: float
    z_var: float
    grad_norm: float
    applied: int
    skipped: int
    seconds: float = 0.0

    @classmethod
    def from_totals(cls, totals: StepTotals, dims: int, seconds: float = 0.0) -> "StepMetrics":
        applied = float(totals.applied)
        mean = (lambda value: float(value) / applied) if applied else (lambda value: math.nan)
        bits = mean(totals.bits_per_dim)
        return cls(bits, bits * dims * LN2, mean(totals.z_mean), mean(totals.z_var),
                   mean(totals.grad_norm), int(applied), int(totals.skipped), seconds)

    @property
    def ran(self) -> int:
        return self.applied + self.skipped

    @property
    def steps_per_second(self) -> float:
        return self.ran / max(self.seconds, 1e-9)

    def history(self, epoch: int, step: int, validation=None) -> dict:
        """One epoch of :attr:`TrainResult.history`: these training means and, when the run
        validates, the held-out ``val_bits_per_dim`` and ``val_nll`` of ``validation`` (a
        :class:`utils.training.validation.ValidationMetrics`; None without held-out songs)."""
        return {"epoch": epoch, "step": step, "nll": self.nll, "bits_per_dim": self.bits_per_dim,
                "z_mean": self.z_mean, "z_var": self.z_var, "skipped_steps": self.skipped,
                "steps_per_second": self.steps_per_second,
                "val_bits_per_dim": None if validation is None else validation.bits_per_dim,
                "val_nll": None if validation is None else validation.nll}


class ReplicaMetrics(NamedTuple):
    """One replica's share of a step's metrics (sums over its slice divided by the global batch),
    so that their all-reduced sum is the global batch mean."""

    bits_per_dim: tf.Tensor
    z_mean: tf.Tensor
    z_var: tf.Tensor


@dataclasses.dataclass
class TrainResult:
    """What :meth:`pipeline.Trainer.fit` did.

    step: the global step at the end; history: one dict per finished epoch
    (:meth:`StepMetrics.history`: ``epoch``, ``step``, ``nll`` nats/patch, ``bits_per_dim``,
    ``z_mean``, ``z_var``, ``skipped_steps``, ``steps_per_second``, ``val_bits_per_dim``,
    ``val_nll``); interrupted: stopped by Ctrl-C or SIGTERM (a checkpoint was saved); checkpoint:
    the last checkpoint written (or restored); outputs: name -> path of the wavs and weights
    written at the end; stop_signal: the number of the signal that stopped it, else 0;
    stopped_early: ended by ``--early_stopping_patience`` before ``epochs``.
    """

    step: int
    history: List[dict]
    interrupted: bool = False
    checkpoint: Optional[str] = None
    outputs: Dict[str, str] = dataclasses.field(default_factory=dict)
    stop_signal: int = 0
    stopped_early: bool = False
