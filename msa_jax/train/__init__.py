"""Training: state, optimizers, checkpoints and the loop (`msa_jax.train.run`)."""


def run(config, workdir: str, mode: str = "train"):
  """Trains and/or evaluates the method `config.method` in `workdir` (see msa_jax.train.loop)."""
  from msa_jax.train import loop

  return loop.run(config, workdir, mode)
