"""`python -m accumbens.build_datasets` at a tiny size: exact sizes, behaviour probabilities that
match the epsilon-greedy formula and the trained DQN's greedy actions, resumable, readable."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from accumbens import build_datasets
from accumbens.replay.dataset import FixedReplayBuffer, load_dataset, read_manifest

TINY_DQN = ["DQNAgent.min_replay_history = 150", "MinAtarCNN.hidden_units = (32,)", "Runner.evaluation_steps = 50"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("datasets")
    argv = ["--output_dir", str(out), "--games", "breakout", "--epsilons", "0", "0.5", "--random",
            "--num_steps", "200", "--num_envs", "4", "--train_frames", "200", "--gin_bindings", *TINY_DQN, "--no-progress_bar"]
    assert build_datasets.main(argv) == 0
    return out, argv


def test_sizes_probabilities_and_metadata(built):
    out, _ = built
    num_actions = 6  # MinAtar breakout's action set
    for name, epsilon in (("eps_0", 0.0), ("eps_0.5", 0.5), ("random", 1.0)):
        manifest = read_manifest(str(out / "breakout" / name))
        assert manifest["num_steps"] == 200 and not manifest["open_episode"]
        meta = manifest["metadata"]
        assert meta["epsilon"] == epsilon and meta["env"] == "minatar:breakout"
        data = load_dataset(str(out / "breakout" / name))
        steps = ~data["is_final"]
        probability = data["behaviour_probability"][steps]
        if name == "random":
            np.testing.assert_allclose(probability, 1 / num_actions, rtol=1e-6)
        else:
            greedy, other = epsilon / num_actions + 1 - epsilon, epsilon / num_actions
            assert np.all(np.isclose(probability, greedy) | np.isclose(probability, other))
        np.testing.assert_array_equal(data["epsilon"][steps], epsilon)
        assert data["truncated"][steps][-1] or data["terminated"][steps][-1]  # the cut last episode ends
    # The random policy's actions are spread over all 6 actions.
    random_actions = load_dataset(str(out / "breakout" / "random"))["action"]
    assert len(np.unique(random_actions)) == num_actions


def test_greedy_dataset_follows_the_trained_dqn(built):
    """eps = 0: every recorded action is the argmax of the behaviour DQN's Q-values (its checkpoint)."""
    out, _ = built
    from accumbens import train
    from accumbens.runners.runner import Runner

    train.parse_config(["dqn/minatar"], ["create_environment.name = 'minatar:breakout'", "Runner.num_iterations = 1",
                                         "Runner.training_steps = 200", "Runner.evaluation_steps = 2000", "Runner.seed = 0",
                                         *TINY_DQN])
    runner = Runner(base_dir=str(out / "breakout" / "dqn"), tensorboard=False, progress_bar=False)
    assert runner._restore() == 1  # the build's checkpoint
    q = build_datasets.make_q_function(runner)
    data = load_dataset(str(out / "breakout" / "eps_0"))
    steps = ~data["is_final"]
    q_values = np.asarray(q(jnp.asarray(data["observation"][steps][..., None])))
    np.testing.assert_array_equal(data["action"][steps], q_values.argmax(-1))
    np.testing.assert_allclose(data["behaviour_probability"][steps], 1.0)


def test_rerun_skips_complete_datasets_and_replays(built, capsys):
    out, argv = built
    before = (out / "breakout" / "eps_0.5" / "manifest.json").read_text()
    assert build_datasets.main(argv) == 0
    assert "(already built)" in capsys.readouterr().out
    assert (out / "breakout" / "eps_0.5" / "manifest.json").read_text() == before
    fixed = FixedReplayBuffer(str(out / "breakout" / "eps_0.5"), max_steps=100)
    assert len(fixed) == 100
    with pytest.raises(ValueError, match="epsilons"):
        build_datasets.build(str(out), ["breakout"], [1.5], 10, 10)
