"""The version of msa_jax (as in pyproject.toml); exported models record it."""

__version__ = "0.1.0"
