"""The clock and randomness a step sees, made durable.

Inside a step that the engine runs (the sandbox) or that an external worker
runs for the engine, ``time.time()``, ``time.time_ns()`` and
``datetime.now()`` / ``utcnow()`` / ``today()`` read a journaled clock: each
read is a call the engine records, so a step run again (a replay, after it
hibernated or its worker died) sees the values its first run saw. On a
worker, the ``random`` module's functions also draw from a journaled seed
(the sandbox's randomness is already made equal on replay by the engine).
Outside a step they are the usual ones.

:func:`install` patches the modules once, for the whole process; the mode
that installs them gives the functions that say, at each read, whether a
step is running and what it sees. ``from datetime import datetime`` made
*before* the patch keeps the unpatched class: the sandbox installs them when
the SDK is imported, before the user's file; a worker process before it
imports the steps' file (``python -m cerebelum worker``) or when a
:class:`~cerebelum.worker.Worker` is made.
"""

from __future__ import annotations

import datetime as _datetime
import random as _random
import time
from typing import Callable

_real_time_ns = time.time_ns
_real_datetime = _datetime.datetime


def real_time_ns() -> int:
    """The machine's clock, never a step's journaled one: for the SDK's own
    deadlines and logs."""
    return _real_time_ns()


def _no_step_clock() -> int | None:
    return None


def _no_step_random() -> _random.Random | None:
    return None


#: The running step's clock in nanoseconds, or None outside a step.
_step_clock: Callable[[], int | None] = _no_step_clock
#: The running step's generator, or None outside a step.
_step_random: Callable[[], _random.Random | None] = _no_step_random


def _now_ns() -> int:
    ns = _step_clock()
    return _real_time_ns() if ns is None else ns


def _time() -> float:
    return _now_ns() / 1e9


class _LiveDatetime(_real_datetime):
    """``datetime.datetime`` whose ``now``/``utcnow``/``today`` read the
    step's journaled clock inside a step."""

    @classmethod
    def now(cls, tz=None):
        return cls.fromtimestamp(_time(), tz)

    @classmethod
    def utcnow(cls):
        return cls.fromtimestamp(_time(), _datetime.timezone.utc).replace(tzinfo=None)

    @classmethod
    def today(cls):
        return cls.fromtimestamp(_time())


def _dispatch(name: str, default: Callable) -> Callable:
    def draw(*args, **kwargs):
        generator = _step_random()
        if generator is None:
            return default(*args, **kwargs)
        return getattr(generator, name)(*args, **kwargs)
    draw.__name__ = draw.__qualname__ = name
    draw.__doc__ = default.__doc__
    return draw


_clock_patched = False
_random_patched = False


def install(clock: Callable[[], int | None],
            random: Callable[[], _random.Random | None] | None = None) -> None:
    """Makes ``clock`` (nanoseconds, or None: no step runs) what the clock
    functions read, and ``random`` (a step's generator, or None) what the
    ``random`` module's functions draw from; patches the modules the first
    time."""
    global _step_clock, _step_random, _clock_patched, _random_patched
    _step_clock = clock
    if not _clock_patched:
        time.time = _time
        time.time_ns = _now_ns
        _datetime.datetime = _LiveDatetime  # type: ignore[misc]
        _clock_patched = True
    if random is None:
        return
    _step_random = random
    if not _random_patched:
        # The module's functions are the bound methods of one hidden
        # generator: each becomes a function that asks which one to use.
        shared = getattr(_random, "_inst")
        for name in dir(_random):
            default = getattr(_random, name)
            if getattr(default, "__self__", None) is shared:
                setattr(_random, name, _dispatch(name, default))
        _random_patched = True
