"""Speed fixes to gymnax's MinAtar ports that keep their outputs bit for bit.

gymnax 1.0.1's Asterix picks the slot of a new enemy or treasure with `lax.while_loop`
(`gymnax.environments.minatar.asterix.while_sample_slots`). It walks a random permutation of the 8
lanes until it finds a free one. A data-dependent while loop inside every environment step is
cheap on a CPU, but on a GPU each of its iterations copies the loop condition back to the host.
Under `vmap` the loop also runs until the slowest environment is done. Asterix was the slowest
game of the compiled runner because of it: with 3 seeds on one shared H100 (2026-11-25),
Asterix ran at 0.8-2k agent steps/s over all seeds, against 28k for Breakout.

`loop_free_sample_slots` computes the same result with one comparison and an argmax. Mind gymnax's
quirk: the walk starts *after* the first entry of the permutation, so that entry is never
chosen. When no lane is free, the result is the permutation's last entry, flagged not free.
`install()` replaces gymnax's function with it. `spawn_entity` looks the function up as a module
global when it is traced, so environments created before the call are covered too, as long as
they have not been traced yet. The replacement is checked against the original on every input
pattern in `tests/environments/test_gymnax_fixes.py`, which also compares whole Asterix rollouts.
It measured 2.4x faster on CPU (8 vmapped environments, 6.5k -> 15.9k steps/s).

`install()` is idempotent, and it refuses to patch a gymnax whose function is not the one this
was written against (its signature and module are checked): with another gymnax it does
nothing and says so once.
"""
from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp

_ASTERIX_LANES = 8
_installed = False


def loop_free_sample_slots(key: jax.Array, state_entities: jax.Array) -> tuple[jax.Array, jax.Array]:
    """gymnax Asterix's slot search without a while loop: the same (slot, free) for every input.

    Args:
      key: the PRNG key gymnax's function draws its lane permutation from.
      state_entities: [8] int, 1 where a lane is occupied (the entities' column 4).

    Returns:
      (slot, free): the first lane of the permutation, skipping its first entry, that is free,
      and 1; or, if none is, the permutation's last lane and 0.
    """
    order = jax.random.permutation(key, jnp.arange(_ASTERIX_LANES))
    candidates = state_entities[order][1:] == 0
    found = jnp.any(candidates)
    position = jnp.where(found, jnp.argmax(candidates) + 1, _ASTERIX_LANES - 1)
    return order[position], found.astype(jnp.int32)


def install() -> bool:
    """Replaces gymnax Asterix's while-loop slot search with `loop_free_sample_slots`.

    Returns True if the fix is in place (now or before), False if this gymnax differs from
    the version it was written against, in which case gymnax is left untouched.
    """
    global _installed
    if _installed:
        return True
    try:
        from gymnax.environments.minatar import asterix
    except ImportError:
        return False
    original = getattr(asterix, "while_sample_slots", None)
    expected = ["key", "state_entities"]
    if original is None or list(inspect.signature(original).parameters) != expected or "spawn_entity" not in vars(asterix):
        warnings.warn(
            "accumbens: gymnax's Asterix differs from gymnax 1.0.1 (no while_sample_slots(key, state_entities)); "
            "its slot search is left as it is (correct, but slow on GPUs)",
            stacklevel=2,
        )
        return False
    asterix.while_sample_slots = loop_free_sample_slots
    asterix._accumbens_original_while_sample_slots = original
    _installed = True
    return True


def original_sample_slots():
    """gymnax's own slot search (for tests), whether or not `install()` has run."""
    from gymnax.environments.minatar import asterix

    return getattr(asterix, "_accumbens_original_while_sample_slots", asterix.while_sample_slots)
