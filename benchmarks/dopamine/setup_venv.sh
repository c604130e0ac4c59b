#!/usr/bin/env bash
# Creates a separate virtual environment with Dopamine (dopamine-rl 4.1.2) so
# that benchmarks/dopamine/measure.py can time Dopamine's own JAX DQN / Rainbow
# loop next to accumbens'. Never installed into accumbens' own environment:
# Dopamine pulls TensorFlow and needs an old jax.
#
# Usage: benchmarks/dopamine/setup_venv.sh [VENV_DIR]
#   VENV_DIR defaults to $DOPAMINE_VENV, else $HOME/.cache/accumbens/dopamine-venv.
#   PYTHON=python3.11 selects the interpreter (default: python3; tested with 3.11.7).
#   DOPAMINE_NO_LOCK=1 skips the full constraints file (requirements.lock) and
#   keeps only the direct pins below.
#
# What it takes (see README.md next to this file):
#   * jax/jaxlib pinned to 0.6.2: dopamine/jax/networks.py imports
#     tensorflow_probability.substrates.jax, and tensorflow-probability 0.25.0's
#     JAX backend uses jax.interpreters.xla.pytype_aval_mappings, which later
#     jax releases removed. flax 0.11.2 / optax 0.2.8 / orbax-checkpoint 0.12.8
#     are what pip resolves next to jax 0.6.2 (tested together).
#   * tensorboard installed (Dopamine's TF summary writer / logging).
#   * a stub `baselines` package: dopamine/discrete_domains/atari_lib.py does
#     `from baselines.common import atari_wrappers` at import time (only used by
#     its PPO preprocessing); OpenAI baselines is not installable here, so a stub
#     whose wrappers raise if ever constructed is written into site-packages.
#   * minatar (dopamine lists it in no requirement, its minatar_env imports it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-${DOPAMINE_VENV:-$HOME/.cache/accumbens/dopamine-venv}}"
PYTHON="${PYTHON:-python3}"

PINS=(
  "dopamine-rl==4.1.2"
  "jax==0.6.2"
  "jaxlib==0.6.2"
  "flax==0.11.2"
  "optax==0.2.8"
  "orbax-checkpoint==0.12.8"
  "tensorflow==2.21.0"
  "tf-keras==2.21.0"
  "tensorflow-probability==0.25.0"
  "tensorboard==2.21.0"
  "minatar==1.0.15"
  "ale-py==0.12.1"
  "gymnasium==1.4.0"
  "gym==0.25.2"
  "gin-config==0.5.0"
  "numpy==2.4.6"
)

STAMP="$VENV/.accumbens-dopamine-setup"
WANT_STAMP="$(cat "$0" "$HERE/requirements.lock" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" && -x "$VENV/bin/python" ]]; then
  echo "dopamine venv up to date: $VENV"
  exit 0
fi

PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$PYVER" != "3.11" ]]; then
  echo "warning: $PYTHON is Python $PYVER; this set-up was made and tested on 3.11" >&2
fi

mkdir -p "$(dirname "$VENV")"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip

CONSTRAINTS=()
if [[ "${DOPAMINE_NO_LOCK:-0}" != "1" ]]; then
  CONSTRAINTS=(-c "$HERE/requirements.lock")
fi
"$VPY" -m pip install --quiet "${CONSTRAINTS[@]}" "${PINS[@]}"

# --- stub for OpenAI baselines (imported by dopamine.discrete_domains.atari_lib)
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$SITE/baselines/common"
cat > "$SITE/baselines/__init__.py" <<'EOF'
"""Stub of OpenAI baselines, written by accumbens' benchmarks/dopamine/setup_venv.sh.

dopamine-rl 4.1.2's atari_lib imports baselines.common.atari_wrappers at import
time but only uses it with create_atari_environment(use_ppo_preprocessing=True).
"""
EOF
echo '"""Stub (see baselines/__init__.py)."""' > "$SITE/baselines/common/__init__.py"
cat > "$SITE/baselines/common/atari_wrappers.py" <<'EOF'
"""Stub: the wrappers Dopamine's PPO preprocessing names; none is usable."""


class _Unavailable:

  def __init__(self, *args, **kwargs):
    raise NotImplementedError(
        'baselines is a stub in this venv (accumbens benchmarks); '
        'use_ppo_preprocessing=True is not supported')


class NoopResetEnv(_Unavailable):
  pass


class MaxAndSkipEnv(_Unavailable):
  pass


class EpisodicLifeEnv(_Unavailable):
  pass


class FireResetEnv(_Unavailable):
  pass


class ClipRewardEnv(_Unavailable):
  pass
EOF

# --- smoke test: Dopamine's agents, runner and both environment families import
# and build.
if ! "$VPY" - <<'EOF' 2>"$VENV/smoke-test.log"
import jax
from dopamine.discrete_domains import atari_lib, run_experiment  # noqa: F401
from dopamine.jax.agents.dqn import dqn_agent  # noqa: F401
from dopamine.jax.agents.rainbow import rainbow_agent  # noqa: F401
from dopamine.labs.environments.minatar import minatar_env
env = minatar_env.create_minatar_env('breakout')
env.reset()
env = atari_lib.create_atari_environment('Pong')
assert env.reset().shape == (84, 84, 1)
print('dopamine venv OK, jax', jax.__version__)
EOF
then
  tail -n 30 "$VENV/smoke-test.log" >&2
  echo "dopamine venv smoke test failed (full log: $VENV/smoke-test.log)" >&2
  exit 1
fi
echo "$WANT_STAMP" > "$STAMP"
echo "dopamine venv ready: $VENV"
