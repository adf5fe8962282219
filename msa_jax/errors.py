"""Errors a user can act on; the command lines print them as one line (`msa_jax.cli`)."""


class UserError(Exception):
  """Base of every error whose message is written for the user: one line naming the file, key or
  value and what was expected. `msa_jax.cli` prints it without a traceback."""


class RunConfigError(UserError, ValueError):
  """A config or workdir problem a user can fix (bad value, a workdir holding another run)."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a non-finite loss; the message names the step and the last good
  checkpoint."""


class ModelInputError(UserError, ValueError):
  """Data that does not fit a restored model (feature size, frame count, token ids); the message
  names the key and both sizes."""


class FileContentError(UserError, ValueError):
  """A file msa_jax wrote earlier (config.json, results.json) is truncated or damaged; the message
  names it."""
