"""How every command line ends: an expected failure is one line on stderr and a non-zero exit.

`guard(main)` runs a command's `main` and turns the failures a user can cause into one line: a
config or data error (`msa_jax.errors.UserError`), a file-system error (not found, permission
denied, read-only, disk full: any `OSError`, also one wrapped by a library), a bad command-line
flag, and Ctrl-C (exit 130, with the command's note on where to resume). Anything else is a bug
and keeps its traceback. `--debug` on the command line, or MSA_JAX_DEBUG=1 in the environment,
shows the full traceback of every failure.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Sequence

from msa_jax.errors import UserError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
DEBUG_ENV = "MSA_JAX_DEBUG"

# Messages of file-system failures that libraries (tensorstore under Orbax) wrap in other types.
_WRAPPED_OS_ERRORS = (
  ("No space left on device", errno.ENOSPC),
  ("Disk quota exceeded", errno.EDQUOT),
  ("Read-only file system", errno.EROFS),
  ("Permission denied", errno.EACCES),
)


class UsageError(UserError):
  """A bad command line: an unknown flag or config key, a flag value that does not parse, a
  missing config file."""


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
  """`argv` without `--debug`, and whether a full traceback was asked for (flag or env)."""
  rest = [a for a in argv if a != DEBUG_FLAG]
  return rest, len(rest) != len(argv) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def describe_os_error(e: OSError) -> str:
  """One line for a file-system failure, naming the file and what to do about it."""
  where = e.filename if e.filename is not None else ""
  if e.filename2 is not None:
    where = f"{where} -> {e.filename2}"
  what = e.strerror or str(e)
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    return _one_line(
      f"disk full writing {where or 'a file'} ({what}): free space and run the same command again"
    )
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return _one_line(f"cannot write or read {where or 'a file'}: {what}")
  return _one_line(f"{where}: {what}" if where else what)


def _wrapped_os_error(e: BaseException) -> OSError | None:
  """An `OSError` in `e`'s chain of causes, or one made from a wrapped message (Orbax)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError):
      return e
    for text, code in _WRAPPED_OS_ERRORS:
      if text in str(e):
        return OSError(code, _one_line(str(e)))
    e = e.__cause__ or e.__context__
  return None


def describe(e: BaseException) -> str | None:
  """One line for an expected failure, or None for a bug (which keeps its traceback)."""
  if isinstance(e, UserError):
    return _one_line(str(e))
  os_error = _wrapped_os_error(e)
  if os_error is not None:
    return describe_os_error(os_error)
  return None


def guard(
  main: Callable[[], int | None],
  *,
  debug: bool = False,
  interrupted: Callable[[], str] | None = None,
) -> int:
  """Runs `main()` and returns its exit code; an expected failure prints one line and returns
  `EXIT_ERROR`, Ctrl-C prints `interrupted()` (where to resume) and returns `EXIT_INTERRUPTED`."""
  try:
    return int(main() or 0)
  except KeyboardInterrupt:
    if debug:
      raise
    note = interrupted() if interrupted is not None else ""
    print(f"interrupted{': ' + note if note else ''}", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
  except Exception as e:
    line = describe(e)
    if line is None or debug:
      raise
    print(f"error: {line}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def run_script(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
  """A script's entry point: `main(argv without --debug)` under `guard`."""
  args, debug = split_debug(sys.argv[1:] if argv is None else argv)
  return guard(lambda: main(args), debug=debug)


# ---- flags of train.py (absl + ml_collections config files) -----------------------------------


def check_config_file(argv: Sequence[str], name: str = "config") -> str | None:
  """A one-line error when `--config=FILE[:PRESET]` names a file that does not exist."""
  for arg in argv:
    m = re.match(rf"^--?{name}=(.*)$", arg)
    if m:
      path = m.group(1).split(":", 1)[0]
      if not os.path.isfile(path):
        return f"--{name}={m.group(1)}: no such config file {path!r} (e.g. configs/lnln.py)"
  return None


def describe_flags_error(e: Exception, argv: Sequence[str], name: str = "config") -> str | None:
  """One line for a failure while parsing the flags and loading the config file, or None."""
  from absl import flags

  text = str(e)
  if isinstance(e, flags.Error):
    if "Error whilst parsing config file" in text:
      # The config file's own error is the last line of the traceback absl quotes.
      last = [line.strip() for line in text.splitlines() if line.strip()][-1]
      return _one_line(f"{text.split(':', 1)[0].removeprefix('flag ')}: {last}")
    return _one_line(text.splitlines()[0])
  if isinstance(e, (AttributeError, KeyError)):
    m = re.search(r"\\?'(\w+)\\?'", text)
    key = m.group(1) if m else text
    flag = next(
      (a.split("=", 1)[0] for a in argv if re.match(rf"^--?(no)?{name}\.(\S+\.)?{key}(=|$)", a)),
      f"--{name}...{key}",
    )
    hint = re.search(r'Did you mean "(\w+)"', text)
    return _one_line(
      f"{flag}: unknown config key {key!r} (not a key of the config file)"
      + (f"; did you mean {hint.group(1)!r}?" if hint else "")
    )
  return None
