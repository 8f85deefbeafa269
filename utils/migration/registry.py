"""The one registry of migration methods, and running one on a song.

:data:`METHODS` maps each name to its class (:class:`~utils.migration.method.MigrationMethod`),
in the order the command lines offer them and the notebooks sweep them: the latent moves
``midpoint``, ``shift`` and ``match`` (:mod:`utils.migration.latent_moves`), the no-model
baseline ``eq`` (:mod:`utils.migration.eq_baseline`) and a conditional checkpoint's ``convert``
(:mod:`utils.migration.convert`). ``migrate.py``, ``evaluate.py`` and the notebooks read every fact
about a method from its class here (what it takes, what it needs of the checkpoint, its help);
:func:`fit` builds one for a codec and a :class:`~utils.migration.method.MigrationTarget`, and
:func:`migrate` fits and runs one on a song in one call.

Loading this module imports no TensorFlow, so a command line builds and checks its flags first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Tuple, Type

import numpy as np

from utils.errors import MigrationError
from utils.migration.convert import Convert
from utils.migration.eq_baseline import Eq
from utils.migration.latent_moves import Match, Midpoint, Shift
from utils.migration.method import LATENT, MigrationMethod, MigrationResult, MigrationTarget
from utils.runs.latent_stats import LatentStats

if TYPE_CHECKING:  # the codec loads TensorFlow
    from utils.runs.codec import Codec

METHODS: Dict[str, Type[MigrationMethod]] = {
    method.name: method for method in (Midpoint, Shift, Match, Eq, Convert)}
METHOD_NAMES: Tuple[str, ...] = tuple(METHODS)
# The methods that move latents toward latent statistics.
LATENT_METHODS: Tuple[str, ...] = tuple(
    name for name, method in METHODS.items() if method.reference == LATENT)


def method_class(name: str) -> Type[MigrationMethod]:
    """The class of the method ``name``; raises :class:`MigrationError` (one line, naming the
    methods) for an unknown one."""
    if name not in METHODS:
        raise MigrationError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
    return METHODS[name]


def names_where(fact: Callable[[Type[MigrationMethod]], bool]) -> Tuple[str, ...]:
    """The names of the methods of which ``fact(class)`` holds, in registry order."""
    return tuple(name for name, method in METHODS.items() if fact(method))


def either(names: Iterable[str]) -> str:
    """``"convert or eq"``, ``"match, midpoint or shift"``: names for a message, in alphabetical
    order."""
    names = sorted(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def methods_help() -> str:
    """One line per method: ``name: what it does``, for a ``--method`` flag's help."""
    return "; ".join(f"{name}: {method.help}" for name, method in METHODS.items())


def methods_for(codec: "Codec") -> Tuple[str, ...]:
    """The methods that can run on ``codec``'s checkpoint (``convert`` needs a conditional one)."""
    return names_where(lambda method: method.works_with(codec))


def fit(name: str, codec: "Codec", target: MigrationTarget) -> MigrationMethod:
    """The method ``name`` fitted to ``target`` for songs encoded under ``codec``.

    Raises:
        MigrationError: an unknown method, or a target without what the method needs.
    """
    return method_class(name).fit(codec, target)


def migrate(codec: "Codec", samples: np.ndarray, method: str, strength: float,
            target: MigrationTarget, source_stats: Optional[LatentStats] = None,
            **options) -> MigrationResult:
    """Fit ``method`` (any of :data:`METHOD_NAMES`) to ``target`` and run it at ``strength`` on a
    whole song ``samples (N,)``; strength 0 returns the source (to float32 precision).

    ``source_stats`` and ``options`` are :meth:`MigrationMethod.transform
    <utils.migration.method.MigrationMethod.transform>`'s (``griffin_lim``, ``semitones``,
    chunking, segments). To run one method on many songs, :func:`fit` it once instead.
    """
    return fit(method, codec, target).transform(samples, strength, source_stats, **options)
