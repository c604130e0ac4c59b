"""Time-bounded runs: stop at an iteration boundary before a wall-clock deadline, losing nothing.

A leased machine (a 10-minute device call, a preemptible job) gives a run a fixed budget. Killing
the process at the limit loses the iteration in flight; `with_deadline(RunnerClass, deadline_at)`
instead refuses to *start* an iteration that would end after `deadline_at`, raising
`DeadlineReached`, after checkpointing the states it was handed if the runner would not have done
so itself. The same command later resumes from that checkpoint.

The next iteration is predicted to take as long as the last one, minus the time the last one spent
compiling (traced, lowered and compiled by XLA, reported by `jax.monitoring`): the first iteration
of a compiled runner pays all of its compilation, often most of its wall time, and would otherwise
make a game with a slow compile stop after one iteration.
"""
from __future__ import annotations

import threading
import time

import jax

_COMPILE_EVENT_PREFIX = "/jax/core/compile/"
_compile_lock = threading.Lock()
_compile_seconds = 0.0
_listening = False


class DeadlineReached(Exception):
    """Raised before an iteration that would not finish before the deadline."""


def _on_event_duration(event: str, duration_secs: float, **_) -> None:
    global _compile_seconds
    if event.startswith(_COMPILE_EVENT_PREFIX):
        with _compile_lock:
            _compile_seconds += duration_secs


def compile_seconds() -> float:
    """Seconds spent so far in this process tracing, lowering and compiling JAX programs (only
    counted from the first `with_deadline` call, which installs the listener)."""
    with _compile_lock:
        return _compile_seconds


def _listen() -> None:
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_on_event_duration)
        _listening = True


def with_deadline(cls: type, deadline_at: float) -> type:
    """A subclass of runner class `cls` whose `run_iteration` stops before `deadline_at`.

    Args:
      cls: `Runner` (`run_iteration(iteration)`, checkpoints every iteration) or `CompiledRunner`
        (`run_iteration(states, iteration)`, checkpoints every `checkpoint_every` iterations; the
        states handed to a refused iteration are checkpointed first unless that was due anyway).
      deadline_at: a `time.time()` value.

    Returns:
      The subclass (same name as `cls`). Its `run_iteration` raises `DeadlineReached` when
      now + the last iteration's duration (without its compilation) would pass `deadline_at`; the
      first iteration starts whenever the deadline has not passed.
    """
    _listen()

    class Deadlined(cls):
        _last_seconds = 0.0

        def run_iteration(self, *args, **kwargs):
            if time.time() + self._last_seconds > deadline_at:
                if len(args) == 2:  # CompiledRunner.run_iteration(states, iteration)
                    states, iteration = args
                    if iteration > 0 and iteration % self.checkpoint_every:
                        self._save(states, iteration - 1)
                raise DeadlineReached()
            start, compiled_before = time.time(), compile_seconds()
            result = super().run_iteration(*args, **kwargs)
            self._last_seconds = max(0.0, time.time() - start - (compile_seconds() - compiled_before))
            return result

    Deadlined.__name__ = Deadlined.__qualname__ = cls.__name__
    return Deadlined
