"""Installs accumbens: a compact Dopamine-style RL research framework on JAX, Flax, Optax and gin."""
from setuptools import find_packages, setup

setup(
    name="accumbens",
    version="0.1.0",
    description="Compact, fast, gin-configured reinforcement-learning research agents in JAX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["accumbens", "accumbens.*"]),
    package_data={"accumbens": ["configs/**/*.gin"]},
    include_package_data=True,
    install_requires=[
        "numpy>=1.26",
        "jax>=0.4.30",
        "flax>=0.10",
        "optax>=0.2.3",
        "chex>=0.1.86",
        "gin-config>=0.5.0",
        "gymnasium>=1.0",
        "ale-py>=0.10",
        "minatar>=1.0.15",
        "msgpack>=1.0",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "gymnax>=1.0.1", "ray>=2.9"],  # ray: the sweep's Ray test
        "jax-envs": ["gymnax>=1.0.1"],
        "cluster": ["ray>=2.9"],  # accumbens.sweep --executor ray
    },
    entry_points={"console_scripts": ["accumbens-train=accumbens.train:main"]},
)
