"""Tabular discounted COP-TD (Gelada & Bellemare, AAAI 2019): exact fixed point and a sample-based learner.

Setting: a finite MDP with transition tensor P[s, a, s'], a behaviour policy mu[s, a] that
generates the data and a target policy pi[s, a]. P_pi[s, s'] = sum_a pi(a|s) P(s'|s, a); d_mu,
d_pi are the stationary distributions of P_mu, P_pi. The covariate-shift ratio c = d_pi / d_mu
reweights updates made from mu's data so that they follow pi's state distribution.

Discounted COP-TD learns c by bootstrapping *backwards* in time. For a transition (s, a, s')
drawn from mu's stationary process (s ~ d_mu, a ~ mu(.|s), s' ~ P(.|s, a)):

    c(s') <- (1 - g) + g * (pi(a|s) / mu(a|s)) * c(s)          (g = gamma-hat, "discount")

Its expected update is the operator Y_g c = (1 - g) 1 + g D_mu^{-1} P_pi^T D_mu c (D_mu =
diag(d_mu)), a contraction-like map whose unique fixed point for g < 1 solves, with x = d_mu * c,

    x = (1 - g) (I - g P_pi^T)^{-1} d_mu,         c = x / d_mu.

x is the stationary distribution of the "discounted reset" chain g P_pi + (1 - g) 1 d_mu^T (follow
pi, reset to d_mu with probability 1 - g), so sum(x) = E_mu[c] = 1 for every g, and as g -> 1
x -> d_pi and c -> d_pi / d_mu (the undiscounted COP-TD fixed point of Hallak & Mannor 2017).

This module computes all of these exactly (float64 linear solves) and learns c from samples, so
tests and `benchmarks/cop_td_tabular.py` can check the deep agent's core update against the
closed form. The deep agent (`accumbens.agents.cop_td`) uses the same target with a network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def _check_stochastic(matrix: np.ndarray, name: str, axis: int = -1) -> np.ndarray:
    matrix = np.asarray(matrix, np.float64)
    if np.any(matrix < -1e-12):
        raise ValueError(f"{name} has negative entries; it must hold probabilities")
    sums = matrix.sum(axis=axis)
    if not np.allclose(sums, 1.0, atol=1e-8):
        raise ValueError(f"{name} must sum to 1 over axis {axis}; sums range over [{sums.min()}, {sums.max()}]")
    return matrix


def state_transition_matrix(transitions: np.ndarray, policy: np.ndarray) -> np.ndarray:
    """P_pi[s, s'] = sum_a policy[s, a] transitions[s, a, s'].

    transitions: [S, A, S] (each [s, a, :] a distribution); policy: [S, A] (rows sum to 1).
    Returns [S, S], row-stochastic, float64.
    """
    transitions = _check_stochastic(transitions, "transitions")
    policy = _check_stochastic(policy, "policy")
    if transitions.ndim != 3 or policy.shape != transitions.shape[:2] or transitions.shape[0] != transitions.shape[2]:
        raise ValueError(f"expected transitions [S, A, S] and policy [S, A]; got {transitions.shape} and {policy.shape}")
    return np.einsum("sa,sat->st", policy, transitions)


def stationary_distribution(chain: np.ndarray) -> np.ndarray:
    """The stationary distribution d (d P = d, sum d = 1) of a row-stochastic [S, S] matrix.

    Solved exactly: (P^T - I) d = 0 with one equation replaced by sum(d) = 1. The chain must
    have a unique stationary distribution (one recurrent class), else the system is singular.
    """
    chain = _check_stochastic(chain, "chain")
    n = chain.shape[0]
    system = chain.T - np.eye(n)
    system[-1, :] = 1.0
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    d = np.linalg.solve(system, rhs)
    if np.any(d < -1e-10):
        raise ValueError("the chain's stationary solution has negative entries; is it irreducible?")
    return np.clip(d, 0.0, None) / np.clip(d, 0.0, None).sum()


def discounted_cop_fixed_point(p_pi: np.ndarray, d_mu: np.ndarray, gamma_hat: float) -> np.ndarray:
    """The fixed point c of discounted COP-TD: c = x / d_mu with x = (1-g)(I - g P_pi^T)^{-1} d_mu.

    p_pi: [S, S] target-policy state chain; d_mu: [S] behaviour stationary distribution (> 0
    wherever c is wanted); gamma_hat in [0, 1). Returns c [S], float64; sum(d_mu * c) = 1.
    """
    if not 0.0 <= gamma_hat < 1.0:
        raise ValueError(f"gamma_hat must be in [0, 1) for a unique fixed point, got {gamma_hat}")
    d_mu = np.asarray(d_mu, np.float64)
    if np.any(d_mu <= 0):
        raise ValueError("d_mu must be positive in every state (the ratio is undefined where d_mu = 0)")
    n = d_mu.shape[0]
    x = (1.0 - gamma_hat) * np.linalg.solve(np.eye(n) - gamma_hat * np.asarray(p_pi, np.float64).T, d_mu)
    return x / d_mu


def cop_operator(c: np.ndarray, p_pi: np.ndarray, d_mu: np.ndarray, gamma_hat: float) -> np.ndarray:
    """One application of the expected update: Y_g c = (1 - g) + g D_mu^{-1} P_pi^T D_mu c."""
    return (1.0 - gamma_hat) + gamma_hat * (p_pi.T @ (d_mu * c)) / d_mu


@dataclass(frozen=True)
class TabularProblem:
    """A finite MDP with a behaviour and a target policy, and its exact stationary quantities."""

    transitions: np.ndarray  # [S, A, S]
    mu: np.ndarray  # [S, A] behaviour policy
    pi: np.ndarray  # [S, A] target policy
    d_mu: np.ndarray  # [S]
    d_pi: np.ndarray  # [S]

    @property
    def p_pi(self) -> np.ndarray:
        return state_transition_matrix(self.transitions, self.pi)

    @property
    def true_ratio(self) -> np.ndarray:
        """d_pi / d_mu, the undiscounted covariate shift (the g -> 1 limit)."""
        return self.d_pi / self.d_mu

    def fixed_point(self, gamma_hat: float) -> np.ndarray:
        return discounted_cop_fixed_point(self.p_pi, self.d_mu, gamma_hat)


def make_problem(transitions: np.ndarray, mu: np.ndarray, pi: np.ndarray) -> TabularProblem:
    """Bundles an MDP and two policies with their exact stationary distributions."""
    d_mu = stationary_distribution(state_transition_matrix(transitions, mu))
    d_pi = stationary_distribution(state_transition_matrix(transitions, pi))
    return TabularProblem(np.asarray(transitions, np.float64), np.asarray(mu, np.float64), np.asarray(pi, np.float64), d_mu, d_pi)


def random_problem(
    rng: np.random.Generator,
    num_states: int = 6,
    num_actions: int = 3,
    concentration: float = 1.0,
    target_epsilon: float = 0.1,
    behaviour: str = "uniform",
) -> TabularProblem:
    """A random MDP (Dirichlet(concentration) next-state rows) with an off-policy pair.

    pi: epsilon-greedy (target_epsilon) around a random deterministic policy, the off-policy
    setting of the paper (a near-greedy target). mu: 'uniform' random, or 'random' (Dirichlet(1)
    rows mixed 50/50 with uniform so every action has probability >= 0.5 / A).
    """
    if num_states < 1 or num_actions < 1:
        raise ValueError("num_states and num_actions must be positive")
    transitions = rng.dirichlet(np.full(num_states, concentration), size=(num_states, num_actions))
    greedy = rng.integers(num_actions, size=num_states)
    pi = np.full((num_states, num_actions), target_epsilon / num_actions)
    pi[np.arange(num_states), greedy] += 1.0 - target_epsilon
    uniform = np.full((num_states, num_actions), 1.0 / num_actions)
    if behaviour == "uniform":
        mu = uniform
    elif behaviour == "random":
        mu = 0.5 * uniform + 0.5 * rng.dirichlet(np.ones(num_actions), size=num_states)
    else:
        raise ValueError(f"unknown behaviour {behaviour!r}; valid: ['uniform', 'random']")
    return make_problem(transitions, mu, pi)


@dataclass(frozen=True)
class LearnerResult:
    ratio: np.ndarray  # [S] the averaged estimate of c
    last_iterate: np.ndarray  # [S] the final (unaveraged) iterate
    num_transitions: int


def learn_ratio(
    problem: TabularProblem,
    gamma_hat: float,
    rng: np.random.Generator,
    *,
    num_iterations: int = 4000,
    num_chains: int = 2000,
    step_size_exponent: float = 0.6,
    average_from: float = 0.5,
    normalization_weight: float = 1.0,
    burn_in: int = 50,
    initial_ratio: Optional[np.ndarray] = None,
) -> LearnerResult:
    """Sample-based tabular discounted COP-TD on trajectories of the behaviour policy.

    `num_chains` independent trajectories follow mu (started uniformly, `burn_in` steps before
    learning, so their states are distributed as d_mu). At iteration k every chain takes one
    step (s, a, s'), giving the sample target y = (1 - g) + g pi(a|s)/mu(a|s) c(s), and each
    visited state moves toward the mean target of the transitions that entered it:

        c(s') <- c(s') + alpha_k * mean_{i: s'_i = s'} (y_i - c(s'))     alpha_k = (1 + (1-g) k)^-exponent

    a minibatch of tabular semi-gradient TD steps (the bootstrapped c(s) is held fixed within an
    iteration). With normalization_weight lam > 0 the soft normalisation penalty
    lam (E_mu[c] - 1)^2, E_mu estimated by the batch mean of c(s'), adds its gradient
    2 lam (mean c - 1) to every visited state (the fixed point already has E_mu[c] = 1, so the
    penalty does not move it). Robbins-Monro step sizes with Polyak averaging over the last
    `1 - average_from` of the iterations give the returned estimate.

    Why the penalty is on by default: the expected update contracts the error at rate
    1 - g * lambda_i along P_pi's eigen-directions, so along the top one (the overall scale of c,
    i.e. E_mu[c]) only at 1 - g. Near g = 1 that direction converges very slowly and carries
    noise amplified by 1 / (1 - g); the penalty pins exactly that direction. On 6-state MDPs,
    2M transitions reach max error ~5e-3 at g = 0.99 with lam = 1 and 3e-2 to 3e-1 without
    (`benchmarks/cop_td_tabular.py` measures both).
    """
    if not 0.5 < step_size_exponent <= 1.0:
        raise ValueError("step_size_exponent must be in (0.5, 1] for Robbins-Monro convergence")
    if not 0.0 <= gamma_hat < 1.0:
        raise ValueError(f"gamma_hat must be in [0, 1), got {gamma_hat}")
    num_states, num_actions = problem.mu.shape
    cumulative_mu = np.cumsum(problem.mu, axis=1)
    cumulative_p = np.cumsum(problem.transitions, axis=2)
    policy_ratio = problem.pi / problem.mu  # [S, A]

    def step(states):
        u = rng.random(states.shape[0])
        actions = np.minimum((u[:, None] > cumulative_mu[states]).sum(axis=1), num_actions - 1)
        v = rng.random(states.shape[0])
        next_states = np.minimum((v[:, None] > cumulative_p[states, actions]).sum(axis=1), num_states - 1)
        return actions, next_states

    states = rng.integers(num_states, size=num_chains)
    for _ in range(burn_in):
        _, states = step(states)
    c = np.ones(num_states) if initial_ratio is None else np.array(initial_ratio, np.float64)
    average = np.zeros(num_states)
    averaged = 0
    start_average = int(average_from * num_iterations)
    for k in range(num_iterations):
        actions, next_states = step(states)
        targets = (1.0 - gamma_hat) + gamma_hat * policy_ratio[states, actions] * c[states]
        errors = targets - c[next_states]
        if normalization_weight > 0.0:
            errors -= 2.0 * normalization_weight * (np.mean(c[next_states]) - 1.0)
        counts = np.bincount(next_states, minlength=num_states)
        sums = np.bincount(next_states, weights=errors, minlength=num_states)
        alpha = (1.0 + (1.0 - gamma_hat) * k) ** -step_size_exponent
        c = c + alpha * np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        if k >= start_average:
            average += c
            averaged += 1
        states = next_states
    return LearnerResult(ratio=average / max(averaged, 1), last_iterate=c, num_transitions=num_iterations * num_chains)


__all__ = [
    "LearnerResult",
    "TabularProblem",
    "cop_operator",
    "discounted_cop_fixed_point",
    "learn_ratio",
    "make_problem",
    "random_problem",
    "state_transition_matrix",
    "stationary_distribution",
]
