"""accumbens: compact, gin-configured reinforcement-learning agents in JAX."""

__version__ = "0.1.0"
