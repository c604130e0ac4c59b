"""Tabular fixed-dataset policy optimisation (FDPO), solved exactly on a dataset's empirical MDP.

Buckman, Gelada & Bellemare (2020), "The Importance of Pessimism in Fixed-Dataset Policy
Optimization" (arXiv:2009.06799). A dataset D of transitions (s, a, r, s') defines an empirical
MDP (R_hat, P_hat). Four ways to turn it into a policy:

- naive FDPO: the optimal policy of the empirical MDP (policy iteration, exact);
- imitation: the dataset's empirical policy pihat_D(a|s) = n(s, a) / n(s);
- uncertainty-aware pessimistic FDPO: the optimal policy of the empirical MDP whose rewards are
  clip(R_hat(s, a) - alpha / sqrt(n(s, a)), 0, 1); unvisited pairs get 0;
- proximal pessimistic FDPO: maximises the empirical return minus, at every visited state, the
  penalty alpha * sum_a max(pi(a|s) - pihat_D(a|s), 0). Its exact per-state improvement step keeps
  pihat_D's mass on the actions whose Q is within alpha of the best and moves the rest to the
  argmax (moving mass from a to a* gains Q(a*) - Q(a) and costs alpha).

The details (alpha = 1 for both pessimistic forms, a uniform-random reward and a uniform
next-state distribution for unvisited pairs, the uniform empirical policy at unvisited states, the
proximal iteration starting from pihat_D) follow the paper's public code, `jbuckman/tiopifdpo`,
tabular/solvers.py (ReplayPI, ReplayPPI, ReplayProximalPPI, Imitation) and tabular/core.py
(DataBuffer.to_empirical_R_P). This module is our own NumPy code, vectorised over a leading batch
of MDPs so that the paper's sweeps (hundreds of random MDPs per point) run in minutes on a CPU.

Shapes: S states, A actions, any leading batch shape `...` (the same for every argument of one
call). Rewards [..., S, A]; transitions [..., S, A, S] (rows sum to 1); policies [..., S, A]
(rows sum to 1); values [..., S]. Everything is float64.

The paper's gridworld (`random_gridworlds`): an 8x8 torus, 4 actions (up, down, left, right),
slip 0.2 (with probability 0.2 the move goes in a uniformly random direction instead), Bernoulli
rewards whose means are drawn from Beta(1, 3), gamma 0.99, uniform initial state
(tiopifdpo tabular/mdps.py). Datasets come from epsilon-greedy(optimal) (`epsilon_greedy`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

# Published defaults (tiopifdpo tabular/experiment_*.py: `safety=1.`).
UNCERTAINTY_ALPHA = 1.0
PROXIMAL_ALPHA = 1.0
_TIE_DECIMALS = 8  # Q-values are rounded before argmax so that ties break to the first action.


# ----------------------------------------------------------------------------------------------
# MDPs and datasets
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TabularMDP:
    """A batch of finite MDPs with Bernoulli rewards.

    rewards: [..., S, A] Bernoulli means in [0, 1]; transitions: [..., S, A, S];
    initial: [S] start distribution; gamma in [0, 1).
    """

    rewards: np.ndarray
    transitions: np.ndarray
    gamma: float
    initial: np.ndarray

    def __post_init__(self):
        _check_mdp(self.rewards, self.transitions, self.gamma)
        if self.initial.shape != (self.rewards.shape[-2],) or not np.isclose(self.initial.sum(), 1.0):
            raise ValueError(f"initial must be a distribution over the {self.rewards.shape[-2]} states")

    @property
    def num_states(self) -> int:
        return self.rewards.shape[-2]

    @property
    def num_actions(self) -> int:
        return self.rewards.shape[-1]

    def returns(self, policy: np.ndarray) -> np.ndarray:
        """True expected discounted return of `policy` from the initial distribution: [...]."""
        values = evaluate_policy(self.rewards, self.transitions, self.gamma, policy)
        return values @ self.initial


@dataclass(frozen=True)
class TabularDataset:
    """Sufficient statistics of a dataset of transitions (s, a, r, s'), for a batch of MDPs.

    counts: [..., S, A] n(s, a); reward_sums: [..., S, A] sum of r over those transitions;
    next_counts: [..., S, A, S] n(s, a, s'). The order of transitions does not matter to any of
    the four algorithms, so counts are all they need.
    """

    counts: np.ndarray
    reward_sums: np.ndarray
    next_counts: np.ndarray

    def __post_init__(self):
        if self.reward_sums.shape != self.counts.shape or self.next_counts.shape[:-1] != self.counts.shape:
            raise ValueError(
                f"inconsistent shapes: counts {self.counts.shape}, reward_sums {self.reward_sums.shape}, "
                f"next_counts {self.next_counts.shape} (want [..., S, A], [..., S, A], [..., S, A, S])"
            )
        if not np.array_equal(self.next_counts.sum(-1), self.counts):
            raise ValueError("next_counts must sum over s' to counts")

    def __add__(self, other: "TabularDataset") -> "TabularDataset":
        return TabularDataset(
            self.counts + other.counts,
            self.reward_sums + other.reward_sums,
            self.next_counts + other.next_counts,
        )

    @classmethod
    def from_transitions(
        cls, states, actions, rewards, next_states, num_states: int, num_actions: int
    ) -> "TabularDataset":
        """Counts of one list of transitions (1-D integer arrays and rewards in [0, 1])."""
        states, actions, next_states = (np.asarray(x, np.int64) for x in (states, actions, next_states))
        counts = np.zeros((num_states, num_actions))
        reward_sums = np.zeros((num_states, num_actions))
        next_counts = np.zeros((num_states, num_actions, num_states))
        np.add.at(counts, (states, actions), 1.0)
        np.add.at(reward_sums, (states, actions), np.asarray(rewards, np.float64))
        np.add.at(next_counts, (states, actions, next_states), 1.0)
        return cls(counts, reward_sums, next_counts)


def _check_mdp(rewards: np.ndarray, transitions: np.ndarray, gamma: float) -> None:
    if transitions.shape != rewards.shape + rewards.shape[-2:-1]:
        raise ValueError(
            f"transitions {transitions.shape} must be rewards' shape {rewards.shape} + (S,) = "
            f"{rewards.shape + rewards.shape[-2:-1]}"
        )
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")


# ----------------------------------------------------------------------------------------------
# Exact planning
# ----------------------------------------------------------------------------------------------
def evaluate_policy(
    rewards: np.ndarray,
    transitions: np.ndarray,
    gamma: float,
    policy: np.ndarray,
    state_penalty: Optional[np.ndarray] = None,
) -> np.ndarray:
    """V^pi [..., S] by a linear solve: (I - gamma P_pi) V = r_pi - state_penalty."""
    _check_mdp(rewards, transitions, gamma)
    reward_pi = np.sum(policy * rewards, axis=-1)
    if state_penalty is not None:
        reward_pi = reward_pi - state_penalty
    transitions_pi = np.einsum("...sa,...sat->...st", policy, transitions)
    num_states = rewards.shape[-2]
    system = np.eye(num_states) - gamma * transitions_pi
    return np.linalg.solve(system, reward_pi[..., None])[..., 0]


def q_values(rewards: np.ndarray, transitions: np.ndarray, gamma: float, values: np.ndarray) -> np.ndarray:
    """Q(s, a) = R(s, a) + gamma * sum_s' P(s'|s, a) V(s'): [..., S, A]."""
    return rewards + gamma * np.einsum("...sat,...t->...sa", transitions, values)


def greedy(q: np.ndarray) -> np.ndarray:
    """One-hot argmax policy of `q` [..., S, A]; ties (to 8 decimals) go to the first action."""
    best = np.argmax(np.round(q, _TIE_DECIMALS), axis=-1)
    return np.eye(q.shape[-1])[best]


def policy_iteration(
    rewards: np.ndarray, transitions: np.ndarray, gamma: float, max_iterations: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """The optimal deterministic policy and its Q-values, by Howard's policy iteration (exact).

    Starts from the immediate-reward greedy policy and stops when no policy in the batch changes.
    Returns (policy [..., S, A], q [..., S, A]). Raises if it has not converged in max_iterations.
    """
    policy = greedy(rewards)
    for _ in range(max_iterations):
        values = evaluate_policy(rewards, transitions, gamma, policy)
        q = q_values(rewards, transitions, gamma, values)
        new_policy = greedy(q)
        if np.array_equal(new_policy, policy):
            return policy, q
        policy = new_policy
    raise RuntimeError(f"policy iteration did not converge in {max_iterations} iterations")


def proximal_improvement(q: np.ndarray, behaviour: np.ndarray, alpha: float) -> np.ndarray:
    """argmax_pi sum_a pi(a) Q(a) - alpha * sum_a max(pi(a) - behaviour(a), 0), per state.

    Keeps the behaviour's mass on actions with Q(a) > max_a' Q(a') - alpha and moves the rest to
    the argmax (tiopifdpo ReplayProximalPPI.compute_penalized_policy). q, behaviour: [..., S, A].
    """
    rounded = np.round(q, _TIE_DECIMALS)
    keep = rounded > rounded.max(-1, keepdims=True) - alpha
    policy = np.where(keep, behaviour, 0.0)
    return policy + (1.0 - policy.sum(-1, keepdims=True)) * greedy(q)


def proximal_penalty(policy: np.ndarray, behaviour: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * sum_a max(pi(a|s) - behaviour(a|s), 0): [..., S]."""
    return alpha * np.maximum(policy - behaviour, 0.0).sum(-1)


def proximal_policy_iteration(
    rewards: np.ndarray,
    transitions: np.ndarray,
    gamma: float,
    behaviour: np.ndarray,
    alpha: float,
    max_iterations: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact policy iteration for the return minus the proximal penalty.

    Evaluation solves (I - gamma P_pi) V = r_pi - penalty(pi); Q = R + gamma P V; improvement is
    `proximal_improvement`. The per-state objective is linear in Q plus a concave term, so each
    step improves the penalised value and the iteration stops at its fixed point. Starts from
    `behaviour` (the paper's code starts from Q = 0, which gives the same first policy).
    Returns (policy, q). Raises if it has not converged in max_iterations.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    policy = proximal_improvement(np.zeros_like(rewards), behaviour, alpha)
    for _ in range(max_iterations):
        penalty = proximal_penalty(policy, behaviour, alpha)
        values = evaluate_policy(rewards, transitions, gamma, policy, penalty)
        q = q_values(rewards, transitions, gamma, values)
        new_policy = proximal_improvement(q, behaviour, alpha)
        if np.allclose(new_policy, policy, rtol=0.0, atol=1e-12):
            return policy, q
        policy = new_policy
    raise RuntimeError(f"proximal policy iteration did not converge in {max_iterations} iterations")


# ----------------------------------------------------------------------------------------------
# The empirical MDP and the four algorithms
# ----------------------------------------------------------------------------------------------
UnvisitedReward = Union[float, np.ndarray]


def empirical_mdp(dataset: TabularDataset, unvisited_reward: UnvisitedReward) -> tuple[np.ndarray, np.ndarray]:
    """(R_hat, P_hat) of the dataset. Unvisited pairs: reward `unvisited_reward` (a scalar or an
    array shaped like the counts; the paper draws it uniformly from [0, 1]) and a uniform
    next-state distribution."""
    counts = dataset.counts
    visited = counts > 0
    safe = np.where(visited, counts, 1.0)
    num_states = counts.shape[-2]
    r_hat = np.where(visited, dataset.reward_sums / safe, unvisited_reward)
    p_hat = np.where(visited[..., None], dataset.next_counts / safe[..., None], 1.0 / num_states)
    return r_hat, p_hat


def empirical_policy(dataset: TabularDataset) -> np.ndarray:
    """pihat_D(a|s) = n(s, a) / n(s), uniform where n(s) = 0: [..., S, A]."""
    state_counts = dataset.counts.sum(-1, keepdims=True)
    uniform = 1.0 / dataset.counts.shape[-1]
    return np.where(state_counts > 0, dataset.counts / np.where(state_counts > 0, state_counts, 1.0), uniform)


def imitation(dataset: TabularDataset) -> np.ndarray:
    """Behaviour cloning: the empirical policy."""
    return empirical_policy(dataset)


def naive_fdpo(dataset: TabularDataset, gamma: float, unvisited_reward: UnvisitedReward) -> np.ndarray:
    """The optimal policy of the empirical MDP (tiopifdpo ReplayPI)."""
    r_hat, p_hat = empirical_mdp(dataset, unvisited_reward)
    return policy_iteration(r_hat, p_hat, gamma)[0]


def uncertainty_penalised_rewards(
    dataset: TabularDataset,
    unvisited_reward: UnvisitedReward,
    alpha: float = UNCERTAINTY_ALPHA,
    reward_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """clip(R_hat - alpha / sqrt(n), *reward_range); unvisited pairs (n = 0) get the lower end."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    r_hat, _ = empirical_mdp(dataset, unvisited_reward)
    visited = dataset.counts > 0
    bonus = alpha / np.sqrt(np.where(visited, dataset.counts, 1.0))
    penalised = np.where(visited, r_hat - bonus, -np.inf)
    return np.clip(penalised, *reward_range)


def uncertainty_aware_fdpo(
    dataset: TabularDataset,
    gamma: float,
    unvisited_reward: UnvisitedReward,
    alpha: float = UNCERTAINTY_ALPHA,
) -> np.ndarray:
    """The optimal policy of the empirical MDP with count-penalised rewards (tiopifdpo ReplayPPI)."""
    _, p_hat = empirical_mdp(dataset, unvisited_reward)
    rewards = uncertainty_penalised_rewards(dataset, unvisited_reward, alpha)
    return policy_iteration(rewards, p_hat, gamma)[0]


def proximal_fdpo(
    dataset: TabularDataset,
    gamma: float,
    unvisited_reward: UnvisitedReward,
    alpha: float = PROXIMAL_ALPHA,
) -> np.ndarray:
    """The proximal-penalised optimum on the empirical MDP (tiopifdpo ReplayProximalPPI)."""
    r_hat, p_hat = empirical_mdp(dataset, unvisited_reward)
    return proximal_policy_iteration(r_hat, p_hat, gamma, empirical_policy(dataset), alpha)[0]


# ----------------------------------------------------------------------------------------------
# The paper's gridworld and data collection
# ----------------------------------------------------------------------------------------------
def torus_transitions(height: int = 8, width: int = 8, slip: float = 0.2) -> np.ndarray:
    """[S, 4, S] moves on a torus; actions up, down, left, right; with probability `slip` the move
    goes in a uniformly random one of the four directions (tiopifdpo gridworld_P)."""
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must be in [0, 1], got {slip}")
    num_states = height * width
    transitions = np.zeros((num_states, 4, num_states))
    for state in range(num_states):
        x, y = state % width, state // width
        neighbours = [
            ((y - 1) % height) * width + x,
            ((y + 1) % height) * width + x,
            y * width + (x - 1) % width,
            y * width + (x + 1) % width,
        ]
        for action, target in enumerate(neighbours):
            transitions[state, action, target] += 1.0 - slip
            for other in neighbours:
                transitions[state, action, other] += slip / 4
    return transitions


def random_gridworlds(
    rng: np.random.Generator,
    num_mdps: int,
    height: int = 8,
    width: int = 8,
    slip: float = 0.2,
    reward_beta: tuple[float, float] = (1.0, 3.0),
    gamma: float = 0.99,
) -> TabularMDP:
    """`num_mdps` torus gridworlds that share dynamics and differ in their Beta-drawn reward means."""
    transitions = torus_transitions(height, width, slip)
    num_states = height * width
    rewards = rng.beta(*reward_beta, size=(num_mdps, num_states, 4))
    return TabularMDP(
        rewards=rewards,
        transitions=np.broadcast_to(transitions, (num_mdps,) + transitions.shape),
        gamma=gamma,
        initial=np.full(num_states, 1.0 / num_states),
    )


def epsilon_greedy(policy: np.ndarray, epsilon: float) -> np.ndarray:
    """(1 - epsilon) * policy + epsilon * uniform."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    return (1.0 - epsilon) * policy + epsilon / policy.shape[-1]


def stationary_distribution(transitions: np.ndarray, policy: np.ndarray) -> np.ndarray:
    """The state distribution d [..., S] with d P_pi = d and sum d = 1 (the chain must be
    irreducible; periodic chains are fine). One equation of the singular system is swapped for
    the normalisation."""
    transitions_pi = np.einsum("...sa,...sat->...st", policy, transitions)
    num_states = transitions_pi.shape[-1]
    system = np.swapaxes(transitions_pi, -1, -2) - np.eye(num_states)
    system = system.copy()
    system[..., -1, :] = 1.0
    rhs = np.zeros(system.shape[:-1])
    rhs[..., -1] = 1.0
    dist = np.linalg.solve(system, rhs[..., None])[..., 0]
    return np.clip(dist, 0.0, None) / np.clip(dist, 0.0, None).sum(-1, keepdims=True)


def collect_dataset(
    rng: np.random.Generator,
    mdp: TabularMDP,
    policy: np.ndarray,
    num_transitions: int,
    state_distribution: Optional[np.ndarray] = None,
) -> TabularDataset:
    """Counts of `num_transitions` i.i.d. transitions per MDP: s ~ state_distribution (default: the
    policy's stationary distribution, as the paper's size sweep; its epsilon sweep uses the
    uniform start distribution), a ~ policy(s), r ~ Bernoulli(R(s, a)), s' ~ P(s, a).

    Drawn directly as counts (multinomial over (s, a), binomial rewards, multinomial next states),
    which has exactly the distribution of the counts of i.i.d. draws and costs O(S^2 A) per MDP.
    """
    if num_transitions < 0:
        raise ValueError(f"num_transitions must be >= 0, got {num_transitions}")
    if state_distribution is None:
        state_distribution = stationary_distribution(mdp.transitions, policy)
    state_distribution = np.broadcast_to(state_distribution, policy.shape[:-1])
    pair_probs = (state_distribution[..., None] * policy).reshape(policy.shape[:-2] + (-1,))
    pair_probs = pair_probs / pair_probs.sum(-1, keepdims=True)
    counts = rng.multinomial(num_transitions, pair_probs).reshape(policy.shape).astype(np.int64)
    reward_sums = rng.binomial(counts, np.broadcast_to(mdp.rewards, counts.shape))
    next_counts = rng.multinomial(counts, np.broadcast_to(mdp.transitions, counts.shape + (mdp.num_states,)))
    return TabularDataset(counts.astype(np.float64), reward_sums.astype(np.float64), next_counts.astype(np.float64))


__all__ = [
    "PROXIMAL_ALPHA",
    "UNCERTAINTY_ALPHA",
    "TabularDataset",
    "TabularMDP",
    "collect_dataset",
    "empirical_mdp",
    "empirical_policy",
    "epsilon_greedy",
    "evaluate_policy",
    "greedy",
    "imitation",
    "naive_fdpo",
    "policy_iteration",
    "proximal_fdpo",
    "proximal_improvement",
    "proximal_penalty",
    "proximal_policy_iteration",
    "q_values",
    "random_gridworlds",
    "stationary_distribution",
    "torus_transitions",
    "uncertainty_aware_fdpo",
    "uncertainty_penalised_rewards",
]
