"""Builds the MinAtar datasets for offline RL: `python -m accumbens.build_datasets`.

For each game it
  1. trains a DQN online for `--train_frames` agent steps (a *partly trained* behaviour policy;
     `dqn/minatar.gin` plus `--gin_bindings`), with the host Runner, in `<output_dir>/<game>/dqn`
     (checkpointed: an interrupted build resumes there);
  2. rolls out epsilon-greedy policies w.r.t. that DQN's Q-values, one dataset of exactly
     `--num_steps` steps per `--epsilons` value, in `<output_dir>/<game>/eps_<epsilon>`
     (`--num_envs` environments in lock step, one batched Q-value call per step);
  3. with `--random`, also a uniform-random dataset in `<output_dir>/<game>/random`.

Every step records mu(a|s) = eps/A + (1 - eps) [a == argmax Q(s)] (1/A for uniform random) and
epsilon. Smaller dataset sizes are prefixes of these (`FixedReplayBuffer.max_steps`), so one build
serves a size sweep. The episode that reaches `--num_steps` is cut there and marked truncated (it
bootstraps from its final observation). A progress bar shows each rollout.

Example (the four games of Buckman, Gelada & Bellemare 2020):
  python -m accumbens.build_datasets --output_dir datasets \
      --games asterix breakout freeway space_invaders --train_frames 500000 \
      --epsilons 0 0.1 0.25 0.5 0.75 1 --random --num_steps 1000000
Then train offline, e.g.:
  python -m accumbens.train --gin_files offline/dqn_minatar --gin_bindings \
      "create_environment.name = 'minatar:breakout'" "OfflineRunner.dataset_dir = 'datasets/breakout/eps_0.1'"
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from typing import Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from accumbens import train
from accumbens.agents import networks
from accumbens.environments import create_environment
from accumbens.replay.dataset import DatasetError, DatasetWriter, read_manifest
from accumbens.runners.logging import read_records
from accumbens.runners.runner import Runner

BUILDER = "accumbens.build_datasets"
PAPER_GAMES = ("asterix", "breakout", "freeway", "space_invaders")


def dataset_name(epsilon: Optional[float]) -> str:
    """Folder name of a dataset: 'eps_0.1' for epsilon-greedy, 'random' for uniform random."""
    return "random" if epsilon is None else f"eps_{epsilon:g}"


def train_behaviour_dqn(run_dir: str, game: str, train_frames: int, gin_files: Sequence[str],
                        gin_bindings: Sequence[str], seed: int, progress_bar: bool) -> Runner:
    """Trains (or resumes training of) the behaviour DQN for `train_frames` agent steps."""
    iteration_steps = min(train_frames, 50_000)
    train.parse_config(gin_files, [
        f"create_environment.name = 'minatar:{game}'",
        f"Runner.num_iterations = {max(1, math.ceil(train_frames / iteration_steps))}",
        f"Runner.training_steps = {iteration_steps}",
        "Runner.evaluation_steps = 2000",
        f"Runner.seed = {seed}",
        *gin_bindings,
    ])
    runner = Runner(base_dir=run_dir, tensorboard=False, progress_bar=progress_bar)
    runner.run_experiment()
    return runner


def make_q_function(runner: Runner):
    """A jitted observation-stack -> Q-values function of the runner's (DQN) agent.

    The network is rebuilt from the same gin configuration the agent was built with
    (`create_torso`, `QNetwork`), so the agent's parameters apply to it unchanged.
    """
    network = networks.QNetwork(torso=networks.create_torso(), num_actions=runner.agent.num_actions)
    params = runner.agent.state.params
    return jax.jit(lambda observation: network.apply(params, observation.astype(jnp.float32)))


def rollout(directory: str, make_env, num_steps: int, num_actions: int, stack_size: int, epsilon: Optional[float],
            q_function, seed: int, max_steps_per_episode: int, metadata: dict, progress_bar: bool,
            num_envs: int = 1) -> dict:
    """Runs the behaviour policy in `num_envs` environments in lock step (one batched Q-value call
    per step) and writes exactly `num_steps` steps to a dataset in `directory`.

    Episodes are written whole, in the order they end. The episode that would pass `num_steps`
    is cut there (its last step marked truncated, with its next observation as the final one) and
    the build stops; episodes still running in the other environments are dropped, which favours
    short episodes slightly when `num_envs` > 1 (with one environment nothing is dropped).
    `epsilon=None` is the uniform random policy (no Q-function needed). Returns statistics of the
    episodes written whole.
    """
    rng = np.random.default_rng(seed)
    envs = [make_env() for _ in range(num_envs)]
    shape, dtype = envs[0].observation_space.shape, envs[0].observation_space.dtype
    stacks = np.zeros((num_envs, *shape, stack_size), dtype)
    observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    running: list[list[tuple]] = [[] for _ in envs]  # per env: (obs, action, reward, terminated, next_obs, mu)
    returns: list[float] = []
    tmp_dir = directory + ".partial"
    if os.path.exists(tmp_dir):
        shutil.rmtree(tmp_dir)
    writer = DatasetWriter(tmp_dir, shape, dtype, num_actions, metadata=metadata)
    behaviour_epsilon = 1.0 if epsilon is None else epsilon

    def write(episode: list[tuple], cut: bool) -> None:
        for t, (obs, action, reward, terminated, next_obs, mu) in enumerate(episode):
            last = t == len(episode) - 1
            writer.add(obs, action, reward, terminated and last, last and not terminated,
                       final_observation=next_obs if last else None, behaviour_probability=mu,
                       epsilon=behaviour_epsilon)
        if not cut:
            returns.append(float(sum(step[2] for step in episode)))

    desc = f"{metadata['env']} {os.path.basename(directory)}"
    written = 0
    with tqdm.tqdm(total=num_steps, desc=desc, unit="step", disable=not progress_bar) as bar:
        while written < num_steps:
            stacks[..., :-1] = stacks[..., 1:]
            stacks[..., -1] = np.stack(observations)
            random_actions = rng.integers(num_actions, size=num_envs)
            if epsilon is None:
                actions, mu = random_actions, np.full(num_envs, 1.0 / num_actions)
            else:
                greedy = np.asarray(q_function(stacks)).argmax(-1)
                actions = np.where(rng.random(num_envs) < epsilon, random_actions, greedy)
                mu = epsilon / num_actions + (1.0 - epsilon) * (actions == greedy)
            for i, env in enumerate(envs):
                next_obs, reward, terminated, truncated, _ = env.step(int(actions[i]))
                running[i].append((observations[i], int(actions[i]), float(reward), bool(terminated), next_obs, float(mu[i])))
                ended = terminated or truncated or len(running[i]) >= max_steps_per_episode
                remaining = num_steps - written
                if len(running[i]) >= remaining:  # the dataset is full with this episode's first steps
                    write(running[i][:remaining], cut=not (ended and len(running[i]) == remaining))
                    written += remaining
                    bar.update(remaining)
                    break
                if ended:
                    write(running[i], cut=False)
                    written += len(running[i])
                    bar.update(len(running[i]))
                    bar.set_postfix(ret=f"{np.mean(returns):.2f}", eps=len(returns))
                    running[i] = []
                    stacks[i] = 0
                    observations[i], _ = env.reset()
                else:
                    observations[i] = next_obs
    stats = {"episodes": len(returns), "mean_return": float(np.mean(returns)) if returns else float("nan"),
             "num_envs": num_envs}
    writer.close()
    writer.update_metadata(**stats)
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.replace(tmp_dir, directory)  # a dataset folder appears only when complete
    return stats


def _complete(directory: str, num_steps: int) -> bool:
    """Whether `directory` already holds this builder's dataset of `num_steps` steps."""
    try:
        manifest = read_manifest(directory)
    except DatasetError:
        return False
    return manifest["metadata"].get("builder") == BUILDER and manifest["num_steps"] == num_steps


def build(output_dir: str, games: Sequence[str], epsilons: Sequence[float], num_steps: int, train_frames: int,
          random: bool = False, seed: int = 0, gin_files: Sequence[str] = ("dqn/minatar",),
          gin_bindings: Sequence[str] = (), max_steps_per_episode: int = 100_000,
          progress_bar: Optional[bool] = None, num_envs: int = 1) -> list[dict]:
    """Builds every dataset (skipping complete ones); returns one summary row per dataset."""
    if num_steps < 1 or num_envs < 1:
        raise ValueError(f"num_steps and num_envs must be >= 1, got {num_steps} and {num_envs}.")
    if any(not 0.0 <= e <= 1.0 for e in epsilons):
        raise ValueError(f"epsilons must lie in [0, 1], got {list(epsilons)}.")
    if progress_bar is None:
        progress_bar = sys.stderr.isatty()
    rows = []
    for game_index, game in enumerate(games):
        game_dir = os.path.join(output_dir, game)
        todo = [e for e in epsilons if not _complete(os.path.join(game_dir, dataset_name(e)), num_steps)]
        runner, q_function, dqn_return = None, None, float("nan")
        if todo:
            runner = train_behaviour_dqn(os.path.join(game_dir, "dqn"), game, train_frames, gin_files, gin_bindings,
                                         seed, progress_bar)
            q_function = make_q_function(runner)
            dqn_return = read_records(runner.base_dir)[-1].get("eval_return_mean", float("nan"))
        stack_size = runner.agent.stack_size if runner is not None else 1
        env_name = f"minatar:{game}"
        for index, epsilon in enumerate([*epsilons, *([None] if random else [])]):
            directory = os.path.join(game_dir, dataset_name(epsilon))
            if _complete(directory, num_steps):
                rows.append({"game": game, "dataset": dataset_name(epsilon), "skipped": True})
                continue
            metadata = {
                "builder": BUILDER,
                "env": env_name,
                "behaviour": "uniform_random" if epsilon is None else "dqn_epsilon_greedy",
                "epsilon": 1.0 if epsilon is None else epsilon,
                "seed": seed,
                "stack_size": stack_size,
            }
            if epsilon is not None:
                metadata.update({"dqn_run_dir": os.path.abspath(runner.base_dir), "dqn_train_frames": train_frames,
                                 "dqn_eval_return": dqn_return})
            num_actions = int(create_environment(env_name).action_space.n)
            rollout_seed = int(np.random.SeedSequence([seed, game_index, index, 7]).generate_state(1)[0] % 2**31)
            stats = rollout(directory, lambda: create_environment(env_name), num_steps, num_actions, stack_size,
                            epsilon, q_function, rollout_seed, max_steps_per_episode, metadata, progress_bar,
                            num_envs)
            rows.append({"game": game, "dataset": dataset_name(epsilon), **stats})
    gin.clear_config()
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accumbens.build_datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="datasets go to <output_dir>/<game>/<eps_E|random>")
    parser.add_argument("--games", nargs="+", default=list(PAPER_GAMES), help="MinAtar games")
    parser.add_argument("--epsilons", nargs="*", type=float, default=[0.0, 0.1, 0.25, 0.5, 1.0],
                        help="epsilon-greedy behaviour policies around the partly trained DQN")
    parser.add_argument("--random", action="store_true", help="also a uniform-random dataset")
    parser.add_argument("--num_steps", type=int, default=100_000, help="steps per dataset (exact)")
    parser.add_argument("--train_frames", type=int, default=500_000, help="online DQN training steps (behaviour)")
    parser.add_argument("--max_steps_per_episode", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_envs", type=int, default=16,
                        help="environments stepped in lock step, one batched Q-value call per step")
    parser.add_argument("--gin_files", nargs="+", default=["dqn/minatar"], help="the behaviour DQN's config")
    parser.add_argument("--gin_bindings", nargs="*", default=[], help="extra bindings for the behaviour DQN")
    parser.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    rows = build(args.output_dir, args.games, args.epsilons, args.num_steps, args.train_frames, args.random,
                 args.seed, args.gin_files, args.gin_bindings, args.max_steps_per_episode, args.progress_bar,
                 args.num_envs)
    print(f"{'game':16s} {'dataset':10s} {'episodes':>9s} {'mean return':>12s}")
    for row in rows:
        if row.get("skipped"):
            print(f"{row['game']:16s} {row['dataset']:10s} {'(already built)':>22s}")
        else:
            print(f"{row['game']:16s} {row['dataset']:10s} {row['episodes']:9d} {row['mean_return']:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
