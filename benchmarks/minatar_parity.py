"""Do gymnax's MinAtar games behave like the minatar package? Random-policy returns and lengths.

    python benchmarks/minatar_parity.py                    # 5 games, 300 episodes per side
    python benchmarks/minatar_parity.py --games breakout --episodes 50

Results obtained with the compiled runner (gymnax) carry over to the minatar package, which the
published MinAtar baselines used, only if the two implement the same games. This script plays a
uniform random policy for `--episodes` episodes on each side, with sticky actions 0.1 on both
(the minatar package's default; `create_jax_environment('minatar:<game>')` adds them to gymnax)
and the same episode cap, and compares the distributions of episode returns and lengths: means
with standard errors and a two-sample Kolmogorov-Smirnov test (scipy). A small p-value says the
two differ for this policy; a large one says no difference was detected at this sample size.
Results go to benchmarks/results/minatar_parity.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # don't shadow modules
RESULTS = os.path.join(HERE, "results", "minatar_parity.json")
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def host_episodes(game: str, episodes: int, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(returns, lengths) of a uniform random policy on the minatar package."""
    from accumbens.environments import create_environment

    env = create_environment(f"minatar:{game}")
    rng = np.random.default_rng(seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    for i in range(episodes):
        env.reset(seed=seed * 100_003 + i)
        for t in range(cap):
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            returns[i] += reward
            if terminated or truncated:
                break
        lengths[i] = t + 1
    return returns, lengths


def jax_episodes(game: str, episodes: int, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(returns, lengths) of the first episode of `episodes` vmapped gymnax environments."""
    import jax
    import jax.numpy as jnp

    from accumbens.environments.jax_envs import create_jax_environment

    env, params = create_jax_environment(f"minatar:{game}", params={"max_steps_in_episode": cap})

    @jax.jit
    def play(key):
        reset_key, key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def tick(carry, key):
            state, total, length, running = carry
            action_key, step_key = jax.random.split(key)
            action = jax.random.randint(action_key, (), 0, env.num_actions)
            _, state, reward, terminated, truncated, _ = env.step(step_key, state, action, params)
            total = total + jnp.where(running, reward, 0.0)
            length = length + running.astype(jnp.int32)
            running = running & ~(terminated | truncated)
            return (state, total, length, running), None

        init = (state, jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.ones((), bool))
        (_, total, length, running), _ = jax.lax.scan(tick, init, jax.random.split(key, cap))
        return total, length

    totals, lengths = jax.vmap(play)(jax.random.split(jax.random.PRNGKey(seed), episodes))
    return np.asarray(totals, np.float64), np.asarray(lengths, np.int64)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy.stats import ks_2samp

    def summary(x):
        return {"mean": float(x.mean()), "sem": float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0}

    return {"minatar": summary(a), "gymnax": summary(b), "ks_pvalue": float(ks_2samp(a, b).pvalue)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--cap", type=int, default=5000, help="episode cap in steps on both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    header = f"{'game':<15} {'minatar return':>16} {'gymnax return':>16} {'KS p':>7} {'minatar length':>16} {'gymnax length':>16} {'KS p':>7}"
    print(f"uniform random policy, sticky actions 0.1, {args.episodes} episodes per side, cap {args.cap} steps")
    print(header)
    for game in args.games.split(","):
        host_r, host_l = host_episodes(game, args.episodes, args.cap, args.seed)
        jax_r, jax_l = jax_episodes(game, args.episodes, args.cap, args.seed)
        row = {"game": game, "returns": compare(host_r, jax_r), "lengths": compare(host_l.astype(float), jax_l.astype(float))}
        rows.append(row)

        def cell(c, side):
            return f"{c[side]['mean']:8.2f} ± {c[side]['sem']:5.2f}"

        print(f"{game:<15} {cell(row['returns'], 'minatar'):>16} {cell(row['returns'], 'gymnax'):>16} {row['returns']['ks_pvalue']:>7.3f} "
              f"{cell(row['lengths'], 'minatar'):>16} {cell(row['lengths'], 'gymnax'):>16} {row['lengths']['ks_pvalue']:>7.3f}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "minatar_parity", "settings": vars(args), "results": rows}, f, indent=1)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
