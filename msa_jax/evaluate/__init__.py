"""Evaluation (the results of runs are reported by msa_jax.report)."""
