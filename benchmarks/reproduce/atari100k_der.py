"""Reproduce Data-Efficient Rainbow on Atari 100k: Pong, Breakout, Boxing, Seaquest, Kangaroo.

Per game, one piece: DER (`der/atari100k.gin`: 10 iterations of 10k agent steps = 100k steps,
400k frames) for `--seeds` seeds (default 3) side by side in one process with the multi-seed host
runner (`--runner multi_seed`: batched acting, vmapped updates, one replay per seed), then a
final evaluation of each seed's trained agent, which is what the published scores measure.

Environment. DER plays with terminal-on-life-loss and no sticky actions. ale-py's vector
environment (`VectorAtariEnv`) has no life-loss mode in accumbens (it is built with
`episodic_life=False`), so the seeds' games are `AtariEnv`s in an `EnvironmentList` (stepped in
one thread); a lost life ends the agent's episode (no bootstrapping) and the game goes on, as in
Dopamine. The runner's training returns are therefore per *life*, not per game: they are logged
(`train_return`) but are not the score.

Score. After training, `--eval_episodes` full games per seed (Dopamine's atari_100k evaluation:
100 episodes, `MaxEpisodeEvalRunner`) are played greedily (epsilon_eval 0.001, noise off), a game
lasting across lives as in Dopamine's runner (the frame stack restarts at each lost life, as
Dopamine's agent begins a new episode there), capped at 27,000 agent steps. The per-seed mean game
score is human-normalised, (score - random) / (human - random), with the random and human scores
of `benchmarks/reference/atari100k.json`; the IQM over all (game, seed) runs gets a stratified
bootstrap interval (`python -m accumbens.plot reproduce ...` draws the figure).

Results: `benchmarks/results/reproduce_atari100k.json` (layout in repro_common.py, plus per piece
"eval_scores": [per seed], "eval_episodes": [per seed]). Resumable: training resumes from the
runner's checkpoints; a finished evaluation is not repeated.

Device command (16 cores, one H100; games in parallel processes sharing the GPU):

    python benchmarks/reproduce/atari100k_der.py --parallel 5 --eval_episodes 30 --deadline_s 570

Expected runtime: unmeasured. DER makes one update per agent step; the multi-seed runner's
measured DQN rate (an update every 4 steps, 3 seeds, Pong, H100: 697 agent steps/s in aggregate,
benchmarks/results/atari_throughput.json) suggests 3-6 ms per lock-step tick with an update every
tick, i.e. 5-10 minutes of training per game, plus the evaluation (about 1,000-2,000 steps per
game at this level; 30 games x 3 seeds ~ 1-2 minutes). Five games in parallel: roughly 10-15
minutes if they share the GPU well; with `--deadline_s 570` one command keeps what finished and
the same command run again resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as common  # noqa: E402

GAMES = ("Pong", "Breakout", "Boxing", "Seaquest", "Kangaroo")
AGENT = "der"
GIN_FILES = ("der/atari100k",)
RESULTS = os.path.join(common.RESULTS_DIR, "reproduce_atari100k.json")


def piece_bindings(game: str, args) -> list[str]:
    seeds = ", ".join(str(s) for s in range(args.first_seed, args.first_seed + args.seeds))
    bindings = [
        f"create_environment.name = 'atari:{game}'",
        f"MultiSeedRunner.seeds = ({seeds},)",
        "Runner.evaluation_steps = 0",  # the score is the full-game evaluation below
        "MultiSeedRunner.tensorboard = False",
    ]
    if args.iterations:
        bindings.append(f"Runner.num_iterations = {args.iterations}")
    if args.training_steps:
        bindings.append(f"Runner.training_steps = {args.training_steps}")
    return bindings + list(args.extra_bindings)


# ----- evaluation (runs in its own child process: `--evaluate_run`) -------------------------------
def evaluate_run(base_dir: str, gin_files, bindings, seeds, episodes: int, max_steps: int, deadline_s: float, parallel_envs: int) -> dict:
    """Plays `episodes` full games per seed with each seed's last checkpoint; returns
    {"eval_scores": [mean per seed], "eval_episodes": [count per seed], "eval_game_returns": [[...]]}."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from accumbens import train as train_cli
    from accumbens.agents.registry import create_agent
    from accumbens.environments import create_environment
    from accumbens.runners.checkpoints import CheckpointManager

    train_cli.parse_config(list(gin_files), list(bindings))
    start = time.monotonic()
    probe = create_environment(max_episode_steps=max_steps)
    num_actions = int(probe.action_space.n)
    shape, dtype = probe.observation_space.shape, probe.observation_space.dtype
    probe.close()
    agents = []
    for s in seeds:
        agent = create_agent(num_actions=num_actions, observation_shape=shape, observation_dtype=dtype, seed=s)
        manager = CheckpointManager(os.path.join(base_dir, f"seed_{s}", "checkpoints"))
        if manager.restore_latest(lambda path, manifest, a=agent: a.unbundle(path)) is None:
            raise RuntimeError(f"no checkpoint for seed {s} under {base_dir}")
        agents.append(agent)
    pure = agents[0].agent
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[a.state for a in agents])
    for a in agents:  # free the replays; only the parameters are needed
        a.replay = None
    act = jax.jit(jax.vmap(lambda st, obs, key: pure.act(st, obs, key, False)))

    envs_per_seed = max(1, min(parallel_envs, episodes))
    envs = [[create_environment(max_episode_steps=max_steps) for _ in range(envs_per_seed)] for _ in seeds]
    keys = {"key": jax.random.PRNGKey(12345)}

    def act_fn(stacks: np.ndarray) -> np.ndarray:
        keys["key"], *split = jax.random.split(keys["key"], len(seeds) + 1)
        return np.asarray(act(states, jnp.asarray(stacks), jnp.stack(split)))

    game_returns, complete = play_full_games(envs, act_fn, episodes, tuple(agents[0].stacked_shape), dtype,
                                             reset_seeds=[[10_000 + 1_000 * s + e for e in range(envs_per_seed)] for s in seeds],
                                             deadline_s=deadline_s - (time.monotonic() - start))
    return {
        "eval_scores": [float(np.mean(r)) if r else None for r in game_returns],
        "eval_episodes": [len(r) for r in game_returns],
        "eval_game_returns": game_returns,
        "eval_seconds": time.monotonic() - start,
        "eval_complete": complete,
    }


def play_full_games(envs, act_fn, episodes: int, stacked_shape, dtype, reset_seeds, deadline_s: float = float("inf")):
    """Plays `episodes` full games per seed on `envs` [seed][env] (AtariEnv in life-loss mode) with
    `act_fn(stacks [S, E, *stacked_shape]) -> actions [S, E]`, as Dopamine's runner evaluates:

      * a lost life (`terminated` while the game is not over) ends the agent's episode: the frame
        stack restarts from the current screen, and the game goes on (`env.reset()` continues it);
      * the game's return sums every life's rewards; a game over or the step cap (`truncated`) ends it;
      * each environment plays a fixed share of the episodes (no bias towards short games).

    Returns (per seed the list of game returns, whether every game finished before `deadline_s`).
    """
    import numpy as np

    start = time.monotonic()
    num_seeds, per_seed = len(envs), len(envs[0])
    stacks = np.zeros((num_seeds, per_seed) + tuple(stacked_shape), dtype)
    quota = np.array([[episodes // per_seed + (e < episodes % per_seed) for e in range(per_seed)] for _ in range(num_seeds)])
    running = np.zeros((num_seeds, per_seed))
    active = quota > 0
    game_returns: list[list[float]] = [[] for _ in range(num_seeds)]

    def push(i, e, observation, fresh):
        if fresh:
            stacks[i, e] = 0
        else:
            stacks[i, e, ..., :-1] = stacks[i, e, ..., 1:]
        stacks[i, e, ..., -1] = observation

    for i in range(num_seeds):
        for e in range(per_seed):
            observation, _ = envs[i][e].reset(seed=reset_seeds[i][e])
            push(i, e, observation, True)
    while active.any() and time.monotonic() - start <= deadline_s:
        actions = act_fn(stacks)
        for i in range(num_seeds):
            for e in range(per_seed):
                if not active[i, e]:
                    continue
                env = envs[i][e]
                observation, reward, terminated, truncated, _ = env.step(int(actions[i, e]))
                running[i, e] += reward
                if terminated and not truncated and not env.game_over:
                    observation, _ = env.reset()  # a life lost: the game goes on, the agent starts a new episode
                    push(i, e, observation, True)
                elif terminated or truncated:
                    game_returns[i].append(float(running[i, e]))
                    running[i, e] = 0.0
                    quota[i, e] -= 1
                    if quota[i, e] > 0:
                        observation, _ = env.reset(options={"full_reset": True})
                        push(i, e, observation, True)
                    else:
                        active[i, e] = False
                else:
                    push(i, e, observation, False)
    return game_returns, bool(not active.any())


def run_evaluation(piece_key: str, base_dir: str, game: str, args, bindings, timeout: float) -> dict:
    """Runs `evaluate_run` in a child process (so that this process never holds GPU memory)."""
    out = os.path.join(base_dir, "evaluation.json")
    command = [sys.executable, os.path.abspath(__file__), "--evaluate_run", base_dir, "--games", game,
               "--seeds", str(args.seeds), "--first_seed", str(args.first_seed), "--eval_episodes", str(args.eval_episodes),
               "--eval_envs", str(args.eval_envs), "--eval_max_steps", str(args.eval_max_steps), "--deadline_s", str(max(1.0, timeout - 60)), "--evaluation_out", out,
               "--extra_bindings", *bindings]
    if os.path.exists(out):
        os.remove(out)
    rc, timed_out, tail = common.run_child(command, timeout, os.path.join(base_dir, "reproduce.log"), echo=not args.quiet,
                                           prefix=f"{piece_key} eval ")
    if rc == 0 and os.path.exists(out):
        with open(out) as f:
            return json.load(f)
    return {"eval_error": f"evaluation exited with code {rc}{' (time limit)' if timed_out else ''}: {tail[-1500:]}"}


def normalised(score: float, game: str, reference: dict) -> float:
    r, h = reference["random"][game], reference["human"][game]
    return (score - r) / (h - r)


def run_game(game: str, args, results: dict, deadline: common.Deadline, device: str) -> None:
    key = f"{game}/{AGENT}"
    bindings = piece_bindings(game, args)
    iterations = args.iterations or 10
    steps = args.training_steps or 10_000
    meta = dict(game=game, agent=AGENT, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
                iterations_planned=iterations, steps_per_iteration=steps, frames_per_step=4,
                source="DER (van Hasselt et al. 2019) as in Dopamine's atari_100k lab (der/atari100k.gin)",
                device=device, environment="AtariEnv in an EnvironmentList (life-loss terminals, no sticky actions)")
    if deadline.expired(margin=60):
        common.record_unrun(results, args.results, key, meta | dict(runner="multi_seed"), "not_run", "deadline reached before this piece started")
        return
    base_dir = os.path.join(args.runs_dir, AGENT, game)
    extra_env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / max(1, args.parallel):.2f}"} if args.parallel > 1 else None
    previous = results["pieces"].get(key, {})
    piece = common.run_piece(results, args.results, key, meta, "multi_seed", base_dir, GIN_FILES, bindings,
                             timeout=deadline.remaining(), echo=not args.quiet, extra_env=extra_env)
    piece = dict(piece)
    if piece.get("iterations_done", 0) < iterations:  # training cut short (deadline) or failed: no evaluation yet
        return
    if (previous.get("eval_complete") and previous.get("eval_episodes_planned") == args.eval_episodes
            and previous.get("iterations_done") == piece["iterations_done"]):  # the same trained agents
        evaluation = {k: previous[k] for k in ("eval_scores", "eval_episodes", "eval_game_returns", "eval_seconds", "eval_complete")}
    elif deadline.expired(margin=60):
        evaluation = {"eval_error": "deadline reached before the evaluation"}
    else:
        evaluation = run_evaluation(key, base_dir, game, args, bindings, timeout=deadline.remaining())
    piece.pop("eval_error", None)
    piece.update(evaluation)
    piece["eval_episodes_planned"] = args.eval_episodes
    if "eval_error" in evaluation or not evaluation.get("eval_complete"):
        piece["status"] = "partial"
        piece["note"] = "trained; " + evaluation.get("eval_error", "evaluation cut by the deadline (fewer episodes than planned)")
    else:
        piece["status"], piece["note"] = "complete", ""
    with common._LOCK:
        results["pieces"][key] = piece
        common.save_results(args.results, results)


def print_table(results: dict, games) -> None:
    import numpy as np

    from accumbens.analysis import bootstrap_ci

    reference = common.load_reference("atari100k")
    published = reference["published"]["DER"]["scores"]
    print(f"\n{'game':<10} {'status':<9} {'seeds':>5} {'score [95% CI]':>28} {'HNS':>7} {'published DER':>14}")
    per_game = {}
    for game in games:
        piece = results["pieces"].get(f"{game}/{AGENT}")
        if piece is None:
            continue
        scores = [s for s in piece.get("eval_scores") or [] if s is not None]
        pub = published.get(game)
        pub_text = "-" if pub is None else f"{pub:.1f}"
        if scores:
            point, low, high = bootstrap_ci(np.asarray(scores))
            per_game[game] = np.asarray([normalised(s, game, reference) for s in scores])
            print(f"{game:<10} {piece['status']:<9} {len(scores):>5} {f'{point:.1f} [{low:.1f}, {high:.1f}]':>28} "
                  f"{per_game[game].mean():>7.3f} {pub_text:>14}")
        else:
            print(f"{game:<10} {piece['status']:<9} {0:>5} {'-':>28} {'-':>7} {pub_text:>14}")
    if per_game:
        from accumbens.aggregate import stratified_bootstrap_ci

        point, low, high = stratified_bootstrap_ci([per_game[g] for g in sorted(per_game)])
        print(f"IQM of human-normalised scores over {len(per_game)} game(s): {point:.3f} [{low:.3f}, {high:.3f}] "
              "(95% stratified bootstrap)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", default="all", help=f"comma-separated, from {', '.join(GAMES)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="default 10 (der/atari100k.gin)")
    parser.add_argument("--training_steps", type=int, default=None, help="agent steps per iteration, default 10k")
    parser.add_argument("--eval_episodes", type=int, default=100, help="full games per seed (Dopamine: 100)")
    parser.add_argument("--eval_envs", type=int, default=10, help="games played at once per seed in the evaluation")
    parser.add_argument("--eval_max_steps", type=int, default=27_000, help="agent steps cap per evaluation game (Dopamine: 27,000)")
    parser.add_argument("--parallel", type=int, default=1, help="games trained at once (child processes sharing the GPU)")
    parser.add_argument("--deadline_s", type=float, default=None)
    parser.add_argument("--runs_dir", default=os.path.join(common.REPO, "runs", "reproduce", "atari100k"))
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--extra_bindings", nargs="*", default=[])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--evaluate_run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--evaluation_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    games = common.parse_list(args.games, GAMES, "game")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    if args.evaluate_run:  # child mode: `extra_bindings` carries the piece's full bindings
        evaluation = evaluate_run(args.evaluate_run, GIN_FILES, args.extra_bindings, seeds, args.eval_episodes,
                                  args.eval_max_steps, args.deadline_s or float("inf"), args.eval_envs)
        with open(args.evaluation_out, "w") as f:
            json.dump(evaluation, f)
        return 0

    deadline = common.Deadline(args.deadline_s)
    device = common.device_description()
    results = common.load_results(args.results, "atari100k_der", "Atari 100k: Data-Efficient Rainbow, human-normalised scores and IQM")
    results["command"] = " ".join(["python", "benchmarks/reproduce/atari100k_der.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"[reproduce] atari100k_der on {device}: {len(games)} game(s), {args.seeds} seeds each, {args.parallel} at once", flush=True)
    jobs = [lambda g=g: run_game(g, args, results, deadline, device) for g in games]
    common.run_parallel(jobs, args.parallel)
    print_table(results, games)
    print(f"[reproduce] results: {os.path.relpath(args.results, common.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
