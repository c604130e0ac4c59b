"""Steps per second of Dopamine's own JAX DQN / Rainbow training loop.

Run with the Python of the venv made by setup_venv.sh (never accumbens' own):

  ~/.cache/accumbens/dopamine-venv/bin/python benchmarks/dopamine/measure.py \
      --agent dqn --env minatar:breakout --steps 5000 --warmup 2000

Everything timed is Dopamine's code: the agent is built by Dopamine's
`run_experiment.create_agent` (JaxDQNAgent / JaxRainbowAgent), the environment
by Dopamine's `minatar_env.create_minatar_env` or
`atari_lib.create_atari_environment`, and the loop is Dopamine's
`TrainRunner._run_one_phase` (acting, replay storage, a gradient update every
`update_period` agent steps, target syncs, its TensorBoard loss summaries).
The hyperparameters are Dopamine's published gin settings, written below as gin
bindings (the source file of each is cited).

Learning is ON in the measured window: the warm-up phase runs until the replay
holds more than `min_replay_history` transitions AND the first gradient update
(and its jit compilation) has happened, and for at least `--warmup` agent
steps. Only then is the clock started, so every `update_period`-th agent step
of the measured window runs a gradient update (the JSON's "updates" counts
them). `--min_replay_history` overrides the config's value (a smaller value
only shortens the warm-up; the measured steady state is the same).

Dopamine runs whole episodes (`_run_one_phase` stops at the first episode end
at or after the requested number of steps), so the measured and warm-up step
counts are at least, not exactly, the requested ones; the JSON reports the
actual counts and the rate is actual steps / seconds.

Prints exactly one JSON line on stdout; Dopamine's own console output and all
logs go to stderr.
"""

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Dopamine never uses a GPU here; keep TensorFlow and jax off any accelerator.
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# Hyperparameters, transcribed from the dopamine repository (google/dopamine,
# files unchanged since the 4.1.2 release; the copies in the repository at
# commit 5873f5494ee0c2d7c016d0ab2ad530354fec59d0 were read).
#
# MinAtar: dopamine/labs/environments/minatar/dqn_breakout.gin and
# dopamine/labs/environments/minatar/rainbow_breakout.gin. Those files bind the
# replay capacity/batch size through `OutOfGraphReplayBuffer.*` /
# `OutOfGraphPrioritizedReplayBuffer.*` (the old TF replay), which the 4.1.2
# JAX agents no longer use: they build `dopamine.jax.replay_memory.ReplayBuffer`,
# whose `max_capacity`/`batch_size` have no default, so the published MinAtar
# files do not even construct the agent. The same values are bound here on the
# classes the JAX agents use (ReplayBuffer, PrioritizedSamplingDistribution).
# `Runner.num_iterations` / `Runner.training_steps` are irrelevant to a timed
# phase and left out.
_MINATAR_COMMON = [
    'import dopamine.discrete_domains.run_experiment',
    'import dopamine.jax.replay_memory.replay_buffer',
    'import dopamine.jax.replay_memory.samplers',
    'import dopamine.labs.environments.minatar.minatar_env',
    "create_optimizer.learning_rate = 0.00025",
    "create_optimizer.eps = 3.125e-4",
    "create_minatar_env.game_name = '{game}'",
    'TrainRunner.create_environment_fn = @minatar_env.create_minatar_env',
    "create_runner.schedule = 'continuous_train'",
    'create_agent.debug_mode = True',
    'Runner.max_steps_per_episode = 100000000',
    # OutOfGraph(Prioritized)ReplayBuffer.replay_capacity / .batch_size:
    'ReplayBuffer.max_capacity = 100000',
    'ReplayBuffer.batch_size = 32',
]

_MINATAR_SHAPE = {
    'asterix': 'ASTERIX_SHAPE',
    'breakout': 'BREAKOUT_SHAPE',
    'freeway': 'FREEWAY_SHAPE',
    'seaquest': 'SEAQUEST_SHAPE',
    'space_invaders': 'SPACE_INVADERS_SHAPE',
}

# dopamine/labs/environments/minatar/dqn_breakout.gin
_MINATAR_DQN = [
    'import dopamine.jax.agents.dqn.dqn_agent',
    'JaxDQNAgent.observation_shape = %minatar_env.{shape}',
    'JaxDQNAgent.observation_dtype = %minatar_env.DTYPE',
    'JaxDQNAgent.stack_size = 1',
    'JaxDQNAgent.network = @minatar_env.MinatarDQNNetwork',
    'JaxDQNAgent.gamma = 0.99',
    'JaxDQNAgent.update_horizon = 1',
    'JaxDQNAgent.min_replay_history = 1000',
    'JaxDQNAgent.update_period = 4',
    'JaxDQNAgent.target_update_period = 1000',
    "JaxDQNAgent.optimizer = 'adam'",
    "create_agent.agent_name = 'jax_dqn'",
]

# dopamine/labs/environments/minatar/rainbow_breakout.gin
_MINATAR_RAINBOW = [
    'import dopamine.jax.agents.rainbow.rainbow_agent',
    'JaxRainbowAgent.observation_shape = %minatar_env.{shape}',
    'JaxRainbowAgent.observation_dtype = %minatar_env.DTYPE',
    'JaxRainbowAgent.stack_size = 1',
    'JaxRainbowAgent.network = @minatar_env.MinatarRainbowNetwork',
    'JaxRainbowAgent.num_atoms = 51',
    'JaxRainbowAgent.vmax = 100.',
    'JaxRainbowAgent.gamma = 0.99',
    'JaxRainbowAgent.update_horizon = 3',
    'JaxRainbowAgent.min_replay_history = 1000',
    'JaxRainbowAgent.update_period = 4',
    'JaxRainbowAgent.target_update_period = 1000',
    "JaxRainbowAgent.replay_scheme = 'prioritized'",
    "create_agent.agent_name = 'jax_rainbow'",
    # OutOfGraphPrioritizedReplayBuffer.replay_capacity (the sum tree's size):
    'PrioritizedSamplingDistribution.max_capacity = 100000',
]

_ATARI_COMMON = [
    'import dopamine.discrete_domains.atari_lib',
    'import dopamine.discrete_domains.run_experiment',
    'import dopamine.jax.replay_memory.replay_buffer',
    'import dopamine.jax.replay_memory.samplers',
    "atari_lib.create_atari_environment.game_name = '{game}'",
    'atari_lib.create_atari_environment.sticky_actions = True',
    "create_runner.schedule = 'continuous_train'",
    'create_agent.debug_mode = True',
    'Runner.max_steps_per_episode = 27000',
    'ReplayBuffer.max_capacity = 1000000',
    'ReplayBuffer.batch_size = 32',
]

# dopamine/jax/agents/dqn/configs/dqn.gin
_ATARI_DQN = [
    'import dopamine.jax.agents.dqn.dqn_agent',
    'JaxDQNAgent.gamma = 0.99',
    'JaxDQNAgent.update_horizon = 1',
    'JaxDQNAgent.min_replay_history = 20000',
    'JaxDQNAgent.update_period = 4',
    'JaxDQNAgent.target_update_period = 8000',
    'JaxDQNAgent.epsilon_train = 0.01',
    'JaxDQNAgent.epsilon_eval = 0.001',
    'JaxDQNAgent.epsilon_decay_period = 250000',
    "JaxDQNAgent.optimizer = 'adam'",
    'create_optimizer.learning_rate = 6.25e-5',
    'create_optimizer.eps = 1.5e-4',
    "create_agent.agent_name = 'jax_dqn'",
]

# dopamine/jax/agents/rainbow/configs/rainbow.gin
_ATARI_RAINBOW = [
    'import dopamine.jax.agents.rainbow.rainbow_agent',
    'JaxRainbowAgent.num_atoms = 51',
    'JaxRainbowAgent.vmax = 10.',
    'JaxRainbowAgent.gamma = 0.99',
    'JaxRainbowAgent.update_horizon = 3',
    'JaxRainbowAgent.min_replay_history = 20000',
    'JaxRainbowAgent.update_period = 4',
    'JaxRainbowAgent.target_update_period = 8000',
    'JaxRainbowAgent.epsilon_train = 0.01',
    'JaxRainbowAgent.epsilon_eval = 0.001',
    'JaxRainbowAgent.epsilon_decay_period = 250000',
    "JaxRainbowAgent.replay_scheme = 'prioritized'",
    'create_optimizer.learning_rate = 0.0000625',
    'create_optimizer.eps = 0.00015',
    "create_agent.agent_name = 'jax_rainbow'",
    'PrioritizedSamplingDistribution.max_capacity = 1000000',
]

_SOURCES = {
    ('dqn', 'minatar'): 'dopamine/labs/environments/minatar/dqn_{game}.gin',
    ('rainbow', 'minatar'):
        'dopamine/labs/environments/minatar/rainbow_{game}.gin',
    ('dqn', 'atari'): 'dopamine/jax/agents/dqn/configs/dqn.gin',
    ('rainbow', 'atari'): 'dopamine/jax/agents/rainbow/configs/rainbow.gin',
}


def gin_bindings(agent, env):
  """Dopamine's published settings for (agent, env) as gin bindings."""
  family, _, game = env.partition(':')
  if family == 'minatar':
    if game not in _MINATAR_SHAPE:
      raise ValueError(f'unknown MinAtar game {game!r}')
    lines = _MINATAR_COMMON + (
        _MINATAR_DQN if agent == 'dqn' else _MINATAR_RAINBOW)
    shape = _MINATAR_SHAPE[game]
  elif family == 'atari':
    if not game:
      raise ValueError('atari:GAME needs a game, e.g. atari:Pong')
    lines = _ATARI_COMMON + (_ATARI_DQN if agent == 'dqn' else _ATARI_RAINBOW)
    shape = None
  else:
    raise ValueError(f'unknown environment {env!r}: use minatar:GAME or '
                     'atari:GAME')
  source = _SOURCES[(agent, family)].format(game=game)
  return [l.format(game=game, shape=shape) for l in lines], source


def _versions():
  names = ['dopamine-rl', 'jax', 'jaxlib', 'flax', 'optax', 'numpy',
           'tensorflow', 'tensorflow-probability', 'gin-config', 'minatar',
           'ale-py', 'gymnasium']
  out = {'python': platform.python_version()}
  for n in names:
    try:
      out[n] = importlib.metadata.version(n)
    except importlib.metadata.PackageNotFoundError:
      out[n] = None
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--agent', choices=['dqn', 'rainbow'], required=True)
  p.add_argument('--env', required=True,
                 help='minatar:breakout (or another MinAtar game) or '
                 'atari:Pong (or another ALE game)')
  p.add_argument('--steps', type=int, default=5000,
                 help='agent steps in the timed window (at least; whole '
                 'episodes are run)')
  p.add_argument('--warmup', type=int, default=0,
                 help='agent steps before the timer starts (at least; always '
                 'extended past min_replay_history and the first update)')
  p.add_argument('--min_replay_history', type=int, default=None,
                 help="override the config's min_replay_history")
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--gin_bindings', nargs='*', default=[],
                 help='extra gin bindings, applied last')
  p.add_argument('--base_dir', default=None,
                 help='Dopamine base_dir (default: a temporary directory, '
                 'removed afterwards)')
  args = p.parse_args(argv)

  real_stdout = sys.stdout
  # Everything Dopamine/TF/jax print goes to stderr; stdout gets one JSON line.
  with contextlib.redirect_stdout(sys.stderr):
    result = _measure(args)
  real_stdout.write(json.dumps(result) + '\n')
  real_stdout.flush()


def _measure(args):
  import gin  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from dopamine.discrete_domains import iteration_statistics  # pylint: disable=g-import-not-at-top
  from dopamine.discrete_domains import run_experiment  # pylint: disable=g-import-not-at-top
  from dopamine.jax.agents.dqn import dqn_agent  # pylint: disable=g-import-not-at-top
  from dopamine.jax.agents.rainbow import rainbow_agent  # pylint: disable=g-import-not-at-top

  absl_logging.set_verbosity(absl_logging.WARNING)
  bindings, source = gin_bindings(args.agent, args.env)
  agent_cls = 'JaxDQNAgent' if args.agent == 'dqn' else 'JaxRainbowAgent'
  bindings.append(f'{agent_cls}.seed = {args.seed}')
  if args.min_replay_history is not None:
    bindings.append(
        f'{agent_cls}.min_replay_history = {args.min_replay_history}')
  bindings += list(args.gin_bindings)
  gin.clear_config()
  gin.parse_config(bindings)

  # Count the gradient updates: both agents call their module-level `train`
  # (a jitted function) through the module global, so wrapping it is exact and
  # adds one Python call per update.
  module = dqn_agent if args.agent == 'dqn' else rainbow_agent
  counter = {'updates': 0}
  jitted_train = module.train

  def counted_train(*a, **k):
    counter['updates'] += 1
    return jitted_train(*a, **k)

  module.train = counted_train

  tmp = None
  base_dir = args.base_dir
  if base_dir is None:
    tmp = tempfile.mkdtemp(prefix='dopamine-measure-')
    base_dir = tmp
  try:
    runner = run_experiment.create_runner(base_dir)
    agent = runner._agent  # pylint: disable=protected-access
    agent.eval_mode = False
    stats = iteration_statistics.IterationStatistics()

    # Warm-up: past min_replay_history and past the first update (so jit
    # compilation of the update is outside the timed window).
    t0 = time.perf_counter()
    warm_steps, warm_episodes = 0, 0
    target = max(args.warmup, agent.min_replay_history + 1)
    while True:
      n, _, e = runner._run_one_phase(target - warm_steps, stats, 'train')  # pylint: disable=protected-access
      warm_steps += n
      warm_episodes += e
      if counter['updates'] >= 2 and warm_steps >= target:
        break
      target = warm_steps + 4 * agent.update_period
    warm_seconds = time.perf_counter() - t0
    warm_updates = counter['updates']

    # Timed window: Dopamine's own training loop, learning on.
    # Block on any pending device work before starting and stopping the clock.
    jax.block_until_ready(agent.online_params)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    steps, sum_returns, episodes = runner._run_one_phase(  # pylint: disable=protected-access
        args.steps, stats, 'train')
    jax.block_until_ready(agent.online_params)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    updates = counter['updates'] - warm_updates
  finally:
    module.train = jitted_train
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)

  return {
      'agent': args.agent,
      'env': args.env,
      'steps': int(steps),
      'seconds': round(seconds, 4),
      'steps_per_second': round(steps / seconds, 2),
      'min_replay_history': int(agent.min_replay_history),
      'update_period': int(agent.update_period),
      'updates': int(updates),
      'target_update_period': int(agent.target_update_period),
      'episodes': int(episodes),
      'mean_return': round(sum_returns / max(episodes, 1), 3),
      'requested_steps': args.steps,
      'warmup_steps': int(warm_steps),
      'warmup_requested': args.warmup,
      'warmup_seconds': round(warm_seconds, 2),
      'warmup_updates': int(warm_updates),
      # 1-minute load averages of the machine around the timed window: other
      # processes on the (2-core) machine slow the measurement down.
      'loadavg_1min_before': round(load_before[0], 2),
      'loadavg_1min_after': round(load_after[0], 2),
      'cpu_count': os.cpu_count(),
      'implementation': f'dopamine {agent_cls} + TrainRunner._run_one_phase',
      'config_source': 'google/dopamine:' + source,
      'gin_bindings': bindings,
      'versions': _versions(),
  }


if __name__ == '__main__':
  main()
