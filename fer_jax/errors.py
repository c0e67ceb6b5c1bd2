"""The errors fer_jax's commands end with, and the exit status each gives (main.py).

Exit status: 0 done (also after SIGTERM: training saves a checkpoint, prediction writes every
output for the frames it took, a study stops after the run in progress), 1 the run failed on its own
(`RUN_FAILURES`: a non-finite loss; the last good checkpoint stays), 2 bad input (flags,
config, data, files, a run folder in use: every other error of `EXPECTED`, shown in one line
without a traceback).
"""

from __future__ import annotations

import pathlib


class UsageError(ValueError):
  """A flag combination that cannot work; the message says which flag to set."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or Inf; the message gives the step and what overflowed."""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and the way out."""


class RunLockedError(RuntimeError):
  """Another live process holds the folder's lock; the message names it (exit status 2)."""


class DamagedCheckpointError(RuntimeError):
  """A checkpoint step whose files do not restore; the message names the step and folder."""

  def __init__(self, directory, step: int, cause: BaseException):
    self.step = int(step)
    self.path = pathlib.Path(directory) / str(step)
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    reason = reason if len(reason) <= 240 else reason[:240] + "..."
    super().__init__(f"the checkpoint at step {step} in {self.path} is damaged and does not "
                     f"restore ({type(cause).__name__}: {reason})")


class IncompatibleCheckpointError(ValueError):
  """A whole checkpoint of another architecture (not damage: never skipped)."""


class ManualDirError(FileNotFoundError):
  """The manual dir holds neither FERPlus layout; the message says what was looked for."""


class DamagedDataError(ValueError):
  """A prepared dataset file that does not read back; the message names the file, the split and
  the command that rebuilds it (exit status 2)."""


def need(value, flag: str, mode: str):
  """`value`, or a UsageError saying that --mode=`mode` needs `flag`."""
  if not value:
    raise UsageError(f"--mode={mode} needs {flag}")
  return value


# Errors that name their culprit well enough to be shown without a traceback.
EXPECTED = (ValueError, KeyError, FileNotFoundError, RuntimeError)
RUN_FAILURES = (NonFiniteLossError,)


def exit_status(error: BaseException) -> int:
  """1 for a run that failed on its own (`RUN_FAILURES`), 2 for bad input."""
  return 1 if isinstance(error, RUN_FAILURES) else 2
