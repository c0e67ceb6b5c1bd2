"""The errors fer_jax's commands end with, and the exit status each gives (main.py).

Exit status: 0 done (also after SIGTERM: training saves a checkpoint, prediction writes every
output for the frames it took, a study stops after the run in progress), 1 the run failed on its own
(`RUN_FAILURES`: a non-finite loss; the last good checkpoint stays), 2 bad input (flags,
config, data, files, a run folder in use: every other error of `EXPECTED`, shown in one line
without a traceback).
"""

from __future__ import annotations


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or Inf; the message gives the step and what overflowed."""


# Errors that name their culprit well enough to be shown without a traceback.
EXPECTED = (ValueError, KeyError, FileNotFoundError, RuntimeError)
RUN_FAILURES = (NonFiniteLossError,)


def exit_status(error: BaseException) -> int:
  """1 for a run that failed on its own (`RUN_FAILURES`), 2 for bad input."""
  return 1 if isinstance(error, RUN_FAILURES) else 2
