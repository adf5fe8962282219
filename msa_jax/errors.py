"""Errors of a run that a user can act on; the command line prints them as one line."""


class RunConfigError(ValueError):
  """A config or workdir problem a user can fix (bad value, a workdir holding another run)."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a non-finite loss; the message names the step and the last good
  checkpoint."""


class ModelInputError(ValueError):
  """Data that does not fit a restored model (feature size, frame count, token ids); the message
  names the key and both sizes."""
