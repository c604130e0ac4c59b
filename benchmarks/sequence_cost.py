"""Cost of the sequence agent against context length: power attention vs softmax (issue 6).

For each context length L (64 .. 4096) and each attention ("power", "softmax", equal parameters):
  acting   steps/s of the recurrent acting path (encoder step + Q head + greedy action) for a
           batch of `--act_batch` environments, `--act_steps` steps in one `lax.scan`, starting
           from a carry that has already seen L steps of the episode. Power attention's carry is
           a fixed-size state, so its cost must not depend on L; softmax attends over a cache of
           the last L steps, so its cost grows with L.
  update   SequenceDQN updates/s (forward online + target, backward, Adam) on a batch of
           `--update_batch` sequences of L steps: chunked power attention is linear in L,
           softmax quadratic (and may run out of memory at the longest contexts: reported).
The encoder and torso are flicker_minatar.gin's (MinAtar conv per step, 2 blocks of 4 heads x 16).
Writes benchmarks/results/sequence_cost.json and sequence_cost.png.

  python benchmarks/sequence_cost.py                                     # GPU, full sweep
  python benchmarks/sequence_cost.py --tiny --out_name sequence_cost_cpu_tiny   # CPU check
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from accumbens.agents.networks import MinAtarCNN
from accumbens.agents.sequence_dqn import SequenceQNetwork, make_sequence_dqn
from accumbens.replay import SequenceBatch
from accumbens.sequence.encoder import PowerAttentionEncoder

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OBS_SHAPE = (10, 10, 4)
NUM_ACTIONS = 6


def network_for(attention: str, context: int, chunk_size: int) -> SequenceQNetwork:
    encoder = PowerAttentionEncoder(
        torso=MinAtarCNN(), num_layers=2, num_heads=4, head_dim=16, chunk_size=chunk_size,
        attention=attention, context_length=context,
    )
    return SequenceQNetwork(encoder=encoder, num_actions=NUM_ACTIONS)


def timed(fn, *args, repeats: int) -> float:
    """Median seconds of `fn(*args)` (compiled first, outputs blocked on)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def acting_rate(network, params, context: int, batch: int, steps: int, repeats: int) -> float:
    """Acting steps/s (environment steps, summed over the batch) after `context` steps of history."""
    rng = np.random.default_rng(0)

    def run(carry, observations):
        def body(carry, observation):
            carry, q = network.apply(params, carry, observation, method=network.step)
            return carry, jnp.argmax(q, axis=-1)

        return jax.lax.scan(body, carry, observations)

    run = jax.jit(run)
    history = jnp.asarray(rng.integers(0, 2, size=(context, batch, *OBS_SHAPE)), jnp.uint8)
    carry, _ = run(network.initial_carry(batch), history)  # the episode so far: `context` steps
    observations = jnp.asarray(rng.integers(0, 2, size=(steps, batch, *OBS_SHAPE)), jnp.uint8)
    return batch * steps / timed(run, carry, observations, repeats=repeats)


def update_rate(network, context: int, batch: int, repeats: int) -> float:
    agent = make_sequence_dqn(network, optax.adam(1e-4), target_update_period=1000, update_period=1)
    state = jax.jit(agent.init, static_argnums=(1, 2))(jax.random.PRNGKey(0), OBS_SHAPE, NUM_ACTIONS)
    rng = np.random.default_rng(1)
    mask = np.ones((batch, context), bool)
    mask[:, : context // 4] = False  # a quarter of each sequence before its episode start
    sequence = SequenceBatch(
        observation=jnp.asarray(rng.integers(0, 2, size=(batch, context, *OBS_SHAPE)), jnp.uint8),
        action=jnp.zeros(batch, jnp.int32),
        reward=jnp.ones(batch, jnp.float32),
        next_observation=jnp.asarray(rng.integers(0, 2, size=(batch, context, *OBS_SHAPE)), jnp.uint8),
        discount=jnp.full(batch, 0.99, jnp.float32),
        weight=jnp.ones(batch, jnp.float32),
        index=jnp.arange(batch),
        mask=jnp.asarray(mask),
        next_mask=jnp.asarray(mask),
    )
    update = jax.jit(agent.update)
    key = jax.random.PRNGKey(2)
    return 1.0 / timed(lambda s, b: update(s, b, key)[1]["loss"], state, sequence, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default="64,256,1024,4096")
    parser.add_argument("--act_batch", type=int, default=16)
    parser.add_argument("--act_steps", type=int, default=256)
    parser.add_argument("--update_batch", type=int, default=16)
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="contexts 16, 32, 64 and small batches (CPU check)")
    parser.add_argument("--out_name", default="sequence_cost")
    parser.add_argument("--max_minutes", type=float, default=7.0, help="stop the sweep (keeping what was measured) after this")
    args = parser.parse_args()
    if args.tiny:
        args.contexts, args.act_batch, args.act_steps, args.update_batch, args.chunk_size, args.repeats = "16,32,64", 2, 16, 2, 16, 2
    contexts = [int(c) for c in args.contexts.split(",")]
    device = jax.devices()[0].device_kind if jax.default_backend() != "cpu" else "cpu"
    rows = []
    print(f"device: {device}")
    print(f"{'attention':9s} {'context':>7s} {'act steps/s':>12s} {'updates/s':>10s}")
    params_by_attention = {}
    start = time.time()
    # Interleaved (power, softmax) per context, so a sweep cut short by --max_minutes still compares both.
    for context, attention in [(c, a) for c in contexts for a in ("power", "softmax")]:
        if time.time() - start > args.max_minutes * 60:
            print(f"stopping: --max_minutes {args.max_minutes} reached before context {context}")
            break
        network = network_for(attention, context, args.chunk_size)
        if attention not in params_by_attention:  # the same parameters for every context
            dummy = {"observation": jnp.zeros((1, 1, *OBS_SHAPE), jnp.uint8), "mask": jnp.ones((1, 1), bool)}
            params_by_attention[attention] = jax.jit(network.init)(jax.random.PRNGKey(0), dummy)
        params = params_by_attention[attention]
        row = {"attention": attention, "context": context}
        for name, measure in (
            ("act_steps_per_second", lambda: acting_rate(network, params, context, args.act_batch, args.act_steps, args.repeats)),
            ("updates_per_second", lambda: update_rate(network, context, args.update_batch, args.repeats)),
        ):
            try:
                row[name] = measure()
            except Exception as error:  # out of memory at long softmax contexts: record, go on
                row[name] = None
                row[f"{name}_error"] = f"{type(error).__name__}: {str(error)[:200]}"
        rows.append(row)
        fmt = lambda v: f"{v:.1f}" if v is not None else "failed"
        print(f"{attention:9s} {context:7d} {fmt(row['act_steps_per_second']):>12s} {fmt(row['updates_per_second']):>10s}", flush=True)
    parameters = {a: int(sum(x.size for x in jax.tree.leaves(p))) for a, p in params_by_attention.items()}
    os.makedirs(RESULTS, exist_ok=True)
    payload = {"benchmark": "sequence_cost", "device": device, "settings": vars(args), "parameters": parameters,
               "wall_seconds": time.time() - start, "rows": rows}
    with open(os.path.join(RESULTS, f"{args.out_name}.json"), "w") as f:
        json.dump(payload, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "act_steps_per_second", f"acting (batch {args.act_batch}, recurrent)"),
                           (axes[1], "updates_per_second", f"updates (batch {args.update_batch} sequences)")):
        for attention, colour in (("power", "tab:blue"), ("softmax", "tab:red")):
            points = [(r["context"], r[key]) for r in rows if r["attention"] == attention and r[key] is not None]
            if points:
                ax.plot(*zip(*points), "o-", color=colour, label=attention)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length")
        ax.set_ylabel(key.replace("_", " "))
        ax.set_title(f"{title}, {device}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"{args.out_name}.png"), dpi=100)
    print(f"wrote {os.path.join(RESULTS, args.out_name)}.json/.png")


if __name__ == "__main__":
    main()
