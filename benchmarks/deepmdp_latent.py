"""DeepMDP's latent-structure check on DonutWorld: does phi(s) recover the true 2-D position?

Gelada et al. (2019) show that a DeepMDP trained on a synthetic world whose low-dimensional state
is rendered into images recovers that state in its latent space. Here: DonutWorld
(`accumbens.environments.donut`, 32x32 images of a blob on a donut-shaped track, reward =
clockwise angular progress), transitions from uniformly drawn positions and random actions, and
the DeepMDP agent's own pure update (`accumbens.agents.deepmdp.make_deepmdp`, C51 base) trained
offline on them. The encoder is the same in every condition: an MLP torso 1024 -> 256 -> 32
(ReLU), whose 32 outputs are the latent. Conditions (each for `--seeds` seeds):

  untrained        the encoder at initialisation (no loss at all)
  c51              C51's TD loss alone (auxiliary losses off: exactly C51's update)
  aux_only         the DeepMDP losses alone (value_loss_weight = 0): reward + transition + penalty
  c51+aux          both
  reward_only      the reward loss alone (ablation: no transition model)

Probe: a linear least-squares map (with intercept) from the latent of 2000 held-out positions to
(x, y), fitted on 1000 and scored on the other 1000: R^2 = 1 - SSE / SST pooled over x and y.
The issue's goal: R^2 >= 0.9 with the auxiliary losses alone, and the same encoder without the
losses short of that.

    python benchmarks/deepmdp_latent.py                     # about 30 minutes on 2 busy CPU cores
    python benchmarks/deepmdp_latent.py --steps 300 --seeds 1 --output /tmp/x.json   # smoke test

Writes benchmarks/results/deepmdp_latent.json and deepmdp_latent.png (the latents' first two
principal components coloured by the true angle, per condition).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from accumbens.agents import deepmdp, dqn, networks, rainbow
from accumbens.environments import donut
from accumbens.replay.batch import Batch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CONDITIONS = {
    "untrained": None,
    "c51": dict(auxiliary_losses=False),
    "aux_only": dict(value_loss_weight=0.0),
    "c51+aux": dict(),
    "reward_only": dict(value_loss_weight=0.0, transition_loss_weight=0.0),
}


def build_agent(condition: dict, latent_dim: int, learning_rate: float, losses: dict):
    torso = networks.MLP(hidden_units=(256, latent_dim), observation_ndim=2)
    network = networks.RainbowNetwork(torso=torso, num_actions=donut.NUM_ACTIONS, num_atoms=51, vmax=10.0)
    optimizer = dqn.create_optimizer("adam", learning_rate=learning_rate, eps=1.5e-4)
    schedule = dict(target_update_period=100, update_period=1)
    base = rainbow.make_rainbow(network, optimizer, epsilon_warmup_steps=0, **schedule)
    kwargs = {**losses, **condition}
    agent = deepmdp.make_deepmdp(
        network,
        base,
        deepmdp.c51_value_loss(network),
        optimizer,
        num_actions=donut.NUM_ACTIONS,
        reward_model=deepmdp.RewardModel(donut.NUM_ACTIONS, hidden_units=()),
        transition_model=deepmdp.TransitionModel(donut.NUM_ACTIONS, kind="dense", hidden_units=(64,)),
        **schedule,
        **kwargs,
    )
    return network, agent


def make_batch(rng: np.random.Generator, size: int, gamma: float = 0.99) -> Batch:
    position = donut.sample_states(rng, size)
    action = rng.integers(0, donut.NUM_ACTIONS, size)
    next_position, reward = donut.step(position, action)
    return Batch(
        observation=donut.render(position)[..., None],
        action=action.astype(np.int32),
        reward=reward.astype(np.float32),
        next_observation=donut.render(next_position)[..., None],
        discount=np.full(size, gamma, np.float32),
        weight=np.ones(size, np.float32),
        index=np.arange(size),
    )


def probe_r2(latent: np.ndarray, target: np.ndarray, fit: int) -> float:
    """Held-out R^2 of a least-squares linear map (with intercept) from latent to target, pooled."""
    design = np.concatenate([latent, np.ones((latent.shape[0], 1))], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design[:fit], target[:fit], rcond=None)
    residual = target[fit:] - design[fit:] @ coef
    centred = target[fit:] - target[fit:].mean(axis=0)
    return float(1.0 - np.sum(residual**2) / np.sum(centred**2))


def run_condition(name: str, seed: int, args, probe_positions: np.ndarray) -> dict:
    condition = CONDITIONS[name]
    losses = dict(transition_target=args.transition_target, transition_distance=args.transition_distance)
    network, agent = build_agent(condition or {}, args.latent_dim, args.learning_rate, losses)
    state = agent.init(jax.random.PRNGKey(seed), (32, 32, 1), donut.NUM_ACTIONS)
    rng = np.random.default_rng(1000 + seed)
    update = jax.jit(agent.update)
    last = {}
    start = time.perf_counter()
    steps = 0 if condition is None else args.steps
    for i in range(steps):
        state = state.replace(env_steps=jnp.asarray(i, jnp.int32))
        state, metrics = update(state, make_batch(rng, args.batch_size), jax.random.PRNGKey(seed * 1_000_003 + i))
        if i == steps - 1:
            last = {k: float(v) for k, v in metrics.items() if k != "priorities"}
    seconds = time.perf_counter() - start
    images = donut.render(probe_positions)[..., None]
    latent = np.asarray(network.apply(state.params["network"], images, method=deepmdp._torso))
    r2 = probe_r2(latent, probe_positions, fit=len(probe_positions) // 2)
    return {"condition": name, "seed": seed, "r2": r2, "train_seconds": seconds, "final_metrics": last,
            "active_units": int(np.sum(latent.std(axis=0) > 1e-6)), "_latent": latent}


def plot(latents: dict, positions: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angle = np.arctan2(positions[:, 1], positions[:, 0])
    radius = np.linalg.norm(positions, axis=1)
    fig, axes = plt.subplots(1, len(latents) + 1, figsize=(3.2 * (len(latents) + 1), 3.2))
    axes[0].scatter(positions[:, 0], positions[:, 1], c=angle, s=3 + 6 * (radius - 0.5), cmap="hsv")
    axes[0].set_title("true state (x, y)")
    for ax, (name, (latent, r2)) in zip(axes[1:], latents.items()):
        centred = latent - latent.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = centred @ vt[:2].T
        ax.scatter(pcs[:, 0], pcs[:, 1], c=angle, s=3 + 6 * (radius - 0.5), cmap="hsv")
        ax.set_title(f"{name}: probe R² {r2:.2f}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("DonutWorld latents (first two principal components), colour = true angle, size = radius")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="gradient steps per trained condition")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--latent_dim", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--transition_target", default="online_stop_gradient", choices=deepmdp.TRANSITION_TARGETS)
    parser.add_argument("--transition_distance", default="l2", choices=deepmdp.TRANSITION_DISTANCES)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    parser.add_argument("--output", default=os.path.join(RESULTS, "deepmdp_latent.json"))
    args = parser.parse_args()

    probe_positions = donut.sample_states(np.random.default_rng(12345), 2000)
    runs, latents = [], {}
    for name in args.conditions:
        for seed in range(args.seeds):
            result = run_condition(name, seed, args, probe_positions)
            latent = result.pop("_latent")
            if seed == 0:
                latents[name] = (latent, result["r2"])
            runs.append(result)
            print(f"{name:12s} seed {seed}: R^2 {result['r2']:.3f}  ({result['train_seconds']:.0f} s, "
                  f"{result['active_units']}/{args.latent_dim} active units)", flush=True)

    summary = {}
    for name in args.conditions:
        r2 = np.array([r["r2"] for r in runs if r["condition"] == name])
        summary[name] = {"r2_mean": float(r2.mean()), "r2_min": float(r2.min()), "r2_max": float(r2.max()), "seeds": len(r2)}
    print("\n| condition | R^2 mean | min | max | seeds |\n|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['r2_mean']:.3f} | {s['r2_min']:.3f} | {s['r2_max']:.3f} | {s['seeds']} |")
    goal = {
        "aux_only_reaches_0.9": summary.get("aux_only", {}).get("r2_min", float("nan")) >= 0.9,
        "untrained_below_0.9": summary.get("untrained", {}).get("r2_max", float("nan")) < 0.9,
        "c51_only_below_0.9": summary.get("c51", {}).get("r2_max", float("nan")) < 0.9,
    }
    print("goal:", goal)
    out = {
        "benchmark": "deepmdp_latent",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "jax": jax.__version__,
        "device": f"{jax.devices()[0].platform} {jax.devices()[0].device_kind}",
        "python": platform.python_version(),
        "args": vars(args),
        "summary": summary,
        "goal": goal,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    plot(latents, probe_positions, os.path.splitext(args.output)[0] + ".png")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
