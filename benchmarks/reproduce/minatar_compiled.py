"""Reproduce the published MinAtar baselines with the compiled runner (gymnax MinAtar, GPU).

Three agent settings on the five games, every (game, agent) piece one compiled program of
`--seeds` seeds (default 5), trained through `python -m accumbens.train --runner compiled`:

  dqn_minatar_paper   DQN with the MinAtar paper's settings (Young & Tian 2019; dqn/minatar.gin):
                      5M frames = 50 iterations of 100k agent steps (MinAtar has no frame skip).
  dqn_revisiting      DQN with Revisiting Rainbow's MinAtar settings (Obando-Ceron & Castro 2021,
                      github.com/JohanSamir/revisiting_rainbow Configs/dqn_<game>.gin): Adam
                      (lr 2.5e-4, eps 3.125e-4), Huber loss, uniform replay of 100k, 1000 warm-up
                      steps, an update every 4 steps, target sync every 1000, Dopamine's epsilon
                      (1 -> 0.01 over 250k steps, 0.001 in evaluation), one 3x3x16 'SAME' conv and no
                      hidden layer; 10 iterations of 1M steps (10M frames).
  rainbow_revisiting  Their Rainbow (rainbow/minatar.gin): 10 iterations of 1M steps, with the
                      compiled runner's device prioritized replay (accumbens/replay/
                      device_prioritized.py). Where the compiled runner cannot run prioritized agents
                      the piece is recorded as 'unsupported' with that reason, never run with uniform
                      replay.

The published numbers are training returns, so the comparison uses each iteration's mean
training episode return (`train_return`); a short greedy evaluation phase (`--evaluation_steps`
over 10 environments) is logged as an extra. Differences from the papers' setups are listed in
`benchmarks/reference/minatar.json` ("our_setup") and in docs of the compiled runner: gymnax's
games with the minatar package's sticky actions (0.1) and Freeway cap (see
benchmarks/minatar_parity.py), fixed-length phases.

Results: `benchmarks/results/reproduce_minatar.json` (rewritten after every piece; layout in
benchmarks/reproduce/common.py), run directories under `--runs_dir`. Re-running the same
command resumes every unfinished piece from its last checkpoint; `--deadline_s` stops the
current piece when the time is up (finished iterations are kept) and skips the rest.

Device command (one H100; `MinAtarCNN.conv_impl = 'patches'` is bound automatically on a GPU;
the five games run as five processes sharing the GPU):

    python benchmarks/reproduce/minatar_compiled.py --agents dqn_minatar_paper --iterations 10 --parallel 5 --deadline_s 570

Expected runtime, extrapolated from measured rates (not measured for this script): the compiled DQN
ran 2,927 env steps/s per seed at 8 seeds with nn.Conv and 2,426/s per seed at 64 seeds with
'patches' (benchmarks/results/compiled_throughput*.json, one update per step). At 5 seeds, taking
~3,000 steps/s per seed, the paper's 5M frames take ~28 min per game, which does not fit one
10-minute command: the command above trains 1M frames per game (~5-6 min per game alone; with 5
games in parallel between ~6 and ~30 min depending on how well the GPU overlaps the processes).
The comparison then uses the paper's curve at the same frame count (digitised from its figure,
benchmarks/reference/minatar.json). A cut-short run resumes with the same command, and
`--iterations` may be raised later to extend finished pieces.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as common  # noqa: E402

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
RESULTS = os.path.join(common.RESULTS_DIR, "reproduce_minatar.json")

# Revisiting Rainbow's DQN on MinAtar (revisiting_rainbow/Configs/dqn_<game>.gin and Dopamine's
# JaxDQNAgent defaults they inherit), on top of dqn/minatar.gin.
REVISITING_DQN_BINDINGS = (
    "create_optimizer.name = 'adam'",
    "create_optimizer.learning_rate = 0.00025",
    "create_optimizer.eps = 0.0003125",
    "DQNAgent.loss_type = 'huber'",
    "DQNAgent.min_replay_history = 1000",
    "DQNAgent.update_period = 4",
    "DQNAgent.target_update_period = 1000",
    "DQNAgent.epsilon_train = 0.01",
    "DQNAgent.epsilon_eval = 0.001",
    "DQNAgent.epsilon_decay_period = 250000",
    "MinAtarCNN.hidden_units = ()",
    "MinAtarCNN.padding = 'SAME'",
    "ReplayBuffer.capacity = 100000",
    "Runner.max_steps_per_episode = 100000000",
)

AGENTS = {
    "dqn_minatar_paper": dict(
        gin_files=("dqn/minatar",), bindings=(), iterations=50, steps=100_000, prioritized=False,
        source="Young & Tian 2019 (MinAtar paper), 5M frames",
    ),
    "dqn_revisiting": dict(
        gin_files=("dqn/minatar",), bindings=REVISITING_DQN_BINDINGS, iterations=10, steps=1_000_000, prioritized=False,
        source="Obando-Ceron & Castro 2021 (Revisiting Rainbow), 10M frames",
    ),
    "rainbow_revisiting": dict(
        gin_files=("rainbow/minatar",), bindings=(), iterations=10, steps=1_000_000, prioritized=True,
        source="Obando-Ceron & Castro 2021 (Revisiting Rainbow), 10M frames",
    ),
}


def compiled_supports_prioritized() -> tuple[bool, str]:
    """Whether the compiled runner can run a prioritized-replay agent, and why not."""
    if importlib.util.find_spec("accumbens.replay.device_prioritized") is None:
        return False, ("Rainbow needs prioritized replay in the compiled runner "
                       "(accumbens/replay/device_prioritized.py, issue 7), which is not available yet; "
                       "not run (running it with uniform replay would change the algorithm)")
    from accumbens.runners import compiled

    if "supports uniform replay only" in inspect.getsource(compiled):
        return False, ("accumbens/replay/device_prioritized.py exists but the compiled runner still refuses "
                       "prioritized agents; not run")
    return True, ""


def piece_bindings(agent: str, game: str, args, conv_impl: str) -> tuple[list[str], int, int]:
    spec = AGENTS[agent]
    iterations = args.iterations or spec["iterations"]
    steps = args.training_steps or spec["steps"]
    bindings = list(spec["bindings"]) + [
        f"create_environment.name = 'minatar:{game}'",
        f"CompiledRunner.num_seeds = {args.seeds}",
        f"Runner.seed = {args.first_seed}",
        f"Runner.num_iterations = {iterations}",
        f"Runner.training_steps = {steps}",
        f"Runner.evaluation_steps = {args.evaluation_steps}",
        f"CompiledRunner.num_eval_envs = {args.eval_envs}",
        f"MinAtarCNN.conv_impl = '{conv_impl}'",
        "CompiledRunner.tensorboard = False",
    ] + list(args.extra_bindings)
    return bindings, iterations, steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", default="all", help=f"comma-separated, from {', '.join(GAMES)}")
    parser.add_argument("--agents", default="all", help=f"comma-separated, from {', '.join(AGENTS)}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per piece, one compiled program")
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None, help="iterations per piece (default: the paper's)")
    parser.add_argument("--training_steps", type=int, default=None, help="agent steps per iteration (default: the paper's)")
    parser.add_argument("--evaluation_steps", type=int, default=30_000, help="greedy evaluation steps per iteration over --eval_envs environments (an extra; Freeway episodes are 2,500 steps)")
    parser.add_argument("--eval_envs", type=int, default=10)
    parser.add_argument("--conv_impl", choices=("auto", "patches", "xla"), default="auto", help="auto: patches on a GPU")
    parser.add_argument("--parallel", type=int, default=1, help="pieces trained at once (child processes sharing the GPU)")
    parser.add_argument("--deadline_s", type=float, default=None, help="stop (keeping what finished) after this many seconds")
    parser.add_argument("--runs_dir", default=os.path.join(common.REPO, "runs", "reproduce", "minatar"))
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--extra_bindings", nargs="*", default=[], help="more gin bindings for every piece (tests)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the training output")
    args = parser.parse_args(argv)
    games = common.parse_list(args.games, GAMES, "game")
    agents = common.parse_list(args.agents, AGENTS, "agent")
    if args.seeds < 1 or args.parallel < 1:
        raise SystemExit("--seeds and --parallel must be >= 1")

    deadline = common.Deadline(args.deadline_s)
    device = common.device_description()
    conv_impl = args.conv_impl if args.conv_impl != "auto" else ("patches" if common.has_gpu() else "xla")
    results = common.load_results(args.results, "minatar_compiled", "MinAtar: DQN (MinAtar paper) and DQN/Rainbow (Revisiting Rainbow) with the compiled runner")
    results["command"] = " ".join(["python", "benchmarks/reproduce/minatar_compiled.py", *(argv if argv is not None else sys.argv[1:])])
    prioritized_ok, prioritized_why = compiled_supports_prioritized()
    print(f"[reproduce] minatar_compiled on {device}: {len(agents)} agent(s) x {len(games)} game(s), "
          f"{args.seeds} seeds each, conv_impl={conv_impl}", flush=True)

    def run_one(agent: str, game: str) -> None:
        key = f"{game}/{agent}"
        bindings, iterations, steps = piece_bindings(agent, game, args, conv_impl)
        meta = dict(game=game, agent=agent, seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
                    iterations_planned=iterations, steps_per_iteration=steps, frames_per_step=1,
                    source=AGENTS[agent]["source"], device=device, conv_impl=conv_impl)
        if AGENTS[agent]["prioritized"] and not prioritized_ok:
            print(f"[reproduce] {key}: {prioritized_why}", flush=True)
            common.record_unrun(results, args.results, key, meta | dict(runner="compiled", gin_files=list(AGENTS[agent]["gin_files"]),
                                gin_bindings=bindings), "unsupported", prioritized_why)
            return
        if deadline.expired(margin=30):
            common.record_unrun(results, args.results, key, meta | dict(runner="compiled"), "not_run", "deadline reached before this piece started")
            return
        base_dir = os.path.join(args.runs_dir, agent, game)
        print(f"\n[reproduce] {key}: {iterations} x {steps} steps, {args.seeds} seeds -> {base_dir}", flush=True)
        extra_env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / args.parallel:.2f}"} if args.parallel > 1 else None
        piece = common.run_piece(results, args.results, key, meta, "compiled", base_dir, AGENTS[agent]["gin_files"],
                                 bindings, timeout=deadline.remaining(), echo=not args.quiet, extra_env=extra_env)
        final = common.final_values(piece)
        mean = sum(final) / len(final) if final else float("nan")
        print(f"[reproduce] {key}: {piece['status']}, {piece['iterations_done']}/{iterations} iterations, "
              f"final training return {mean:.2f} over {len(final)} seeds", flush=True)

    pieces = [(agent, game) for agent in agents for game in games]  # agent-major: whole game sets first
    if args.parallel > 1:
        common.run_parallel([lambda a=a, g=g: run_one(a, g) for a, g in pieces], args.parallel)
    else:
        for agent, game in common.progress(pieces, desc="pieces", unit="piece"):
            run_one(agent, game)

    print_table(results, agents, games)
    print(f"[reproduce] results: {os.path.relpath(args.results, common.REPO)}")
    return 0


def print_table(results: dict, agents, games) -> None:
    """Final training return per (game, agent): mean [95% bootstrap CI] over seeds, and status."""
    from accumbens.analysis import bootstrap_ci

    print(f"\n{'game':<15} {'agent':<20} {'status':<11} {'iters':>7} {'final train return [95% CI]':>30}")
    for agent in agents:
        for game in games:
            piece = results["pieces"].get(f"{game}/{agent}")
            if piece is None:
                continue
            final = common.final_values(piece)
            text = "-"
            if final:
                point, low, high = bootstrap_ci(final)
                text = f"{point:.2f} [{low:.2f}, {high:.2f}]"
            iters = f"{piece.get('iterations_done', 0)}/{piece.get('iterations_planned', '?')}"
            print(f"{game:<15} {agent:<20} {piece['status']:<11} {iters:>7} {text:>30}")


if __name__ == "__main__":
    sys.exit(main())
