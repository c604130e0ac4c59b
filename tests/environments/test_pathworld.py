"""Pathworld: the path graph, hazard-free episodes, the factory, and Monte Carlo returns under the
hazard priors against their closed forms (r / (1 + k d) for the exponential prior, r e^(-lambda d)
for a fixed hazard)."""
import numpy as np
import pytest

from accumbens.environments import create_environment, pathworld


def _run(env, path, rng_seed):
    """One episode that picks `path`; returns (return, length, died)."""
    env.reset(seed=rng_seed)
    total, length, terminated, truncated, info = 0.0, 0, False, False, {}
    action = path
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        length += 1
        action = 0  # actions on a path do not matter
    return total, length, info.get("died", False)


def test_hazard_free_episodes_pay_each_path_after_its_delay():
    env = pathworld.PathworldEnv(delays=(1, 3, 5), rewards=(1.0, 2.0, 3.0), hazard_prior="none")
    assert env.num_states == 1 + 1 + 3 + 5 and env.action_space.n == 3
    observation, info = env.reset(seed=0)
    np.testing.assert_array_equal(observation, np.eye(env.num_states, dtype=np.float32)[0])
    assert info["hazard"] == 0.0
    for path, (delay, reward) in enumerate(zip(env.delays, env.rewards)):
        env.reset(seed=path)
        seen = []
        for step in range(delay + 1):
            observation, r, terminated, truncated, _ = env.step(path if step == 0 else 2)
            seen.append(int(np.argmax(observation)))
            assert not truncated
            assert terminated == (step == delay) and r == (reward if step == delay else 0.0)
        assert seen[:-1] == list(range(env.first_cell[path], env.first_cell[path] + delay))


def test_all_transitions_are_the_hazard_free_graph():
    env = pathworld.PathworldEnv(delays=(2, 4), rewards=(1.0, 5.0), hazard_prior="none")
    batch = env.all_transitions(stack_size=2, gamma=0.9)
    assert batch.observation.shape == (env.num_states * 2, env.num_states, 2)
    assert np.all(batch.observation[..., 0] == batch.observation[..., 1])
    state = batch.observation[..., 0].argmax(-1)
    final = np.isin(state, [env.first_cell[p] + d - 1 for p, d in enumerate(env.delays)])
    np.testing.assert_array_equal(batch.discount, np.where(final, 0.0, np.float32(0.9)).astype(np.float32))
    assert sorted(batch.reward[final]) == [1.0, 1.0, 5.0, 5.0] and np.all(batch.reward[~final] == 0)
    # Exponential values from the graph by value iteration equal r gamma^d in closed form.
    gamma = 0.8
    v = np.zeros(env.num_states)
    next_state = batch.next_observation[..., 0].argmax(-1)
    for _ in range(20):
        q = batch.reward + gamma * (batch.discount > 0) * v[next_state]
        v = np.array([q[state == s].max() for s in range(env.num_states)])
    q_start = (batch.reward + gamma * (batch.discount > 0) * v[next_state])[state == 0]
    np.testing.assert_allclose(q_start, pathworld.exponential_values(env.delays, env.rewards, gamma), rtol=1e-12)


@pytest.mark.parametrize("prior,expected", [
    ("exponential", lambda r, d: r / (1 + 0.5 * d)),  # k = 0.5: hyperbolic
    ("fixed", lambda r, d: r * np.exp(-0.2 * d)),     # lambda = 0.2: exponential, gamma = e^-0.2
])
def test_monte_carlo_returns_match_the_closed_form(prior, expected):
    env = pathworld.PathworldEnv(delays=(1, 3, 8), rewards=(1.0, 2.0, 4.0), hazard_prior=prior, hazard_k=0.5, hazard_rate=0.2)
    episodes = 3000
    for path, (delay, reward) in enumerate(zip(env.delays, env.rewards)):
        returns = np.array([_run(env, path, 1000 * path + i)[0] for i in range(episodes)])
        mean, stderr = returns.mean(), returns.std() / np.sqrt(episodes)
        assert abs(mean - expected(reward, delay)) < 4 * stderr + 1e-9, (path, mean, expected(reward, delay))
    np.testing.assert_allclose(pathworld.hyperbolic_values((1, 3, 8), (1.0, 2.0, 4.0), 0.5), [1 / 1.5, 2 / 2.5, 4 / 5])


def test_hazard_is_drawn_per_episode_and_deaths_end_the_episode():
    env = pathworld.PathworldEnv(hazard_prior="exponential", hazard_k=0.5)
    hazards = np.array([env.reset(seed=i)[1]["hazard"] for i in range(2000)])
    assert hazards.mean() == pytest.approx(0.5, rel=0.1) and len(np.unique(hazards)) == 2000
    outcomes = [_run(env, 4, i) for i in range(300)]
    died = [o for o in outcomes if o[2]]
    assert died and all(o[0] == 0.0 and o[1] <= 1 + env.delays[4] for o in died)


def test_factory_and_bad_arguments():
    env = create_environment("pathworld:paths", hazard_prior="none", delays=(2,), rewards=(1.0,))
    assert isinstance(env, pathworld.PathworldEnv) and env.hazard_prior == "none"
    with pytest.raises(ValueError, match="paths"):
        create_environment("pathworld:maze")
    with pytest.raises(ValueError, match="one reward per path"):
        pathworld.PathworldEnv(delays=(1, 2), rewards=(1.0,))
    with pytest.raises(ValueError, match=">= 1"):
        pathworld.PathworldEnv(delays=(0, 2), rewards=(1.0, 1.0))
    with pytest.raises(ValueError, match="hazard_prior"):
        pathworld.PathworldEnv(hazard_prior="gamma")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in"):
        env.step(5)


def test_truncation_bootstraps():
    env = pathworld.PathworldEnv(delays=(5,), rewards=(1.0,), hazard_prior="none", max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
