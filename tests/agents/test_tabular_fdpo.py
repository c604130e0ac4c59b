"""Tabular FDPO solvers against a two-state MDP solved by hand, plus the gridworld and sampler.

The hand case (gamma = 1/2, unvisited reward 0.9):
  state 0: a0 seen 16 times, reward sum 8, always back to 0;  a1 seen once, reward 1, to state 1
  state 1: a0 seen once, reward 0, stays in 1;                a1 never seen (uniform next state)
Its solutions are worked out in the comments of each test.
"""
import numpy as np
import pytest

from accumbens.agents import tabular_fdpo as fdpo

GAMMA = 0.5
UNVISITED = 0.9


def hand_dataset() -> fdpo.TabularDataset:
    states = [0] * 16 + [0, 1]
    actions = [0] * 16 + [1, 0]
    rewards = [1.0] * 8 + [0.0] * 8 + [1.0, 0.0]
    next_states = [0] * 16 + [1, 1]
    return fdpo.TabularDataset.from_transitions(states, actions, rewards, next_states, 2, 2)


def test_empirical_mdp_and_policy():
    r_hat, p_hat = fdpo.empirical_mdp(hand_dataset(), UNVISITED)
    np.testing.assert_allclose(r_hat, [[0.5, 1.0], [0.0, 0.9]])
    np.testing.assert_allclose(p_hat, [[[1, 0], [0, 1]], [[0, 1], [0.5, 0.5]]])
    np.testing.assert_allclose(fdpo.imitation(hand_dataset()), [[16 / 17, 1 / 17], [1.0, 0.0]])


def test_naive_fdpo_hand_solution():
    # Optimal on the empirical MDP: a1 everywhere. V1 = 0.9 + (V0 + V1)/4, V0 = 1 + V1/2
    # => V1 = 1.15 / 0.625 = 1.84, V0 = 1.92; Q(0, a0) = 0.5 + 0.96 < 1.92, Q(1, a0) = 0.92 < 1.84.
    policy = fdpo.naive_fdpo(hand_dataset(), GAMMA, UNVISITED)
    np.testing.assert_array_equal(policy, [[0, 1], [0, 1]])
    r_hat, p_hat = fdpo.empirical_mdp(hand_dataset(), UNVISITED)
    np.testing.assert_allclose(fdpo.evaluate_policy(r_hat, p_hat, GAMMA, policy), [1.92, 1.84], rtol=1e-12)


def test_uncertainty_aware_hand_solution():
    # alpha = 1/2: rewards clip(R_hat - alpha/sqrt(n)) = [[0.5 - 1/8, 1 - 1/2], [0, 0 (unvisited)]].
    # a0 at state 0 forever: V0 = 0.375 / 0.5 = 0.75 beats a1 (0.5 + V1/2 with V1 <= 0.25).
    # State 1: a1 (uniform next) gives V1 = (V0 + V1)/4 => V1 = 0.25 > a0's 0.
    dataset = hand_dataset()
    np.testing.assert_allclose(
        fdpo.uncertainty_penalised_rewards(dataset, UNVISITED, alpha=0.5), [[0.375, 0.5], [0.0, 0.0]]
    )
    policy = fdpo.uncertainty_aware_fdpo(dataset, GAMMA, UNVISITED, alpha=0.5)
    np.testing.assert_array_equal(policy, [[1, 0], [0, 1]])
    # alpha = 0 is naive FDPO.
    np.testing.assert_array_equal(
        fdpo.uncertainty_aware_fdpo(dataset, GAMMA, UNVISITED, alpha=0.0), fdpo.naive_fdpo(dataset, GAMMA, UNVISITED)
    )


def test_proximal_hand_solution_small_alpha():
    # alpha = 0.3: both states leave the behaviour for a1. Penalties: state 0 pays 0.3 * 16/17,
    # state 1 pays 0.3. r0 = 1 - 0.3*16/17, r1 = 0.9 - 0.3;
    # V0 = r0 + V1/2, V1 = r1 + (V0 + V1)/4  =>  V1 = (r1 + r0/4) / 0.625.
    dataset = hand_dataset()
    policy = fdpo.proximal_fdpo(dataset, GAMMA, UNVISITED, alpha=0.3)
    np.testing.assert_allclose(policy, [[0, 1], [0, 1]], atol=1e-12)
    r0, r1 = 1 - 0.3 * 16 / 17, 0.6
    v1 = (r1 + r0 / 4) / 0.625
    v0 = r0 + v1 / 2
    r_hat, p_hat = fdpo.empirical_mdp(dataset, UNVISITED)
    behaviour = fdpo.empirical_policy(dataset)
    values = fdpo.evaluate_policy(r_hat, p_hat, GAMMA, policy, fdpo.proximal_penalty(policy, behaviour, 0.3))
    np.testing.assert_allclose(values, [v0, v1], rtol=1e-12)


def test_proximal_hand_solution_large_alpha_mixes():
    # alpha = 1: state 1 still moves to a1 (Q gap 1.10 > 1) but at state 0 the gap Q(a1) - Q(a0)
    # is only ~0.096 < 1, so it keeps the behaviour's mix [16/17, 1/17].
    # Check: V0 = 1 + V1/18 (behaviour at 0), V1 = -0.1 + (V0 + V1)/4 => V1 = 0.15 * 72/53.
    dataset = hand_dataset()
    policy, q = fdpo.proximal_policy_iteration(
        *fdpo.empirical_mdp(dataset, UNVISITED), GAMMA, fdpo.empirical_policy(dataset), alpha=1.0
    )
    np.testing.assert_allclose(policy, [[16 / 17, 1 / 17], [0, 1]], atol=1e-12)
    v1 = 0.15 * 72 / 53
    v0 = 1 + v1 / 18
    np.testing.assert_allclose(q, [[0.5 + v0 / 2, 1 + v1 / 2], [v1 / 2, 0.9 + (v0 + v1) / 4]], rtol=1e-12)
    np.testing.assert_allclose(fdpo.proximal_fdpo(dataset, GAMMA, UNVISITED), policy, atol=1e-12)


def test_proximal_alpha_zero_is_naive_and_huge_alpha_is_imitation():
    dataset = hand_dataset()
    np.testing.assert_allclose(
        fdpo.proximal_fdpo(dataset, GAMMA, UNVISITED, alpha=0.0), fdpo.naive_fdpo(dataset, GAMMA, UNVISITED)
    )
    np.testing.assert_allclose(fdpo.proximal_fdpo(dataset, GAMMA, UNVISITED, alpha=1e6), fdpo.imitation(dataset))


def test_proximal_improvement_is_the_exact_per_state_maximiser():
    # Brute force over a fine simplex grid in 3 actions.
    rng = np.random.default_rng(0)
    grid = np.array([(i, j, 20 - i - j) for i in range(21) for j in range(21 - i)]) / 20.0
    for _ in range(20):
        q = rng.uniform(0, 2, 3)
        behaviour = rng.dirichlet(np.ones(3))
        behaviour = np.round(behaviour * 20) / 20
        behaviour[-1] = 1 - behaviour[:-1].sum()
        if behaviour.min() < 0:
            continue
        objective = lambda pi: pi @ q - 0.5 * np.maximum(pi - behaviour, 0).sum(-1)  # noqa: E731
        best = objective(grid).max()
        chosen = fdpo.proximal_improvement(q[None], behaviour[None], 0.5)[0]
        assert objective(chosen) >= best - 1e-12


def test_policy_iteration_matches_value_iteration_on_gridworld():
    mdp = fdpo.random_gridworlds(np.random.default_rng(1), 3)
    policy, q = fdpo.policy_iteration(mdp.rewards, mdp.transitions, mdp.gamma)
    q_vi = np.zeros_like(mdp.rewards)
    for _ in range(4000):  # 0.99^4000 ~ 4e-18: converged to float64 precision
        q_vi = fdpo.q_values(mdp.rewards, mdp.transitions, mdp.gamma, q_vi.max(-1))
    np.testing.assert_allclose(q, q_vi, rtol=1e-9, atol=1e-9)
    # Naive FDPO on the exact model (every pair seen, exact statistics) is optimal.
    np.testing.assert_array_equal(policy, fdpo.greedy(q_vi))


def test_torus_transitions():
    transitions = fdpo.torus_transitions(8, 8, 0.2)
    np.testing.assert_allclose(transitions.sum(-1), 1.0)
    # From (x=0, y=0): up wraps to y=7 (state 56); intended move 0.8 + 0.05, other three 0.05.
    assert transitions[0, 0, 56] == pytest.approx(0.85)
    assert transitions[0, 3, 1] == pytest.approx(0.85)
    assert transitions[0, 3, 7] == pytest.approx(0.05)
    assert np.count_nonzero(transitions[0, 0]) == 4


def test_stationary_distribution_is_stationary():
    mdp = fdpo.random_gridworlds(np.random.default_rng(2), 4)
    policy = fdpo.epsilon_greedy(fdpo.policy_iteration(mdp.rewards, mdp.transitions, mdp.gamma)[0], 0.3)
    dist = fdpo.stationary_distribution(mdp.transitions, policy)
    transitions_pi = np.einsum("bsa,bsat->bst", policy, mdp.transitions)
    np.testing.assert_allclose(np.einsum("bs,bst->bt", dist, transitions_pi), dist, atol=1e-12)
    np.testing.assert_allclose(dist.sum(-1), 1.0)


def test_collect_dataset_frequencies():
    mdp = fdpo.random_gridworlds(np.random.default_rng(3), 2, height=3, width=3)
    policy = np.full((2, 9, 4), 0.25)
    dataset = fdpo.collect_dataset(np.random.default_rng(4), mdp, policy, 400_000, mdp.initial)
    np.testing.assert_array_equal(dataset.counts.sum((-1, -2)), [400_000, 400_000])
    r_hat, p_hat = fdpo.empirical_mdp(dataset, 0.0)
    # ~11,000 samples per pair: standard errors ~0.005.
    np.testing.assert_allclose(r_hat, mdp.rewards, atol=0.03)
    np.testing.assert_allclose(p_hat, mdp.transitions, atol=0.03)
    np.testing.assert_allclose(dataset.counts / 400_000, np.full((2, 9, 4), 1 / 36), atol=0.003)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="gamma"):
        fdpo.evaluate_policy(np.zeros((2, 2)), np.full((2, 2, 2), 0.5), 1.0, np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="transitions"):
        fdpo.evaluate_policy(np.zeros((2, 2)), np.full((2, 2, 3), 1 / 3), 0.9, np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="epsilon"):
        fdpo.epsilon_greedy(np.full((2, 2), 0.5), 1.5)
    with pytest.raises(ValueError, match="next_counts"):
        fdpo.TabularDataset(np.ones((2, 2)), np.zeros((2, 2)), np.zeros((2, 2, 2)))


def test_pessimism_beats_naive_on_narrow_data():
    """The paper's finding at one point (Fig. 2, right, eps = 0): with 2000 transitions of the
    optimal policy, naive FDPO is near random while both pessimistic forms are near optimal."""
    rng = np.random.default_rng(5)
    mdp = fdpo.random_gridworlds(rng, 20)
    optimal, _ = fdpo.policy_iteration(mdp.rewards, mdp.transitions, mdp.gamma)
    dataset = fdpo.collect_dataset(rng, mdp, optimal, 2000, mdp.initial)
    unvisited = rng.uniform(size=dataset.counts.shape)
    random_return = mdp.returns(np.full(optimal.shape, 0.25)).mean()
    optimal_return = mdp.returns(optimal).mean()
    naive = mdp.returns(fdpo.naive_fdpo(dataset, mdp.gamma, unvisited)).mean()
    ua = mdp.returns(fdpo.uncertainty_aware_fdpo(dataset, mdp.gamma, unvisited)).mean()
    proximal = mdp.returns(fdpo.proximal_fdpo(dataset, mdp.gamma, unvisited)).mean()
    gap = optimal_return - random_return
    assert naive < random_return + 0.2 * gap
    assert ua > optimal_return - 0.1 * gap and proximal > optimal_return - 0.1 * gap
