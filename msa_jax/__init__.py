"""msa_jax: robust multimodal sentiment analysis (LNLN, GEAR) in JAX/Flax."""

__version__ = "0.1.0"
