"""msa_jax: robust multimodal sentiment analysis (LNLN, GEAR) in JAX/Flax."""

from msa_jax.version import __version__

__all__ = ["__version__", "restore"]


def restore(workdir, selection=None, seed=None):
  """The trained model of a run directory or an exported model directory, ready to predict: see
  `msa_jax.inference.restore`."""
  from msa_jax.inference import restore as restore_model

  return restore_model(workdir, selection, seed)
