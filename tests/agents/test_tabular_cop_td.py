"""Tabular discounted COP-TD against exact linear algebra (float64) and hand-computed cases."""
import numpy as np
import pytest

from accumbens.agents import tabular_cop_td as tab


def _power_iterate(p_pi, d_mu, gamma_hat, iterations=20000):
    """The fixed point by repeated application of the expected operator (an independent reference)."""
    c = np.ones_like(d_mu)
    for _ in range(iterations):
        c = tab.cop_operator(c, p_pi, d_mu, gamma_hat)
    return c


def test_stationary_distribution_of_a_two_state_chain_by_hand():
    # P = [[1-p, p], [q, 1-q]] has d = (q, p) / (p + q).
    p, q = 0.3, 0.1
    chain = np.array([[1 - p, p], [q, 1 - q]])
    np.testing.assert_allclose(tab.stationary_distribution(chain), [q / (p + q), p / (p + q)], atol=1e-12)


def test_two_state_fixed_point_by_hand():
    # Two states, two actions: action 0 goes to state 0, action 1 to state 1, from anywhere.
    # mu uniform: d_mu = (1/2, 1/2). pi takes action 0 w.p. 0.8: P_pi rows are (0.8, 0.2), d_pi = (0.8, 0.2).
    # Fixed point: c(s') = (1-g) + g * sum_s d_mu(s) P_pi(s'|s) c(s) / d_mu(s') = (1-g) + g * P_pi(s') * (c0 + c1),
    # summing gives c0 + c1 = 2 (E_mu[c] = 1), so c = (1-g) + 2 g (0.8, 0.2).
    transitions = np.zeros((2, 2, 2))
    transitions[:, 0, 0] = 1.0
    transitions[:, 1, 1] = 1.0
    mu = np.full((2, 2), 0.5)
    pi = np.array([[0.8, 0.2], [0.8, 0.2]])
    problem = tab.make_problem(transitions, mu, pi)
    np.testing.assert_allclose(problem.d_mu, [0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(problem.d_pi, [0.8, 0.2], atol=1e-12)
    for g in (0.0, 0.5, 0.9):
        np.testing.assert_allclose(problem.fixed_point(g), (1 - g) + 2 * g * np.array([0.8, 0.2]), atol=1e-12)
    np.testing.assert_allclose(problem.true_ratio, [1.6, 0.4], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma_hat", [0.0, 0.5, 0.9, 0.99])
def test_closed_form_is_the_operators_fixed_point(seed, gamma_hat):
    problem = tab.random_problem(np.random.default_rng(seed), num_states=7, num_actions=3, behaviour="random")
    c = problem.fixed_point(gamma_hat)
    np.testing.assert_allclose(tab.cop_operator(c, problem.p_pi, problem.d_mu, gamma_hat), c, atol=1e-10)
    np.testing.assert_allclose(c, _power_iterate(problem.p_pi, problem.d_mu, gamma_hat), atol=1e-8)
    # x = d_mu c is the stationary distribution of the discounted reset chain, so E_mu[c] = 1.
    reset_chain = gamma_hat * problem.p_pi + (1 - gamma_hat) * np.outer(np.ones(7), problem.d_mu)
    np.testing.assert_allclose(problem.d_mu * c, tab.stationary_distribution(reset_chain), atol=1e-10)
    np.testing.assert_allclose(np.sum(problem.d_mu * c), 1.0, atol=1e-12)


def test_on_policy_ratio_is_one():
    problem = tab.random_problem(np.random.default_rng(3), num_states=5, num_actions=2)
    same = tab.make_problem(problem.transitions, problem.mu, problem.mu)
    for g in (0.3, 0.99):
        np.testing.assert_allclose(same.fixed_point(g), 1.0, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fixed_point_approaches_the_stationary_ratio_as_gamma_hat_goes_to_one(seed):
    problem = tab.random_problem(np.random.default_rng(seed), num_states=6, num_actions=3, behaviour="random")
    assert np.max(np.abs(problem.true_ratio - 1.0)) > 0.1  # a real covariate shift to recover
    errors = [np.max(np.abs(problem.fixed_point(1 - 10.0**-k) - problem.true_ratio)) for k in range(1, 7)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5
    # The gap is first order in (1 - g): each factor 10 in (1 - g) shrinks it by about 10.
    ratios = np.array(errors[2:-1]) / np.array(errors[3:])
    np.testing.assert_allclose(ratios, 10.0, rtol=0.05)


@pytest.mark.parametrize("seed,behaviour", [(0, "uniform"), (1, "random"), (2, "uniform")])
@pytest.mark.parametrize("gamma_hat", [0.5, 0.9, 0.99])
def test_sample_based_learner_converges_to_the_closed_form(seed, behaviour, gamma_hat):
    problem = tab.random_problem(np.random.default_rng(seed), num_states=6, num_actions=3, behaviour=behaviour)
    result = tab.learn_ratio(problem, gamma_hat, np.random.default_rng(100 + seed), num_iterations=2000, num_chains=1000)
    exact = problem.fixed_point(gamma_hat)
    assert np.max(np.abs(exact - 1.0)) > 0.05  # the learner starts at c = 1: there is something to learn
    assert np.max(np.abs(result.ratio - exact)) < 1e-2


def test_sample_based_learner_without_the_penalty_converges_at_small_gamma_hat():
    problem = tab.random_problem(np.random.default_rng(4), num_states=6, num_actions=3)
    result = tab.learn_ratio(
        problem, 0.5, np.random.default_rng(0), num_iterations=2000, num_chains=1000, normalization_weight=0.0
    )
    assert np.max(np.abs(result.ratio - problem.fixed_point(0.5))) < 1e-2


def test_sample_based_learner_near_one_recovers_the_stationary_ratio():
    problem = tab.random_problem(np.random.default_rng(0), num_states=6, num_actions=3)
    result = tab.learn_ratio(problem, 0.999, np.random.default_rng(7), num_iterations=2000, num_chains=1000)
    assert np.max(np.abs(result.ratio - problem.true_ratio)) < 1e-2


def test_bad_inputs_are_reported():
    problem = tab.random_problem(np.random.default_rng(0), num_states=3, num_actions=2)
    with pytest.raises(ValueError, match="gamma_hat"):
        problem.fixed_point(1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        tab.state_transition_matrix(problem.transitions, problem.pi * 2)
    with pytest.raises(ValueError, match="positive"):
        tab.discounted_cop_fixed_point(problem.p_pi, np.array([1.0, 0.0, 0.0]), 0.5)
    with pytest.raises(ValueError, match="behaviour"):
        tab.random_problem(np.random.default_rng(0), behaviour="greedy")
